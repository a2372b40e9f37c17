"""Every benchmark in bench/ still runs (smoke mode: seconds, no timing claims)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize(
    "script",
    [
        "micro.py",
        "stats_micro.py",
        "rollback.py",
        "requestlog.py",
        "observe_memory.py",
        "propagation.py",
        "shadow.py",
        "upstream_client.py",
    ],
)
def test_bench_runs_in_smoke_mode(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip()


def test_memory_bench_reports_growth() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "observe_memory.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    assert set(result["rss_mb_at"]) == {"2000", "20000"}
