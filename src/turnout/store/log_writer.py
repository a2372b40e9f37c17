"""The request log's writer process: everything that costs, away from the event loop.

A gateway process queues entries and ships them here in frames (``requestlog``);
this process, started with the ``spawn`` context, does all the row work: key
hashing, body redaction (the hooks are imported here, by path), ``to_row``, the
SQLite inserts and retention. It runs in its own interpreter, so its work never
holds the gateway's GIL. On another core it costs the event loop nothing; on the
same core (a pinned gateway: the child inherits the affinity) it runs niced, in
slices of ~30 µs with a ``sched_yield`` after each, so that the loop waits for it
about that long at most, commits and checkpoints aside (see the constants).

The wire, one pipe each way:

- gateway to writer: frames of ``HEADER`` (payload length, flags, the gateway's
  clock) then a ``marshal``-ed list of ``EntryValues``. ``marshal`` because the
  entries are tuples of plain values, which it serialises in C faster than pickle,
  and both ends are the same interpreter. ``WRITE`` asks for what is held to be
  committed once the pipe is drained (the gateway sends it every flush interval
  and on ``flush``); ``STOP`` asks for everything to be committed, then exit.
- writer to gateway: after every change, this process's counters (absolute, so a
  lost message loses nothing) and any log messages, for the gateway to log: a
  spawned process has none of its logging configuration.

Rows are committed ``batch_size`` at a time as they arrive, and what is left when
a ``WRITE`` comes and nothing more is waiting. Retention runs between commits,
every ``retention_interval`` seconds of the gateway's clock (the frames carry it,
so one injected clock drives both), a chunk of rows per transaction.

End of life: ``STOP``, or end of file on the pipe (the gateway is gone): what was
received is committed, then the process exits. SIGINT and SIGTERM, which a terminal
or a service manager sends to the whole process group, do not kill it at once: the
gateway, which got them too, is about to send ``STOP``; a grace alarm ends it
should that never come.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import select
import signal
import sqlite3
import struct
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import monotonic_ns
from types import FrameType
from typing import Any

from turnout.store.entry import (
    WIDTH,
    EntryValues,
    KeyHasher,
    Redactor,
    load_redactor,
    multi_insert,
    to_row,
)
from turnout.store.sqlite import connect, rollback

__all__ = ["FLAG_STOP", "FLAG_WRITE", "HEADER", "Writer", "WriterSettings", "serve"]

HEADER = struct.Struct("<IBd")  # payload bytes, flags, the gateway's clock
FLAG_WRITE = 1
FLAG_STOP = 2
# Counters, in the order they cross: written, lost, batches, write_errors,
# redaction_failures, retention_deleted.
COUNTERS = 6
# On a core shared with the gateway (a pinned deployment, the stack benchmark), the
# kernel may let this process run for milliseconds before it preempts it for the
# event loop, whatever its niceness: a CPU hog in 1.5 ms bursts put p99 loop
# lateness at ~3.6 ms; yielding every 0.1 ms of work, at 0.18 ms. So the work is
# cut into slices, each followed by sched_yield (~1 µs when no one waits): between
# rows in Python, and inside SQL statements through SQLite's progress handler.
# The slice's length moves the gateway's throughput by more than the writer's CPU
# does (why, not pinned down). Two gateways sharing a core, all on over all off
# (bench/stack/paired.py, medians of 7 rounds, JSON / SSE): 1 ms slices 0.82 / 0.83;
# 0.1 ms 0.90 / 0.91; 30 µs 0.92 / 0.92 (two runs); 10 µs 0.91 / 0.93.
SLICE_NS = 30_000
PROGRESS_STEPS = 1_000  # SQLite VM instructions between looks at the clock
# SQLite allows 32,766 bound values per statement; 17 columns x 500 rows stays well under.
ROWS_PER_STATEMENT = 500
# A commit, and the WAL checkpoint it may run, are stretches of CPU no handler
# interrupts: ~3.6 µs a page checkpointed. At SQLite's default of 1,000 pages, a
# 4-9 ms stall every few commits; at 64, ~1 ms a commit of 256 rows (a million-row
# table), for about the same CPU per row. Transactions are kept small for the same
# reason (``batch_size``).
CHECKPOINT_PAGES = 64
GRACE_SECONDS = 15  # after SIGINT/SIGTERM, at most this long to be told to stop
# Below the gateway: when the two share a core, the event loop gets the larger share
# of it. Under overload the writer falls behind and the gateway drops rows: the policy.
NICENESS = 10
_READ_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class WriterSettings:
    path: str
    key_secret: bytes
    batch_size: int
    max_age_seconds: float
    max_rows: int
    retention_interval: float
    retention_chunk: int


class Writer:
    """Entries in, rows committed; counters and messages out. Single-threaded."""

    def __init__(self, settings: WriterSettings) -> None:
        self.settings = settings
        self.conn = connect(settings.path)
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        self.conn.set_progress_handler(self._progress, PROGRESS_STEPS)
        self.hasher = KeyHasher(settings.key_secret)
        # Rows converted and not yet committed, as the flat list of values their
        # INSERT binds: extended row by row, sliced by statement, never re-flattened.
        self.ready: list[Any] = []
        self.written = self.lost = self.batches = self.write_errors = 0
        self.redaction_failures = self.retention_deleted = 0
        self.messages: list[tuple[int, str]] = []  # for the gateway to log
        self.retention_pending = False
        self._next_retention = float("-inf")
        self._redactors: dict[str, Redactor | Exception] = {}
        self._failing = False
        self._slice_end = 0  # monotonic_ns: when to yield next
        self._inserts: dict[int, str] = {}

    def counters(self) -> tuple[int, ...]:
        return (
            self.written,
            self.lost,
            self.batches,
            self.write_errors,
            self.redaction_failures,
            self.retention_deleted,
        )

    def add(self, entries: list[EntryValues]) -> None:
        """Convert ``entries`` to rows, committing every full batch."""
        hasher, redactor, ready = self.hasher, self._redactor, self.ready
        size = self.settings.batch_size * WIDTH
        for values in entries:
            try:
                row, redaction_failed = to_row(values, hasher, redactor)
            except Exception:  # a malformed entry costs its own row, not the batch
                self.lost += 1
                continue
            if redaction_failed:
                self.redaction_failures += 1
            ready.extend(row)
            if monotonic_ns() >= self._slice_end:
                os.sched_yield()
                self._slice_end = monotonic_ns() + SLICE_NS
            if len(ready) >= size:
                self._commit(ready[:size])
                del ready[:size]

    def write_pending(self) -> None:
        if self.ready:
            values, self.ready = self.ready, []
            self._commit(values)

    def tidy(self, now: float) -> None:
        """One retention step, if one is due at ``now`` or a pass is under way."""
        if now >= self._next_retention:
            self.retention_pending = True
            self._next_retention = now + self.settings.retention_interval
            self._excess = None
        if self.retention_pending:
            self.retention_pending = self._retention_step(now)
            self._yield()

    def close(self) -> None:
        self.conn.close()

    def _yield(self) -> None:
        os.sched_yield()
        self._slice_end = monotonic_ns() + SLICE_NS

    def _progress(self) -> int:
        """SQLite's progress handler: a long statement yields like a slice of rows."""
        if monotonic_ns() >= self._slice_end:
            self._yield()
        return 0  # go on

    def _redactor(self, spec: str) -> Redactor:
        """The hook at ``spec``, imported once; one that fails to import fails every
        entry that names it (their bodies are not stored) and is reported once."""
        hook = self._redactors.get(spec)
        if hook is None:
            try:
                hook = load_redactor(spec)
            except Exception as exc:
                hook = exc
                self.messages.append((logging.ERROR, f"cannot load redaction hook {spec}: {exc}"))
            self._redactors[spec] = hook
        if isinstance(hook, Exception):
            raise hook
        return hook

    def _commit(self, values: list[Any]) -> None:
        """Insert the rows whose values (``WIDTH`` each) are ``values``, in one
        transaction."""
        conn = self.conn
        rows = len(values) // WIDTH
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, rows, ROWS_PER_STATEMENT):
                    n = min(ROWS_PER_STATEMENT, rows - start)
                    sql = self._inserts.get(n)
                    if sql is None:
                        sql = self._inserts[n] = multi_insert(n)
                    conn.execute(sql, values[start * WIDTH : (start + n) * WIDTH])
                self._slice_end = monotonic_ns() + SLICE_NS
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except Exception:
            self.lost += rows
            self._failed(f"writing {rows} request log rows")
            return
        self.written += rows
        self.batches += 1
        if self._failing:
            self._failing = False
            self.messages.append((logging.INFO, "request log writes succeed again"))

    def _retention_step(self, now: float) -> bool:
        """Delete up to one chunk of expired rows, then up to one chunk of rows over
        ``max_rows``; True if more may remain. Each step is its own transaction.
        Rows are counted once a pass, not per step: ``count(*)`` reads the whole
        table (~5 ms at a million rows)."""
        conn, chunk, settings = self.conn, self.settings.retention_chunk, self.settings
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                expired = conn.execute(
                    "DELETE FROM request_log WHERE id IN"
                    " (SELECT id FROM request_log WHERE ts < ? LIMIT ?)",
                    (now - settings.max_age_seconds, chunk),
                ).rowcount
                excess_deleted = 0
                if expired < chunk:
                    over = self._excess
                    if over is None:
                        (count,) = conn.execute("SELECT count(*) FROM request_log").fetchone()
                        over = self._excess = count - settings.max_rows
                    excess = min(over, chunk)
                    if excess > 0:
                        excess_deleted = conn.execute(
                            "DELETE FROM request_log WHERE id IN"
                            " (SELECT id FROM request_log ORDER BY ts, id LIMIT ?)",
                            (excess,),
                        ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except Exception:
            self._failed("request log retention")
            return False
        self.retention_deleted += expired + excess_deleted
        if self._excess is not None:
            self._excess -= excess_deleted
        return expired >= chunk or excess_deleted >= chunk

    def _failed(self, what: str) -> None:
        self.write_errors += 1
        # Reported once per run of failures: a full disk must not also flood the log.
        if not self._failing:
            self._failing = True
            text = f"{what} failed; counting failures until a write succeeds\n"
            self.messages.append((logging.ERROR, text + traceback.format_exc()))


class FrameReader:
    """Whole frames off a blocking pipe, with a way to ask whether more are waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def read(self, block: bool) -> list[tuple[int, float, bytes]] | None:
        """Every whole frame at hand, reading once or (``block``) until there is one;
        None at end of file with nothing left."""
        frames = self._parse()
        while not frames:
            if self.eof:
                return None
            if not block and not self._readable():
                return frames
            data = os.read(self.fd, _READ_BYTES)
            if not data:
                self.eof = True  # a partial frame left in the buffer is dropped
                continue
            self.buf += data
            frames = self._parse()
            if not block:
                break
        return frames

    def waiting(self) -> bool:
        size = HEADER.size
        buf = self.buf
        if len(buf) >= size and len(buf) >= size + HEADER.unpack_from(buf)[0]:
            return True
        return not self.eof and self._readable()

    def _readable(self) -> bool:
        return bool(select.select([self.fd], [], [], 0)[0])

    def _parse(self) -> list[tuple[int, float, bytes]]:
        buf, size, at = self.buf, HEADER.size, 0
        frames = []
        while len(buf) - at >= size:
            n, flags, now = HEADER.unpack_from(buf, at)
            if len(buf) - at - size < n:
                break
            frames.append((flags, now, bytes(buf[at + size : at + size + n])))
            at += size + n
        del buf[:at]
        return frames


def serve(settings: WriterSettings, data: Connection, acks: Connection) -> None:
    """The writer process's main: frames in, rows written, counters back."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _grace)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # see spawn
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    # Most rows bind several NULLs (no error, no bodies, no TTFT on a whole answer).
    # sqlite3 binds None only after a failed adaptation (protocol and attribute look-
    # ups, ~0.35 µs a value); an adapter that returns None for None makes it a dict
    # hit: ~0.8 µs a row less, in a process that does nothing else (bench/requestlog.py).
    # The adapter is a C function, an empty dict's ``get`` (None is never a key in it),
    # so that no Python frame is made for each NULL: another ~2% of this process's
    # instructions (callgrind).
    sqlite3.register_adapter(type(None), _NULLS.get)
    writer = Writer(settings)
    reader = FrameReader(data.fileno())
    told = writer.counters()
    write_due = stopping = False
    now: float | None = None
    try:
        while True:
            frames = reader.read(block=not (write_due or writer.retention_pending))
            if frames is None:
                break  # the gateway is gone: keep what was received
            for flags, at, payload in frames:
                if payload:
                    writer.add(marshal.loads(payload))
                now = at
                write_due = write_due or bool(flags & (FLAG_WRITE | FLAG_STOP))
                stopping = stopping or bool(flags & FLAG_STOP)
            if not reader.waiting():
                if write_due:
                    writer.write_pending()
                    write_due = False
                if stopping:
                    break
                if now is not None:
                    writer.tidy(now)
            try:
                told = _report(writer, acks, told)
            except OSError:
                break  # the gateway is gone: keep what was received
    finally:
        writer.write_pending()
        writer.close()
        with contextlib.suppress(OSError):  # the gateway is gone: it cannot hear
            _report(writer, acks, None)


def _report(writer: Writer, acks: Connection, told: tuple[int, ...] | None) -> tuple[int, ...]:
    counters = writer.counters()
    if counters != told or writer.messages:
        acks.send_bytes(marshal.dumps((counters, writer.messages)))
        writer.messages = []
    return counters


_NULLS: dict[object, None] = {}  # stays empty: its get(None) is None (see serve)


def _grace(signum: int, frame: FrameType | None) -> None:
    """Outlive a process-group signal until the gateway says stop, within limits."""
    left = signal.alarm(GRACE_SECONDS)
    if left:
        signal.alarm(left)  # already counting down: do not extend
