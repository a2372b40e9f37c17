"""Helpers shared by the store tests, and the body of the writer processes."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.store import LogEntry, RequestLog


def entry(i: int, *, ts: float | None = None, **fields: Any) -> LogEntry:
    values: dict[str, Any] = {
        "request_id": f"req-{i}",
        "ts": time.time() if ts is None else ts,
        "route": "chat",
        "variant": "a",
        "upstream": "up",
        "status": 200,
        "error_class": None,
        "latency_ms": 12.5,
        "ttft_ms": 3.0,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.001,
        "key": "user-1",
        "stream": False,
    }
    values.update(fields)
    return LogEntry(**values)


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count_rows(path: Path) -> int:
    return int(query(path, "SELECT count(*) FROM request_log")[0][0])


def write_rows(path: str, prefix: str, n: int, barrier: Any, out: str) -> None:
    """One worker process: open the shared, not yet created database together with
    the other, write ``n`` rows in small batches alongside it, report the counters."""
    log = RequestLog(path, batch_size=50, flush_interval=0.005)
    barrier.wait(timeout=30)
    log.start()  # both at once: creating, migrating, making the key secret
    barrier.wait(timeout=30)
    for i in range(n):
        while not log.submit(entry(i, request_id=f"{prefix}-{i}", key="shared-user")):
            time.sleep(0.001)  # the queue is full: let the writer catch up
        if i % 100 == 0:
            time.sleep(0.002)  # spread the writes so the two processes' transactions mix
    log.close(timeout=60)
    Path(out).write_text(json.dumps(log.counters()))


# -- redaction hooks: module-level, so that the writer process can import them ---------


def scrub(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("messages", "user")} | {"kind": kind}


def stamp_pid(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Says which process redacted the body."""
    return {"pid": os.getpid()}


def abandon_log(path: str, n: int, pids: Any) -> None:
    """A gateway process that dies without closing its log: ``n`` entries are handed
    to the writer process (held there, uncommitted), then this process exits."""
    log = RequestLog(path, batch_size=100_000, flush_interval=60)
    log.start()
    for i in range(n):
        log.submit(entry(i))
    log._seal(0)  # what is still in the buffer goes too
    link = log._ship.link
    assert link is not None
    deadline = time.monotonic() + 30
    while link.sent < n and time.monotonic() < deadline:
        time.sleep(0.005)
    pids.put(link.proc.pid)
    os._exit(0)  # no close, no atexit: as if killed


def leave_log_open(path: str, n: int) -> None:
    """A process that ends without closing its log (its writer must not hold it up)."""
    log = RequestLog(path, batch_size=100_000, flush_interval=60)
    log.start()
    for i in range(n):
        log.submit(entry(i))


def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
