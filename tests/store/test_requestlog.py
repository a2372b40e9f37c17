"""The request log: batching, dropping when full, retention, key hashing, redaction."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import MakeLog
from tests.store.util import count_rows, entry, query, wait_until

from turnout.store.entry import LogEntry, entry_values

# -- batching and the queue -----------------------------------------------------------


def test_many_submits_are_written_in_few_transactions(make_log: MakeLog) -> None:
    log = make_log(batch_size=500)
    for i in range(2000):
        assert log.submit(entry(i))
    log.start()
    assert log.flush()
    assert (log.written, log.batches, log.lost, log.pending) == (2000, 4, 0, 0)
    assert count_rows(log.path) == 2000


def test_a_running_writer_batches_a_burst(make_log: MakeLog) -> None:
    log = make_log(batch_size=500, flush_interval=0.05)
    log.start()
    for i in range(3000):
        log.submit(entry(i))
    assert log.flush()
    assert log.written == 3000
    assert log.batches <= 30  # not one transaction per row


def test_rows_are_written_without_a_flush(make_log: MakeLog) -> None:
    log = make_log(batch_size=500, flush_interval=0.02)
    log.start()
    log.submit(entry(1))
    wait_until(lambda: log.written == 1)  # the interval, not a full batch, wrote it
    assert count_rows(log.path) == 1


def test_a_full_queue_drops_the_new_entry_at_once(make_log: MakeLog) -> None:
    log = make_log(queue_limit=10)  # never started: nothing drains the queue
    results = []
    started = time.perf_counter()
    for i in range(1000):
        results.append(log.submit(entry(i)))
    elapsed = time.perf_counter() - started
    assert results == [True] * 10 + [False] * 990
    assert (log.submitted, log.dropped, log.pending) == (10, 990, 10)
    assert elapsed < 0.5  # returns immediately: no waiting for room
    assert not log.flush(timeout=0.01)  # no writer: nothing can be flushed
    log.close()  # a log never started writes its queue on close
    assert query(log.path, "SELECT request_id FROM request_log ORDER BY id") == [
        (f"req-{i}",) for i in range(10)
    ]


def test_a_full_queue_takes_entries_again_once_it_drains(make_log: MakeLog) -> None:
    log = make_log(queue_limit=10)
    assert [log.submit(entry(i)) for i in range(11)] == [True] * 10 + [False]
    log.start()  # the writer takes what waits: room again
    wait_until(lambda: log.written == 10)
    assert [log.submit(entry(i)) for i in range(11, 22)] == [True] * 10 + [False]
    assert (log.submitted, log.dropped) == (20, 2)
    assert log.flush()
    assert count_rows(log.path) == 20


def test_close_is_idempotent_and_refuses_later_entries(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    log.submit(entry(1))
    log.close()
    log.close()
    assert log.written == 1
    assert not log.submit(entry(2))
    assert log.dropped == 1
    with pytest.raises(RuntimeError, match="closed"):
        log.start()


async def test_submit_from_the_event_loop_and_read_in_an_executor(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    for i in range(100):
        assert log.submit(entry(i, route="chat" if i % 2 else "embed"))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, log.flush)
    row = await loop.run_in_executor(None, log.find, "req-7")
    assert row is not None
    assert row["route"] == "chat"


# -- failures -------------------------------------------------------------------------


def test_a_failing_batch_is_counted_dropped_and_the_writer_goes_on(make_log: MakeLog) -> None:
    log = make_log(batch_size=10)
    log.start()
    log.flush()
    conn = __import__("sqlite3").connect(log.path)
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON request_log WHEN NEW.route = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    conn.close()
    for i in range(10):  # exactly one batch, with one poisoned row in it
        log.submit(entry(i, route="boom" if i == 5 else "chat"))
    assert log.flush()
    assert (log.write_errors, log.lost, log.written) == (1, 10, 0)
    for i in range(10, 20):
        log.submit(entry(i))
    assert log.flush()
    assert (log.write_errors, log.lost, log.written) == (1, 10, 10)
    assert count_rows(log.path) == 10


def test_a_malformed_entry_costs_only_its_own_row(make_log: MakeLog) -> None:
    log = make_log()
    log.submit(entry(1))
    log.submit(entry(2, status="not a number"))
    log.submit(entry(3, latency_ms=object()))
    log.submit(entry(4))
    log.start()
    assert log.flush()
    assert (log.written, log.lost, log.write_errors) == (2, 2, 0)
    assert query(log.path, "SELECT request_id FROM request_log") == [("req-1",), ("req-4",)]


class Deferred:
    """A ``Loggable``: made an entry only when its batch is sealed."""

    def __init__(self, i: int, fail: bool = False) -> None:
        self.i, self.fail, self.asked = i, fail, 0

    def log_values(self) -> Any:
        self.asked += 1
        if self.fail:
            raise RuntimeError("no entry")
        return entry_values(entry(self.i))


def test_a_loggable_is_made_an_entry_when_sealed_and_a_failing_one_is_lost(
    make_log: MakeLog,
) -> None:
    log = make_log()
    items = [Deferred(1), Deferred(2, fail=True), Deferred(3)]
    for item in items:
        assert log.submit(item)
    assert [d.asked for d in items] == [0, 0, 0]  # not on the request path
    log.submit(entry(4))
    log.start()
    assert log.flush()
    assert (log.written, log.lost) == (3, 1)
    got = query(log.path, "SELECT request_id FROM request_log ORDER BY request_id")
    assert got == [("req-1",), ("req-3",), ("req-4",)]


class Tagged(tuple[Any, ...]):
    """An entry's wire form as a tuple subclass."""


