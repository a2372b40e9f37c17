"""The request log: one row per proxied request, written by another process.

``submit`` runs on the event loop for every request, so it only appends the entry,
as a plain tuple, to a list (a length check, an append, a counter): under overload
the *new* entry is dropped and counted, and the gateway never waits. Every
``CHUNK`` entries the list is sealed, on the spot, into one ``marshal``-ed frame
(~0.12 µs an entry, in C) and put on a queue: bytes, which the cyclic GC does not
walk, unlike queued objects. In all, the log costs the request path ~0.57 µs; it
was ~2 µs, building a ``LogEntry`` and collecting queued ones (bench/requestlog.py),
before the GIL handoffs to a writer thread.

Everything that costs, key hashing, redaction, making rows, SQLite and retention,
happens in a writer process (``log_writer``, started with ``spawn``: a process
running an event loop is never forked). It used to be a thread here, and a thread
holds the GIL the loop needs: on a busy core the loop waited for it (p99 lateness
~1 ms while it wrote; bench/requestlog.py). What is left in this process is two
threads (``log_link.Shipper``) that hold the GIL a few microseconds at a time: one
writes the frames into the writer's pipe, one reads its counters back and restarts
it should it die (counting what it had not written as lost). The writer commits
``batch_size`` rows per transaction, and what it holds every ``flush_interval``.

One writer process per ``RequestLog``, so per gateway worker, as the writer thread
was: nothing to share between workers, no new single point of failure, and SQLite
serialises the writers' transactions on the one file as before.

Counters: ``submitted == written + lost + pending``, ``pending`` being everything
accepted and not yet written or lost, here, in the pipe or in the writer. ``flush``
waits for that to cover what was submitted before it; frames keep their order
(sealing is under a lock, one sender), so a count is enough.

Threads: ``submit`` from one thread at a time (the event loop, or any, without
one); ``flush``, ``close``, ``find``, ``recent`` and ``hash_key`` block and belong
in an executor or at shutdown.
"""

from __future__ import annotations

import logging
import marshal
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from multiprocessing.util import Finalize
from os import PathLike, fspath
from typing import Any

from turnout.store.entry import (
    COLUMNS,
    EntryValues,
    KeyHasher,
    LogEntry,
    Loggable,
    entry_values,
)
from turnout.store.log_link import Frame, Shipper, load_secret, plain
from turnout.store.log_writer import FLAG_WRITE, Writer, WriterSettings
from turnout.store.sqlite import connect

__all__ = ["LogEntry", "RequestLog"]

log = logging.getLogger("turnout.store")


def _values(item: EntryValues | Loggable) -> EntryValues | None:
    """``item`` as an entry of plain values; None if it cannot be one."""
    try:
        values = item if isinstance(item, tuple) else item.log_values()
    except Exception:
        return None
    return plain(values)


CHUNK = 256  # entries per frame: marshal holds the loop ~30 µs per seal
_RETENTION_CHUNK = 500  # rows deleted per transaction: ~0.5 ms of the writer's CPU
_OPEN: set[RequestLog] = set()


