"""The request log's writer process: where the work runs, what happens when it dies,
and what crosses back. Real processes, a real SQLite file; nothing mocked."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from enum import IntEnum
from pathlib import Path

import orjson
import pytest
from tests.store.conftest import MakeLog
from tests.store.util import (
    abandon_log,
    count_rows,
    entry,
    leave_log_open,
    query,
    stamp_pid,
    wait_until,
)

from turnout.config import config_from_mapping
from turnout.observe.exchange import Exchange
from turnout.observe.observer import Observer
from turnout.snapshot import build_snapshot
from turnout.store import RequestLog
from turnout.store.entry import entry_values
from turnout.store.log_link import Link

BODY = b'{"model": "m", "user": "alice@example.com", "messages": [{"content": "pii"}]}'


def writer(log: RequestLog) -> Link:
    link = log._ship.link
    assert link is not None
    return link


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped (orphans in containers)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- where the work runs ----------------------------------------------------------------


def test_bodies_are_redacted_in_the_writer_process(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    log.submit(entry(1, request_body=BODY, response_body=b'{"x": 1}', redact=stamp_pid))
    assert log.flush()
    row = log.find("req-1")
    assert row is not None
    pid = orjson.loads(row["request_body"])["pid"]
    assert pid == writer(log).proc.pid != os.getpid()
    assert writer(log).proc.name == "turnout-requestlog-writer"


def test_a_hook_named_by_its_import_path(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    log.submit(entry(1, request_body=BODY, redact="tests.store.util:scrub"))
    assert log.flush()
    row = log.find("req-1")
    assert row is not None
    assert orjson.loads(row["request_body"]) == {"model": "m", "kind": "request"}


def test_a_hook_without_an_import_path_keeps_no_bodies(
    make_log: MakeLog, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    log.start()
    hook = lambda kind, body: body  # noqa: E731  # the writer process cannot import this
    with caplog.at_level(logging.WARNING, logger="turnout.store"):
        log.submit(entry(1, request_body=BODY, redact=hook))
        log.submit(entry(2, request_body=BODY, redact="no.such.module:scrub"))
        assert log.flush()
    assert (log.written, log.redaction_failures) == (2, 2)
    assert query(log.path, "SELECT request_body, response_body FROM request_log") == [
        (None, None),
        (None, None),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert any("has no import path" in m for m in messages)
    assert any("cannot load redaction hook no.such.module:scrub" in m for m in messages)


def test_the_observer_ships_the_hook_the_config_names(make_log: MakeLog) -> None:
    snap = build_snapshot(
        config_from_mapping(
            {
                "upstreams": [{"name": "up", "base_url": "http://up/v1"}],
                "routes": [
                    {
                        "name": "chat",
                        "log_bodies": {"sample_rate": 1.0, "redact": "tests.store.util:scrub"},
                        "variants": [{"name": "a", "upstream": "up"}],
                    }
                ],
            }
        )
    )
    log = make_log()
    log.start()
    observer = Observer(log=log, metrics=False)
    x = Exchange("obs-1", time.time(), 1.0, route="chat", key="alice")
    observer.begin(x, "a", "up")
    x.status, x.end, x.request_body = 200, 1.25, BODY
    observer.finish(x, snap)
    assert log.flush()
    row = log.find("obs-1")
    assert row is not None
    assert orjson.loads(row["request_body"]) == {"model": "m", "kind": "request"}
    assert (row["variant"], row["status"], row["latency_ms"]) == ("a", 200, 250.0)
    assert row["key_hash"] == log.hash_key("alice")


def test_an_entry_and_its_wire_form_make_the_same_row(make_log: MakeLog) -> None:
    class Status(IntEnum):
        OK = 200

    log = make_log()
    ts = time.time()
    log.submit(entry(1, ts=ts))
    log.submit(entry_values(entry(2, ts=ts)))
    log.submit(entry(3, ts=ts, status=Status.OK))  # made plain on the way
    log.start()
    assert log.flush()
    rows = query(log.path, "SELECT * FROM request_log ORDER BY id")
    assert [r[2:] for r in rows[1:]] == [rows[0][2:]] * 2
    assert log.lost == 0


# -- counters and flush -----------------------------------------------------------------


def test_counters_come_back_and_add_up(make_log: MakeLog) -> None:
    log = make_log(batch_size=50)
    log.start()
    seen: list[dict[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(log.counters())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for i in range(3000):
        log.submit(entry(i))
    assert log.flush()
    stop.set()
    watcher.join()
    counters = log.counters()
    assert counters["submitted"] == counters["written"] == 3000
    assert counters["pending"] == counters["lost"] == counters["writer_restarts"] == 0
    assert counters["batches"] >= 3000 // 50
    for c in seen:  # never more accounted for than was submitted
        assert c["pending"] >= 0
        assert c["submitted"] == c["written"] + c["lost"] + c["pending"]
    assert count_rows(log.path) == 3000


def test_flush_waits_for_a_writer_that_is_paused(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    assert log.flush()
    pid = writer(log).proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(10):
            log.submit(entry(i))
        assert not log.flush(timeout=0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert log.flush()
    assert log.written == 10


def test_a_full_queue_drops_while_the_writer_is_stuck(make_log: MakeLog) -> None:
    log = make_log(queue_limit=50, batch_size=10)
    log.start()
    assert log.flush()
    pid = writer(log).proc.pid
    assert pid is not None
    big = b'{"pad": "' + b"x" * 16_000 + b'"}'
    os.kill(pid, signal.SIGSTOP)  # the pipe fills, then the queue
    try:
        started = time.perf_counter()
        accepted = sum(log.submit(entry(i, request_body=big)) for i in range(2000))
        elapsed = time.perf_counter() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < 2.0  # no waiting for room
    assert log.dropped == 2000 - accepted > 0
    assert log.flush()
    assert log.written == log.submitted == accepted
    assert count_rows(log.path) == accepted


def test_close_writes_what_is_queued_and_ends_the_writer(make_log: MakeLog) -> None:
    log = make_log(batch_size=100_000, flush_interval=60)  # nothing would commit early
    log.start()
    for i in range(700):
        log.submit(entry(i))
    link = writer(log)
    log.close()
    assert (log.written, log.pending, log.lost) == (700, 0, 0)
    assert count_rows(log.path) == 700
    assert link.proc.exitcode == 0
    assert link.proc not in multiprocessing.active_children()
    assert link.proc.pid is not None and gone(link.proc.pid)
    assert not log.submit(entry(701))


def test_a_group_signal_does_not_cut_the_writer_short(make_log: MakeLog) -> None:
    # SIGINT or SIGTERM to the whole process group (a terminal, a service manager)
    # reaches the writer too; the gateway, which got it as well, closes the log.
    log = make_log()
    log.start()
    link = writer(log)
    assert link.proc.pid is not None
    os.kill(link.proc.pid, signal.SIGTERM)
    os.kill(link.proc.pid, signal.SIGINT)
    for i in range(20):
        log.submit(entry(i))
    assert log.flush()
    log.close()
    assert (log.written, log.counters()["writer_restarts"]) == (20, 0)
    assert link.proc.exitcode == 0


# -- a writer process that dies ---------------------------------------------------------


def test_a_killed_writer_counts_its_entries_lost_and_another_takes_over(
    make_log: MakeLog, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(batch_size=100_000, flush_interval=60)
    log.start()
    first = writer(log)
    for i in range(512):  # two whole frames, held by the writer, not committed
        log.submit(entry(i))
    wait_until(lambda: first.sent == 512)
    assert first.proc.pid is not None
    with caplog.at_level(logging.INFO, logger="turnout.store"):
        os.kill(first.proc.pid, signal.SIGKILL)
        wait_until(lambda: log.counters()["writer_restarts"] == 1)
        assert log.lost == 512 and log.pending == 0
        second = writer(log)
        assert second is not first and second.proc.is_alive()
        assert first.proc.exitcode == -signal.SIGKILL  # reaped
        second_pid = second.proc.pid
        assert second_pid is not None
        os.kill(second_pid, signal.SIGKILL)  # dies again before it ever reported
        wait_until(lambda: log.counters()["writer_restarts"] == 2, 20)
        for i in range(1000, 1010):
            log.submit(entry(i))
        assert log.flush()
    assert (log.written, log.lost, log.pending) == (10, 512, 0)
    assert count_rows(log.path) == 10
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once per outage, not per death
    assert "counted lost" in errors[0].getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_the_writer_keeps_what_it_was_sent_when_the_gateway_dies(tmp_path: Path) -> None:
    path = tmp_path / "orphan.db"
    ctx = multiprocessing.get_context("spawn")
    pids = ctx.SimpleQueue()
    gateway = ctx.Process(target=abandon_log, args=(str(path), 300, pids))
    gateway.start()
    writer_pid = pids.get()
    gateway.join(30)
    assert gateway.exitcode == 0
    wait_until(lambda: gone(writer_pid), 30)  # end of file on its pipe: it ends
    assert count_rows(path) == 300


LEAVE_OPEN = """
import sys
from tests.store.util import leave_log_open
leave_log_open(sys.argv[1], 250)
"""


def test_a_log_left_open_is_closed_at_exit(tmp_path: Path) -> None:
    # In a process multiprocessing started, and in a plain interpreter: either way
    # the exit handler closes the log before it would wait on the writer.
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=leave_log_open, args=(str(tmp_path / "a.db"), 250))
    started = time.monotonic()
    child.start()
    child.join(30)
    assert child.exitcode == 0
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", LEAVE_OPEN, str(tmp_path / "b.db")], cwd=root, timeout=30
    )
    assert done.returncode == 0
    assert time.monotonic() - started < 10  # not the writer's 15 s grace, twice
    assert count_rows(tmp_path / "a.db") == count_rows(tmp_path / "b.db") == 250