def test_subclasses_of_an_entry_or_its_wire_form_are_written(make_log: MakeLog) -> None:
    # A subclass of LogEntry, or of the wire tuple, is an entry like them: not lost.
    @dataclass(slots=True)
    class MyEntry(LogEntry):
        note: str = ""

    base = entry(1)
    mine = MyEntry(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "request_id": "req-2"}
    )
    log = make_log()
    log.submit(mine)
    log.submit(Tagged(entry_values(entry(3))))
    log.submit(entry(4))
    log.start()
    assert log.flush()
    assert (log.written, log.lost) == (3, 0)
    got = query(log.path, "SELECT request_id FROM request_log ORDER BY request_id")
    assert got == [("req-2",), ("req-3",), ("req-4",)]


# -- reads ----------------------------------------------------------------------------


def test_find_and_recent(make_log: MakeLog) -> None:
    log = make_log()
    base = time.time() - 100
    for i in range(10):
        log.submit(entry(i, ts=base + i, route="chat" if i % 2 else "embed", stream=i == 3))
    log.start()
    log.flush()
    row = log.find("req-3")
    assert row is not None
    assert row["ts"] == base + 3
    assert row["stream"] is True
    assert row["route"] == "chat"
    assert row["request_body"] is None
    assert "key" not in row
    assert len(row["key_hash"]) == 32
    assert log.find("nope") is None
    assert [r["request_id"] for r in log.recent(3)] == ["req-9", "req-8", "req-7"]
    assert [r["request_id"] for r in log.recent(10, route="embed")] == [
        "req-8",
        "req-6",
        "req-4",
        "req-2",
        "req-0",
    ]
    assert log.recent(5, route="none") == []


# -- retention ------------------------------------------------------------------------


def test_retention_by_age_follows_the_injected_clock(make_log: MakeLog) -> None:
    now = [1_700_000_000.0]
    log = make_log(max_age_seconds=100, retention_interval=30, clock=lambda: now[0])
    log.submit(entry(1, ts=now[0] - 200))  # already too old
    log.submit(entry(2, ts=now[0] - 10))
    log.start()
    log.flush()  # the first pass runs right after the first batch
    assert query(log.path, "SELECT request_id FROM request_log") == [("req-2",)]
    assert log.retention_deleted == 1

    now[0] += 20  # req-2 is 30 s old; no pass is due anyway
    log.submit(entry(3, ts=now[0] - 500))
    log.flush()
    assert count_rows(log.path) == 2

    now[0] += 85  # the next pass is due; req-2 is now 115 s old
    log.submit(entry(4, ts=now[0]))
    log.flush()
    assert query(log.path, "SELECT request_id FROM request_log") == [("req-4",)]
    assert log.retention_deleted == 3


def test_retention_by_rows_keeps_the_newest(make_log: MakeLog) -> None:
    log = make_log(max_rows=100)
    base = time.time()
    order = list(range(150))
    random.Random(0).shuffle(order)  # out of ts order: trimming goes by ts, not id
    for j in order:
        log.submit(entry(j, ts=base - 1000 + j))
    log.start()
    log.flush()
    assert count_rows(log.path) == 100
    kept = {r[0] for r in query(log.path, "SELECT request_id FROM request_log")}
    assert kept == {f"req-{j}" for j in range(50, 150)}
    assert log.retention_deleted == 50


def test_retention_deletes_a_backlog_in_chunks(make_log: MakeLog) -> None:
    now = [time.time()]
    log = make_log(max_rows=10, max_age_seconds=1000, clock=lambda: now[0])
    log._retention_chunk = 7
    for i in range(40):
        log.submit(entry(i, ts=now[0] - 2000 if i < 15 else now[0] - i))
    log.start()
    wait_until(lambda: log.retention_deleted == 30)
    assert count_rows(log.path) == 10
    assert log.write_errors == 0