class RequestLog:
    """A bounded queue in front of a writer process; see the module doc."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        queue_limit: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.1,
        max_age_seconds: float = 7 * 86400,
        max_rows: int = 1_000_000,
        key_secret: bytes | None = None,
        retention_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_limit < 1 or batch_size < 1 or max_rows < 0:
            raise ValueError("queue_limit and batch_size must be >= 1, max_rows >= 0")
        if flush_interval <= 0 or max_age_seconds <= 0 or retention_interval < 0:
            raise ValueError("flush_interval and max_age_seconds must be > 0")
        self.path = path
        self._buf: list[EntryValues | Loggable] = []
        self._queue_limit = queue_limit
        self._chunk = min(batch_size, CHUNK)
        self._batch_size = batch_size
        self._max_age = max_age_seconds
        self._max_rows = max_rows
        self._key_secret = key_secret
        self._retention_interval = retention_interval
        self._retention_chunk = _RETENTION_CHUNK
        self._clock = clock
        self._out: queue.SimpleQueue[Frame] = queue.SimpleQueue()
        self._seal_lock = threading.Lock()
        self._ship = Shipper(
            self._out, self._buf, self._seal, clock, flush_interval, retention_interval
        )
        # Written by the submitting thread only.
        self.submitted = 0
        self.dropped = 0
        self._unsealable = 0  # by the sealers, under the seal lock
        self._closed = False
        self._room = 0  # entries submit may queue before it counts again (_make_room)
        self._hasher: KeyHasher | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    # -- the request path ---------------------------------------------------------

    def submit(self, entry: LogEntry | EntryValues | Loggable) -> bool:
        """Queue ``entry`` (a ``LogEntry``, its wire form, cheaper to build, or a
        ``Loggable``, made an entry when its batch is sealed) for writing; False
        (counted in ``dropped``) when the queue is full or the log closed. Never
        blocks, never does I/O."""
        # _closed on every entry: a close from another thread between reading and
        # writing _room must not leave room that skips it.
        if self._closed or (self._room <= 0 and not self._make_room()):
            self.dropped += 1
            return False
        self._room -= 1
        buf = self._buf
        buf.append(entry_values(entry) if isinstance(entry, LogEntry) else entry)
        self.submitted += 1
        if len(buf) >= self._chunk:
            self._seal(0)
        return True

    def _make_room(self) -> bool:
        """Count the room left in the queue. Only this thread adds to the queue, and
        others only take from it, so the room counted stays an upper bound of what
        submit may add (it is counted again when used up, finding what was taken)."""
        queued = self.submitted - self._ship.shipped - self._unsealable
        self._room = self._queue_limit - queued
        return self._room > 0

    def _seal(self, flags: int) -> None:
        """What is waiting, as one frame on the queue. Under a lock, so frames keep
        their order; the submitting thread's appends need none (they land after
        the slice taken here)."""
        with self._seal_lock:
            buf = self._buf
            n = len(buf)
            items: list[Any] = buf[:n]  # tuples or Loggables (see below)
            del buf[:n]
            payload = b""
            if n:
                try:
                    # type(), not isinstance(): cheaper for the usual Loggable; a
                    # subclass of tuple goes the slow way below, made plain.
                    entries = [e if type(e) is tuple else e.log_values() for e in items]
                    payload = marshal.dumps(entries)
                except Exception:  # a field of an unexpected type: sort them out one by one
                    entries = [e for e in map(_values, items) if e is not None]
                    self._lost(n - len(entries))
                    self._unsealable += n - len(entries)
                    n = len(entries)
                    payload = marshal.dumps(entries)
            self._out.put((n, payload, flags))

    def _lost(self, n: int) -> None:
        with self._ship.state:
            self._ship.lost_here += n
            self._ship.state.notify_all()

    # -- counters -------------------------------------------------------------------

    @property
    def written(self) -> int:
        return self._ship.totals[0]

    @property
    def lost(self) -> int:
        """Accepted but never written: failed batches, malformed entries, entries a
        writer process took with it when it died."""
        return self._ship.totals[1] + self._ship.lost_here

    @property
    def batches(self) -> int:
        return self._ship.totals[2]  # committed write transactions

    @property
    def write_errors(self) -> int:
        return self._ship.totals[3]  # failed transactions (batches and retention steps)

    @property
    def redaction_failures(self) -> int:
        return self._ship.totals[4]

    @property
    def retention_deleted(self) -> int:
        return self._ship.totals[5]

    @property
    def pending(self) -> int:
        accounted = self.written + self.lost  # first: then no more than submitted
        return self.submitted - accounted

    def counters(self) -> dict[str, int]:
        # Read in this order, so that another thread's reading never sees more
        # accounted for than submitted (each count only grows).
        written, lost, batches, write_errors, redaction_failures, deleted = self._ship.totals
        lost += self._ship.lost_here
        submitted = self.submitted
        return {
            "submitted": submitted,
            "written": written,
            "dropped": self.dropped,
            "lost": lost,
            "pending": submitted - written - lost,
            "batches": batches,
            "write_errors": write_errors,
            "redaction_failures": redaction_failures,
            "retention_deleted": deleted,
            "writer_restarts": self._ship.restarts,
        }

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Open the database (creating and migrating it), load the key secret and
        start the writer process. Blocking; errors such as a bad path raise here."""
        if self._closed:
            raise RuntimeError("this RequestLog is closed")
        if self._ship.started:
            return
        self._ship.start(self._writer_settings())
        _OPEN.add(self)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every entry submitted before the call is handled (written or
        counted lost); False if that did not happen within ``timeout``."""
        target = self.submitted
        if self.written + self.lost >= target:
            return True
        if not self._ship.started or self._closed:
            return False
        self._seal(FLAG_WRITE)
        with self._ship.state:
            return self._ship.state.wait_for(lambda: self.written + self.lost >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer process, close connections.
        Idempotent. Entries submitted afterwards are refused. A log never started
        writes its queue here, in this process."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        if self._ship.started:
            self._ship.stop(time.monotonic() + timeout)
            # What is still unaccounted for never reached a writer, or was refused on
            # the way (a submit racing with close): it is lost.
            self._lost(self.submitted - self.written - self.lost)
        else:
            self._write_here()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _writer_settings(self) -> WriterSettings:
        secret = load_secret(self.path, self._key_secret)
        if self._hasher is None:
            self._hasher = KeyHasher(secret)
        return WriterSettings(
            path=fspath(self.path),
            key_secret=secret,
            batch_size=self._batch_size,
            max_age_seconds=self._max_age,
            max_rows=self._max_rows,
            retention_interval=self._retention_interval,
            retention_chunk=self._retention_chunk,
        )

    def _write_here(self) -> None:
        """Close on a log never started: its queue is written in this process."""
        self._seal(0)
        entries: list[EntryValues] = []
        while not self._out.empty():
            n, payload, _ = self._out.get()
            if n:
                entries.extend(marshal.loads(payload))
        if not entries:
            return
        writer = Writer(self._writer_settings())
        try:
            writer.add(entries)
            writer.write_pending()
            writer.tidy(self._clock())
        finally:
            writer.close()
        for level, text in writer.messages:
            log.log(level, "%s", text)
        self._ship.totals = writer.counters()

    # -- reads (blocking; run them in an executor) ---------------------------------

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._reader_lock:
            if self._reader is None:
                self._reader = connect(self.path)
                self._reader.row_factory = sqlite3.Row
            rows = self._reader.execute(sql, params).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            item["stream"] = bool(item["stream"])
            out.append(item)
        return out

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The row for ``request_id`` (the newest, should it be there twice), bodies
        as the stored JSON text; None if it was never written or has aged out."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM request_log WHERE request_id = ? ORDER BY id DESC LIMIT 1",
            (request_id,),
        )
        return rows[0] if rows else None

    def recent(self, limit: int = 100, route: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` rows by ``ts``, of one route or all, newest first."""
        if route is None:
            sql = f"SELECT {COLUMNS} FROM request_log ORDER BY ts DESC, id DESC LIMIT ?"
            return self._read(sql, (limit,))
        sql = f"SELECT {COLUMNS} FROM request_log WHERE route = ? ORDER BY ts DESC, id DESC LIMIT ?"
        return self._read(sql, (route, limit))

    def hash_key(self, key: str) -> str:
        """The ``key_hash`` stored for ``key`` (to look up or join on), the same in
        every process sharing the database. Blocking on first use before ``start``."""
        if self._hasher is None:
            with self._reader_lock:
                if self._hasher is None:
                    self._hasher = KeyHasher(load_secret(self.path, self._key_secret))
        return self._hasher(key)


def _close_open_logs() -> None:
    """A log left open at exit is closed, so that its writer keeps what it was sent
    and ends. Run by multiprocessing's exit handler (at interpreter exit, and when
    a process it started ends) before it terminates and joins daemonic children:
    a writer still waiting for its pipe to close would hold that join up."""
    for request_log in list(_OPEN):
        request_log.close(timeout=5.0)


Finalize(None, _close_open_logs, exitpriority=10)
