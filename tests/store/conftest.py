"""Fixtures shared by the request log tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from turnout.store import RequestLog

MakeLog = Callable[..., RequestLog]


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[MakeLog]:
    """RequestLogs on one file in tmp_path (unless ``path=``), closed after the test."""
    logs: list[RequestLog] = []

    def make(**kwargs: Any) -> RequestLog:
        kwargs.setdefault("flush_interval", 0.01)
        log = RequestLog(kwargs.pop("path", tmp_path / "log.db"), **kwargs)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()