# -- key hashing ----------------------------------------------------------------------


def db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_the_raw_key_is_never_stored(make_log: MakeLog) -> None:
    raw = "alice.secret-user@example.com"
    log = make_log()
    log.start()
    for i in range(50):
        log.submit(entry(i, key=raw))
    log.flush()
    assert raw.encode() not in db_bytes(log.path)  # neither in the db nor the WAL
    log.close()
    assert raw.encode() not in db_bytes(log.path)
    (key_hash,) = {r[0] for r in query(log.path, "SELECT key_hash FROM request_log")}
    assert key_hash == log.hash_key(raw)
    assert key_hash != hashlib.sha256(raw.encode()).hexdigest()[:32]  # keyed, not plain


def test_key_hashes_are_stable_across_instances_on_one_database(
    make_log: MakeLog, tmp_path: Path
) -> None:
    first = make_log()
    first.start()
    first.submit(entry(1, key="bob"))
    first.close()
    second = make_log()  # a restart, or another process
    second.start()
    second.submit(entry(2, key="bob"))
    second.close()
    hashes = query(first.path, "SELECT key_hash FROM request_log ORDER BY id")
    assert hashes[0] == hashes[1]
    assert hashes[0][0] == second.hash_key("bob") == first.hash_key("bob")
    other = make_log(path=tmp_path / "other.db")
    assert other.hash_key("bob") != first.hash_key("bob")  # a new database, a new secret


def test_an_explicit_key_secret_is_used_and_not_stored(make_log: MakeLog) -> None:
    secret = b"s" * 32
    log = make_log(key_secret=secret)
    log.start()
    log.submit(entry(1, key="carol"))
    log.close()
    expected = hmac.new(secret, b"carol", hashlib.sha256).hexdigest()[:32]
    assert query(log.path, "SELECT key_hash FROM request_log") == [(expected,)]
    assert query(log.path, "SELECT count(*) FROM meta") == [(0,)]


def test_no_key_no_hash(make_log: MakeLog) -> None:
    log = make_log()
    log.submit(entry(1, key=None))
    log.close()
    assert query(log.path, "SELECT key_hash FROM request_log") == [(None,)]


# -- bodies and redaction -------------------------------------------------------------


def drop_messages(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in body.items() if k not in ("messages", "choices")}, "kind": kind}


def test_bodies_are_stored_as_text_only_when_sampled(make_log: MakeLog) -> None:
    log = make_log()
    log.submit(entry(1, request_body=b'{"model": "m", "x": "\xc3\xa9"}', response_body=b'{"r":1}'))
    log.submit(entry(2))
    log.close()
    rows = query(log.path, "SELECT request_body, response_body FROM request_log ORDER BY id")
    assert rows == [('{"model": "m", "x": "é"}', '{"r":1}'), (None, None)]


def test_the_redaction_hook_is_applied_to_both_bodies(make_log: MakeLog) -> None:
    log = make_log()
    log.start()
    log.submit(
        entry(
            1,
            request_body=b'{"model": "m", "messages": [{"role": "user", "content": "pii"}]}',
            response_body=b'{"id": "x", "choices": [{"message": {"content": "pii"}}]}',
            redact=drop_messages,
        )
    )
    log.flush()
    row = log.find("req-1")
    assert row is not None
    assert row["request_body"] == '{"model":"m","kind":"request"}'
    assert row["response_body"] == '{"id":"x","kind":"response"}'
    assert log.redaction_failures == 0


def explode(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("the hook has a bug")


def unserialisable(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"x": object()}


@pytest.mark.parametrize(
    ("hook", "request_body"),
    [
        (explode, b'{"messages": "pii"}'),
        (unserialisable, b'{"messages": "pii"}'),
        (drop_messages, b"data: not json, pii"),  # cannot be redacted, so not stored
        (drop_messages, b'["a list", "pii"]'),
    ],
    ids=["raises", "unserialisable", "not-json", "not-an-object"],
)
def test_a_failing_redaction_drops_the_bodies_keeps_the_row(
    make_log: MakeLog, hook: Any, request_body: bytes
) -> None:
    log = make_log()
    log.start()
    log.submit(entry(1, request_body=request_body, response_body=b'{"pii": 1}', redact=hook))
    log.submit(entry(2))
    log.flush()
    assert (log.redaction_failures, log.written, log.write_errors) == (1, 2, 0)
    row = log.find("req-1")
    assert row is not None
    assert (row["request_body"], row["response_body"]) == (None, None)
    assert b"pii" not in db_bytes(log.path)
