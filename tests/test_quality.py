"""The code's own checks run with the tests: mypy strict, ruff lint and format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["mypy"],
        ["ruff", "check", "src", "tests"],
        ["ruff", "format", "--check", "src", "tests"],
    ],
    ids=["mypy", "ruff-check", "ruff-format"],
)
def test_tool_passes(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
