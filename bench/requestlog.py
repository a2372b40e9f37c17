"""The request log's costs: on the event loop, and in the writer process.

    python3 bench/requestlog.py            # full run (under a minute), prints a table
    python3 bench/requestlog.py --smoke    # a few seconds, for CI: checks it runs
    python3 bench/requestlog.py --out results.json --dir /path/on/the/real/disk

What is measured:

- Per request, on the loop: ``Observer.finish`` (metrics off) with the log and
  without; the difference is the log's whole cost on the request path: building
  the entry, ``submit``, and sealing a frame every 256 entries (amortised). The
  writer is not started and the queue holds everything, best of several repeats.
  Also ``submit`` alone: with the wire-form tuple the observer builds, with a
  ``LogEntry`` (converted on the way), and when the queue is full (dropped).
- Event-loop lateness: an asyncio task sleeps 1 ms in a loop and records how late
  each wake-up is, so any time something else holds the GIL (or the core) shows.
  Idle; while a backlog of N entries is written (queued first, then the log
  started); and steady: the loop itself finishes requests through the observer
  (20 every millisecond), with the log on, then off.
- Writer throughput, rows/s: the writer up, N entries submitted as fast as the
  caller can, then ``flush``. Three row shapes: bare, with a stickiness key to
  hash, and with 1 KB request and response bodies through a redaction hook (every
  request sampled, the worst case).

The database lives in a temporary directory unless ``--dir`` is given: the figures
depend on the disk (WAL with synchronous=NORMAL fsyncs only at checkpoints). The
loop is asyncio's own; the figures are per core, with the writer process free to
run on another (pin both to one core with taskset to see the shared-core case).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.config import config_from_mapping
from turnout.observe.exchange import Exchange
from turnout.observe.observer import Observer
from turnout.snapshot import Snapshot, build_snapshot
from turnout.store import LogEntry, RequestLog
from turnout.store.entry import entry_values

BODY = json.dumps(
    {
        "model": "gpt-4o",
        "user": "user-12345",
        "messages": [{"role": "user", "content": "x" * 900}],
        "temperature": 0.2,
    }
).encode()
CONFIG = {
    "upstreams": [{"name": "primary", "base_url": "http://primary/v1"}],
    "routes": [
        {
            "name": "chat",
            "variants": [
                {"name": "stable", "upstream": "primary", "weight": 90, "model": "m1"},
                {"name": "canary", "upstream": "primary", "weight": 10, "model": "m1"},
            ],
        }
    ],
    "prices": {"m1": {"input": 1, "output": 2}},
}
BURST = 20  # requests finished per millisecond in the steady phase


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


def make_exchange(i: int) -> Exchange:
    x = Exchange(f"bench-{i:012d}", time.time(), 100.0, route="chat", key=f"user-{i % 5000}")
    x.stream, x.model, x.status = True, "m1", 200
    x.first_chunk, x.end = 100.0456, 100.1234
    x.input_tokens, x.output_tokens, x.attempts = 250, 120, 1
    return x


def finish_all(observer: Observer, exchanges: list[Exchange], snap: Snapshot) -> None:
    finish = observer.finish
    for x in exchanges:
        finish(x, snap)


def best_ns(run: Callable[[], None], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        run()
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def per_request(workdir: Path, n: int, repeats: int, snap: Snapshot) -> dict[str, float]:
    exchanges = [make_exchange(i) for i in range(n)]
    for x in exchanges:
        x.variant, x.upstream = "stable", "primary"
    bare = Observer(metrics=False)
    off = best_ns(lambda: finish_all(bare, exchanges, snap), n, repeats)
    logs: list[RequestLog] = []

    def with_log() -> None:
        log = RequestLog(workdir / f"finish-{len(logs)}.db", queue_limit=n)
        logs.append(log)
        finish_all(Observer(log=log, metrics=False), exchanges, snap)
        assert log.submitted == n

    on = best_ns(with_log, n, repeats)
    logs.clear()  # never started: only for timing
    out = {"finish_log_off_ns": off, "finish_log_on_ns": on, "log_on_loop_ns": on - off}
    entries = [make_entry(i) for i in range(n)]
    values = [entry_values(e) for e in entries]
    for name, items in (("submit_tuple_ns", values), ("submit_entry_ns", entries)):
        log = RequestLog(workdir / f"{name}.db", queue_limit=n)
        out[name] = best_ns(lambda log=log, items=items: submit_all(log, items), n, 1)
        # The queue is full now: every call takes the drop path.
        out["submit_when_full_ns"] = best_ns(lambda log=log: submit_all(log, values), n, 1)
        assert log.dropped == n
    started = time.perf_counter_ns()
    for i in range(n):
        make_entry(i)
    out["build_entry_ns"] = (time.perf_counter_ns() - started) / n
    return out


def submit_all(log: RequestLog, items: list[Any]) -> None:
    submit = log.submit
    for e in items:
        submit(e)


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


def loop_stalls(workdir: Path, n: int, seconds: float, snap: Snapshot) -> dict[str, Any]:
    result: dict[str, Any] = {"idle": _summary(asyncio.run(_lateness(0.5)))}
    log = RequestLog(workdir / "stalls.db", queue_limit=n)
    for i in range(n):
        log.submit(make_entry(i))

    async def backlog() -> None:
        log.start()
        started = time.perf_counter()
        late: list[float] = []
        while log.written < n and time.perf_counter() - started < 120:
            late.extend(await _lateness(0.05))
        result["backlog"] = _summary(late)
        result["backlog_seconds"] = time.perf_counter() - started

    asyncio.run(backlog())
    log.close()
    for name, path in (("steady_log_on", workdir / "steady.db"), ("steady_log_off", None)):
        steady = RequestLog(path, queue_limit=100_000) if path else None
        if steady is not None:
            steady.start()
            steady.flush()  # the writer is up
        observer = Observer(log=steady, metrics=False)
        late = asyncio.run(_steady(observer, snap, seconds))
        result[name] = _summary(late[0])
        result[name]["requests_per_s"] = late[1]
        if steady is not None:
            steady.close()
            assert steady.lost == steady.dropped == 0, steady.counters()
    return result


async def _steady(observer: Observer, snap: Snapshot, seconds: float) -> tuple[list[float], float]:
    done = 0

    async def produce() -> None:
        nonlocal done
        while True:
            for _ in range(BURST):
                x = make_exchange(done)
                x.variant, x.upstream = "stable", "primary"
                observer.finish(x, snap)
                done += 1
            await asyncio.sleep(0.001)

    producer = asyncio.create_task(produce())
    started = time.perf_counter()
    late = await _lateness(seconds)
    rate = done / (time.perf_counter() - started)
    producer.cancel()
    return late, rate


def throughput(workdir: Path, n: int, *, key: bool, bodies: bool) -> float:
    path = workdir / f"tput-{key}-{bodies}.db"
    log = RequestLog(path, queue_limit=n)
    log.start()
    log.submit(make_entry(-1))
    assert log.flush(timeout=60)  # the writer is up
    entries = [make_entry(i, key=key, bodies=bodies) for i in range(n)]
    started = time.perf_counter()
    for e in entries:
        log.submit(e)
    assert log.flush(timeout=600)
    elapsed = time.perf_counter() - started
    log.close()
    assert log.written == n + 1 and log.write_errors == 0, log.counters()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM request_log").fetchone()[0] == n + 1
    conn.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds in all")
    ap.add_argument("--dir", type=Path, help="where to put the databases (default: a temp dir)")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    n_submit, repeats, n_rows, steady_s = (
        (20_000, 2, 5_000, 0.3) if args.smoke else (200_000, 5, 200_000, 3.0)
    )
    snap = build_snapshot(config_from_mapping(CONFIG))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        results: dict[str, Any] = per_request(workdir, n_submit, repeats, snap)
        results["stalls"] = loop_stalls(workdir, n_rows, steady_s, snap)
        results["rows_per_s_bare"] = throughput(workdir, n_rows, key=False, bodies=False)
        results["rows_per_s_key"] = throughput(workdir, n_rows, key=True, bodies=False)
        results["rows_per_s_key_bodies_1kb"] = throughput(
            workdir, max(n_rows // 4, 1000), key=True, bodies=True
        )

    r = results
    print(f"Observer.finish, log off           {r['finish_log_off_ns']:8.0f} ns/request")
    print(f"Observer.finish, log on            {r['finish_log_on_ns']:8.0f} ns/request")
    print(f"  the log's share on the loop      {r['log_on_loop_ns']:8.0f} ns/request")
    print(f"submit(wire-form tuple)            {r['submit_tuple_ns']:8.0f} ns/op")
    print(f"submit(LogEntry)                   {r['submit_entry_ns']:8.0f} ns/op")
    print(f"submit() when full (dropped)       {r['submit_when_full_ns']:8.0f} ns/op")
    print(f"building a LogEntry (caller)       {r['build_entry_ns']:8.0f} ns/op")
    for phase in ("idle", "backlog", "steady_log_on", "steady_log_off"):
        s = r["stalls"][phase]
        rate = f"  ({s['requests_per_s']:,.0f} req/s)" if "requests_per_s" in s else ""
        print(
            f"loop lateness, {phase:15}     p50 {s['p50_ms']:.3f} ms"
            f"  p99 {s['p99_ms']:.3f} ms  max {s['max_ms']:.3f} ms{rate}"
        )
    print(f"writer, bare rows                  {r['rows_per_s_bare']:8.0f} rows/s")
    print(f"writer, + key hash                 {r['rows_per_s_key']:8.0f} rows/s")
    print(f"writer, + 2x1 KB redacted          {r['rows_per_s_key_bodies_1kb']:8.0f} rows/s")
    if args.out:
        meta = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
        meta |= {"machine": platform.machine(), "smoke": args.smoke}
        args.out.write_text(json.dumps({**meta, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
