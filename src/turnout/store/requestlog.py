"""The request log: one row per proxied request, written off the request path.

``submit`` runs on the event loop for every request, so it only appends to a
bounded deque (one length check, one append, two counter increments; ``deque``
operations are atomic under the GIL, so no lock). When the deque is full the *new*
entry is dropped and counted: under overload the log loses rows, the gateway never
waits. One daemon writer thread per process drains the deque in batches of up to
``batch_size`` rows per transaction, at least every ``flush_interval`` seconds, and
all the work that costs (key hashing, body redaction and JSON) happens there too.

Rows are converted first, briefly blocking every few rows so that the event loop
thread, if it waits for the GIL, gets it (see ``_YIELD_EVERY``); then they are
inserted with multi-row statements, one SQLite step per few hundred rows.

Retention: every ``retention_interval`` seconds the writer deletes rows older than
``max_age_seconds`` and then the oldest rows beyond ``max_rows``, a few thousand per
transaction between batches, so a large backlog never holds the write lock long.

Threads: ``submit`` from one thread (the event loop); ``flush``, ``close``, ``find``,
``recent`` and ``hash_key`` block and belong in an executor or at shutdown.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from os import PathLike
from typing import Any

from turnout.store.entry import (
    COLUMNS,
    KeyHasher,
    LogEntry,
    load_key_secret,
    multi_insert,
    to_row,
)
from turnout.store.sqlite import connect, rollback

__all__ = ["LogEntry", "RequestLog"]

log = logging.getLogger("turnout.store")

_RETENTION_CHUNK = 5_000
# The writer's Python work holds the GIL, and a thread that merely waits for the GIL
# (the event loop, back from epoll) gets it only when the holder blocks or after the
# 5 ms switch interval. Blocking for an instant every 50 rows lets the loop in:
# while draining a backlog, loop lateness p99 went from ~1.3 ms to ~0.2 ms, at ~17%
# of the writer's throughput (bench/requestlog.py).
_YIELD_EVERY = 50
# SQLite allows 32,766 bound values per statement; 17 columns x 500 rows stays well under.
ROWS_PER_STATEMENT = 500
_MULTI_INSERT: dict[int, str] = {}


class RequestLog:
    """A bounded queue in front of a batching writer thread; see the module doc."""

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
        self._queue: deque[LogEntry] = deque()
        self._queue_limit = queue_limit
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_age = max_age_seconds
        self._max_rows = max_rows
        self._key_secret = key_secret
        self._retention_interval = retention_interval
        self._retention_chunk = _RETENTION_CHUNK
        self._clock = clock
        # Written by the submitting thread only.
        self.submitted = 0
        self.dropped = 0
        # Written by the writer thread only. submitted == written + lost + pending.
        self.written = 0
        self.lost = 0  # accepted but never written: failed batches, malformed entries
        self.batches = 0  # committed write transactions
        self.write_errors = 0  # failed transactions (batches and retention steps)
        self.redaction_failures = 0
        self.retention_deleted = 0
        self._processed = 0  # entries taken off the queue and handled, in order
        self._flush_target = 0
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._stop = False
        self._closed = False
        self._failing = False
        self._thread: threading.Thread | None = None
        self._hasher: KeyHasher | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    # -- the request path ---------------------------------------------------------

    def submit(self, entry: LogEntry) -> bool:
        """Queue ``entry`` for writing; False (and counted in ``dropped``) when the
        queue is full or the log closed. Never blocks, never does I/O."""
        queue = self._queue
        n = len(queue)
        if n >= self._queue_limit or self._closed:
            self.dropped += 1
            return False
        queue.append(entry)
        self.submitted += 1
        if n + 1 == self._batch_size:  # a full batch: no need to wait out the interval
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._queue)

    def counters(self) -> dict[str, int]:
        return {
            "submitted": self.submitted,
            "written": self.written,
            "dropped": self.dropped,
            "lost": self.lost,
            "pending": len(self._queue),
            "batches": self.batches,
            "write_errors": self.write_errors,
            "redaction_failures": self.redaction_failures,
            "retention_deleted": self.retention_deleted,
        }

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Open the database (creating and migrating it), load the key secret and
        start the writer thread. Blocking; errors such as a bad path raise here."""
        if self._closed:
            raise RuntimeError("this RequestLog is closed")
        if self._thread is not None:
            return
        conn = self._open_writer()
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="turnout-requestlog", daemon=True
        )
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every entry submitted before the call is handled (written or
        counted lost); False if that did not happen within ``timeout``."""
        target = self.submitted
        with self._done:
            if self._processed >= target:
                return True
            thread = self._thread
            if thread is None or not thread.is_alive():
                return False
            self._flush_target = max(self._flush_target, target)
            self._wake.set()
            return self._done.wait_for(
                lambda: self._processed >= target or not thread.is_alive(), timeout
            ) and (self._processed >= target)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer, close connections. Idempotent.
        Entries submitted afterwards are refused. A log never started writes its
        queue here, on the calling thread."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._queue:
            self._run(self._open_writer())
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- the writer thread --------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(self.path)
        if self._hasher is None:
            secret = self._key_secret
            self._hasher = KeyHasher(load_key_secret(conn) if secret is None else secret)
        return conn

    def _run(self, conn: sqlite3.Connection) -> None:
        next_retention = self._clock()
        retention_pending = False
        try:
            while True:
                stopping = self._stop  # read before draining: the last drain follows it
                batch = self._take()
                try:
                    if batch:
                        self._write(conn, batch)
                    now = self._clock()
                    if now >= next_retention:
                        retention_pending = True
                        next_retention = now + self._retention_interval
                    if retention_pending:
                        retention_pending = self._retention_step(conn, now)
                except Exception:  # the writer must outlive anything; count and go on
                    self._failed("request log writer")
                finally:
                    if batch:
                        with self._done:
                            self._processed += len(batch)
                            self._done.notify_all()
                if stopping and not self._queue:
                    return
                if len(self._queue) < self._batch_size and self._processed >= self._flush_target:
                    self._wake.wait(self._flush_interval)
                    self._wake.clear()
        finally:
            conn.close()
            with self._done:
                self._done.notify_all()  # a flush waiting on a dead writer returns

    def _take(self) -> list[LogEntry]:
        queue = self._queue
        popleft = queue.popleft
        return [popleft() for _ in range(min(len(queue), self._batch_size))]

    def _write(self, conn: sqlite3.Connection, batch: list[LogEntry]) -> None:
        hasher = self._hasher
        assert hasher is not None  # set before the writer runs
        rows: list[tuple[Any, ...]] = []
        for i, entry in enumerate(batch, 1):
            try:
                row, redaction_failed = to_row(entry, hasher)
            except Exception:  # a malformed entry costs its own row, not the batch
                continue
            if redaction_failed:
                self.redaction_failures += 1
            rows.append(row)
            if i % _YIELD_EVERY == 0:
                time.sleep(0)  # see _YIELD_EVERY
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(rows), ROWS_PER_STATEMENT):
                    chunk = rows[start : start + ROWS_PER_STATEMENT]
                    self._insert(conn, chunk)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except Exception:
            self.lost += len(batch)
            self._failed(f"writing {len(batch)} request log rows")
            return
        self.written += len(rows)
        self.lost += len(batch) - len(rows)
        self.batches += 1
        if self._failing:
            self._failing = False
            log.info("request log writes succeed again")

    def _insert(self, conn: sqlite3.Connection, chunk: list[tuple[Any, ...]]) -> None:
        """One INSERT of many rows: sqlite3 releases and retakes the GIL around each
        statement step, so one step per chunk rather than per row spares the event
        loop thread a GIL handoff (and a context switch on a busy core) per row."""
        sql = _MULTI_INSERT.get(len(chunk))
        if sql is None:
            sql = _MULTI_INSERT[len(chunk)] = multi_insert(len(chunk))
        conn.execute(sql, [value for row in chunk for value in row])

    def _retention_step(self, conn: sqlite3.Connection, now: float) -> bool:
        """Delete up to one chunk of expired rows, then up to one chunk of rows over
        ``max_rows``; True if more may remain. Each step is its own transaction."""
        chunk = self._retention_chunk
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                expired = conn.execute(
                    "DELETE FROM request_log WHERE id IN"
                    " (SELECT id FROM request_log WHERE ts < ? LIMIT ?)",
                    (now - self._max_age, chunk),
                ).rowcount
                excess_deleted = 0
                if expired < chunk:
                    (count,) = conn.execute("SELECT count(*) FROM request_log").fetchone()
                    excess = min(count - self._max_rows, chunk)
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
        return expired >= chunk or excess_deleted >= chunk

    def _failed(self, what: str) -> None:
        self.write_errors += 1
        # Logged once per run of failures: a full disk must not also flood the log.
        if not self._failing:
            self._failing = True
            log.exception("%s failed; counting failures until a write succeeds", what)

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
                    secret = self._key_secret
                    if secret is None:
                        conn = connect(self.path)
                        try:
                            secret = load_key_secret(conn)
                        finally:
                            conn.close()
                    self._hasher = KeyHasher(secret)
        return self._hasher(key)
