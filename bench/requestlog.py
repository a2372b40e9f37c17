"""The request log's two costs: ``submit()`` on the event loop, and the writer's pace.

    python3 bench/requestlog.py            # full run (about a minute), prints a table
    python3 bench/requestlog.py --smoke    # a few seconds, for CI: checks it runs
    python3 bench/requestlog.py --out results.json --dir /path/on/the/real/disk

What is measured:

- ``submit`` ns/op: the call the request path makes, with entries built beforehand
  (building a ``LogEntry`` is the caller's cost and is measured separately). Best of
  several repeats, writer not running, so it is the cost of the call itself. Also the
  path taken when the queue is full (the entry is dropped).
- Event-loop stalls while the writer drains a backlog: an asyncio task sleeps 1 ms in a
  loop and records how late each wake-up is, once with the writer idle and once while
  it writes, so any time the writer thread holds the GIL shows up as lateness.
- Writer throughput, rows/s: a backlog is queued, the writer started, and the time to
  ``flush`` taken. Three row shapes: bare, with a stickiness key to hash, and with
  1 KB request and response bodies through a redaction hook (every request sampled,
  the worst case).

The database lives in a temporary directory unless ``--dir`` is given: the figures
depend on the disk (WAL with synchronous=NORMAL fsyncs only at checkpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from turnout.store import LogEntry, RequestLog

BODY = json.dumps(
    {
        "model": "gpt-4o",
        "user": "user-12345",
        "messages": [{"role": "user", "content": "x" * 900}],
        "temperature": 0.2,
    }
).encode()


def redact(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    body.pop("user", None)
    return body


def make_entry(i: int, *, key: bool = True, bodies: bool = False) -> LogEntry:
    return LogEntry(
        request_id=f"bench-{i:012d}",
        ts=time.time(),
        route="chat",
        variant="canary" if i % 10 == 0 else "stable",
        upstream="primary",
        status=200,
        error_class=None,
        latency_ms=123.4,
        ttft_ms=45.6,
        input_tokens=250,
        output_tokens=120,
        cost_usd=0.0012,
        key=f"user-{i % 5000}" if key else None,
        stream=True,
        request_body=BODY if bodies else None,
        response_body=BODY if bodies else None,
        redact=redact if bodies else None,
    )


def submit_ns(workdir: Path, n: int, repeats: int) -> dict[str, float]:
    entries = [make_entry(i) for i in range(n)]
    best = best_full = float("inf")
    for r in range(repeats):
        log = RequestLog(workdir / f"submit-{r}.db", queue_limit=n)
        submit = log.submit
        started = time.perf_counter_ns()
        for e in entries:
            submit(e)
        best = min(best, (time.perf_counter_ns() - started) / n)
        assert log.submitted == n
        started = time.perf_counter_ns()
        for e in entries:  # the queue is full now: every call takes the drop path
            submit(e)
        best_full = min(best_full, (time.perf_counter_ns() - started) / n)
        assert log.dropped == n
    started = time.perf_counter_ns()
    for i in range(n):
        make_entry(i)
    build = (time.perf_counter_ns() - started) / n
    return {"submit_ns": best, "submit_when_full_ns": best_full, "build_entry_ns": build}


async def _lateness(seconds: float) -> list[float]:
    late: list[float] = []
    deadline = time.perf_counter() + seconds
    while (now := time.perf_counter()) < deadline:
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - now - 0.001) * 1e3)
    return late


def _summary(late: list[float]) -> dict[str, float]:
    late.sort()
    return {
        "p50_ms": statistics.median(late),
        "p99_ms": late[int(0.99 * (len(late) - 1))],
        "max_ms": late[-1],
    }


def loop_stalls(workdir: Path, n: int) -> dict[str, Any]:
    idle = _summary(asyncio.run(_lateness(0.5)))
    log = RequestLog(workdir / "stalls.db", queue_limit=n)
    for i in range(n):
        log.submit(make_entry(i))
    result: dict[str, Any] = {}

    async def measure() -> None:
        log.start()
        started = time.perf_counter()
        late: list[float] = []
        while log.written < n and time.perf_counter() - started < 120:
            late.extend(await _lateness(0.05))
        result["busy"] = _summary(late)
        result["busy_seconds"] = time.perf_counter() - started

    asyncio.run(measure())
    log.close()
    return {"idle": idle, **result}


def throughput(workdir: Path, n: int, *, key: bool, bodies: bool) -> float:
    path = workdir / f"tput-{key}-{bodies}.db"
    log = RequestLog(path, queue_limit=n)
    for i in range(n):
        log.submit(make_entry(i, key=key, bodies=bodies))
    started = time.perf_counter()
    log.start()
    assert log.flush(timeout=600)
    elapsed = time.perf_counter() - started
    log.close()
    assert log.written == n and log.write_errors == 0, log.counters()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM request_log").fetchone()[0] == n
    conn.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds in all")
    ap.add_argument("--dir", type=Path, help="where to put the databases (default: a temp dir)")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    n_submit, repeats, n_rows = (20_000, 2, 5_000) if args.smoke else (200_000, 5, 200_000)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        results: dict[str, Any] = submit_ns(workdir, n_submit, repeats)
        results["stalls"] = loop_stalls(workdir, n_rows)
        results["rows_per_s_bare"] = throughput(workdir, n_rows, key=False, bodies=False)
        results["rows_per_s_key"] = throughput(workdir, n_rows, key=True, bodies=False)
        results["rows_per_s_key_bodies_1kb"] = throughput(
            workdir, max(n_rows // 4, 1000), key=True, bodies=True
        )

    print(f"submit()                      {results['submit_ns']:8.0f} ns/op")
    print(f"submit() when full (dropped)  {results['submit_when_full_ns']:8.0f} ns/op")
    print(f"building a LogEntry (caller)  {results['build_entry_ns']:8.0f} ns/op")
    for phase in ("idle", "busy"):
        s = results["stalls"][phase]
        print(
            f"loop lateness, writer {phase:5}  p50 {s['p50_ms']:.3f} ms"
            f"  p99 {s['p99_ms']:.3f} ms  max {s['max_ms']:.3f} ms"
        )
    print(f"writer, bare rows             {results['rows_per_s_bare']:8.0f} rows/s")
    print(f"writer, + key hash            {results['rows_per_s_key']:8.0f} rows/s")
    print(f"writer, + 2x1 KB redacted     {results['rows_per_s_key_bodies_1kb']:8.0f} rows/s")
    if args.out:
        meta = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
        meta |= {"machine": platform.machine(), "smoke": args.smoke}
        args.out.write_text(json.dumps({**meta, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
