"""The gateway's end of the request log's writer process: the pipes, the process,
and the two threads that tend them (``Shipper``).

``requestlog`` queues and seals frames; ``log_writer`` is the process; this is
what is between. The two threads hold the GIL a few microseconds at a time:

- the sender takes frames off the queue and writes each with one ``os.writev``
  (the GIL is released while the pipe is full); every flush interval it seals what
  waits and asks for a commit (``WRITE``), so that a quiet log is written too;
- the watcher reads the writer's reports (its counters) as they come and, should
  the process end unasked, counts what it had not written as lost, logs once, and
  starts another, backing off while new ones die at once. Meanwhile entries wait
  in the queue up to its limit, then are dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from os import PathLike
from typing import Any

from turnout.store.entry import EntryValues, load_key_secret
from turnout.store.log_writer import COUNTERS, FLAG_STOP, FLAG_WRITE, HEADER, WriterSettings, serve
from turnout.store.sqlite import connect

__all__ = ["Link", "Shipper", "load_secret", "plain", "spawn_writer", "write_frame"]

log = logging.getLogger("turnout.store")

EARLY_DEATH_SECONDS = 5.0  # a writer that dies sooner is restarted after a back-off
MAX_BACKOFF_SECONDS = 30.0
Frame = tuple[int, bytes, int]  # entries, payload, flags

# The data pipe holds this much (Linux; the default is 64 KiB, the unprivileged
# maximum 1 MiB): a burst, or the backlog of a writer starting, does not wait on it.
PIPE_BYTES = 1 << 20


@dataclass(eq=False)
class Link:
    """One writer process, its pipes, and what crossed them."""

    proc: BaseProcess
    data: Connection  # the write end of the frames' pipe; the sender owns it
    acks: Connection  # the read end of the reports' pipe; the watcher owns it
    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # entries delivered into the pipe
    done: int = 0  # of those, written or lost, by the writer's last report
    counters: tuple[int, ...] = (0,) * COUNTERS
    broken: bool = False  # a write failed: the process is gone


def spawn_writer(settings: WriterSettings) -> Link:
    """A new writer process (``spawn``: never fork a process running an event loop)."""
    ctx = multiprocessing.get_context("spawn")
    data_r, data_w = ctx.Pipe(duplex=False)
    acks_r, acks_w = ctx.Pipe(duplex=False)
    try:
        _grow(data_w.fileno())
        proc = ctx.Process(
            target=serve,
            args=(settings, data_r, acks_w),
            name="turnout-requestlog-writer",
            # Daemonic, so that multiprocessing ends it at exit if nothing else did;
            # a daemonic process may not have children, hence the exception.
            daemon=not multiprocessing.current_process().daemon,
        )
        # Started with SIGINT and SIGTERM blocked (the mask is inherited), so that a
        # signal to the process group before the writer has set its handlers waits
        # for them instead of killing it; only this thread's mask changes, meanwhile.
        groupwide = {signal.SIGINT, signal.SIGTERM}
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, groupwide)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
    except BaseException:
        data_w.close()
        acks_r.close()
        raise
    finally:
        data_r.close()  # the writer's ends: our copies would hide its end of file
        acks_w.close()
    return Link(proc, data_w, acks_r)


def _grow(fd: int) -> None:
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):  # capped lower here: the default will do
            fcntl.fcntl(fd, setpipe, PIPE_BYTES)


def write_frame(fd: int, flags: int, now: float, payload: bytes) -> None:
    """One frame, with one system call as a rule; blocks while the pipe is full
    (the GIL is released meanwhile). Raises OSError if the writer is gone."""
    header = HEADER.pack(len(payload), flags, now)
    done = os.writev(fd, [header, payload])
    total = len(header) + len(payload)
    if done < total:  # interrupted part way: finish the frame
        rest = memoryview(header + payload)[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def load_secret(path: str | PathLike[str], secret: bytes | None = None) -> bytes:
    """Open (create, migrate) the database, and return ``secret`` or, if None, its
    key-hashing secret. Blocking: errors such as a bad path raise here."""
    conn = connect(path)
    try:
        return load_key_secret(conn) if secret is None else secret
    finally:
        conn.close()


_EXACT = (str, int, float, bytes, bool, type(None))


def plain(values: EntryValues) -> EntryValues | None:
    """``values`` with subclasses of plain types (an IntEnum status, say) made
    plain, so that ``marshal`` takes them; None if it still cannot."""
    try:
        out = tuple(v if type(v) in _EXACT else _plain(v) for v in values)
        marshal.dumps(out)
    except Exception:
        return None
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, bytes):
        return bytes(v)
    return v


class Shipper:
    """Frames from the queue to a writer process, reports back, writers restarted."""

    def __init__(
        self,
        out: queue.SimpleQueue[Frame],
        waiting: Sized,  # the entries not yet sealed: only its length is read
        seal: Callable[[int], None],
        clock: Callable[[], float],
        flush_interval: float,
        retention_interval: float,
    ) -> None:
        self.out, self.waiting, self.seal, self.clock = out, waiting, seal, clock
        self.flush_interval = flush_interval
        self.retention_interval = retention_interval
        self.state = threading.Condition()  # guards what follows, across threads
        self.stopping = threading.Event()
        self.link: Link | None = None
        self.settings: WriterSettings | None = None
        self.shipped = 0  # entries off the queue (the sender's alone)
        self.lost_here = 0  # lost in this process: unserialisable, undelivered, left over
        self.base: tuple[int, ...] = (0,) * COUNTERS  # writers' counters, of those ended
        self.totals: tuple[int, ...] = (0,) * COUNTERS  # ... and of the live one
        self.restarts = 0
        self._unflagged = False  # entries shipped since the last WRITE
        self._last_ship = float("-inf")
        self._down = False  # a writer died and no successor has reported yet
        self._threads: list[threading.Thread] = []

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self, settings: WriterSettings) -> None:
        self.link = spawn_writer(settings)
        self.settings = settings
        self._threads = [
            threading.Thread(target=self._send, name="turnout-requestlog", daemon=True),
            threading.Thread(target=self._watch, name="turnout-requestlog-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, deadline: float) -> None:
        """Send ``STOP`` after what is queued and wait for the writer to end, until
        ``deadline`` (monotonic); then it is killed. Restarts end here."""
        with self.state:
            self.stopping.set()  # a sender waiting for a writer gives up
            self.state.notify_all()
        self.seal(FLAG_STOP)
        sender, watcher = self._threads
        sender.join(max(0.0, deadline - time.monotonic()))
        watcher.join(max(0.0, deadline - time.monotonic()))
        link = self.link
        if watcher.is_alive() and link is not None:
            log.error("the request log writer did not finish in time; stopping it")
            link.proc.kill()  # its pipes close: the sender and the watcher end
            watcher.join(5)
            sender.join(5)

    def _send(self) -> None:
        """Frames off the queue into the writer's pipe, in order; and the clock: every
        flush interval, seal what waits and ask for a commit (or, idle for as long as
        the retention interval, send an empty frame, so retention keeps its pace)."""
        interval = self.flush_interval
        idle_tick = max(self.retention_interval, interval)
        due = time.monotonic() + interval
        current: Link | None = None
        try:
            while True:
                try:
                    item = self.out.get(timeout=max(0.0, due - time.monotonic()))
                except queue.Empty:
                    item = None
                now = time.monotonic()
                if now >= due:
                    due = now + interval
                    if self.waiting or self._unflagged or now - self._last_ship >= idle_tick:
                        self.seal(FLAG_WRITE)
                if item is None:
                    continue
                n, payload, flags = item
                link = self._await_link()
                if link is not current and current is not None:
                    current.data.close()  # the previous writer's pipe: it is gone
                current = link
                self._ship(link, n, payload, flags)
                if flags & FLAG_STOP:
                    return
        finally:
            if current is not None:
                current.data.close()

    def _await_link(self) -> Link | None:
        """The live writer; None if there is none and the log is closing."""
        with self.state:
            while True:
                link = self.link
                if link is not None and not link.broken:
                    return link
                if self.stopping.is_set():
                    return None
                self.state.wait()

    def _ship(self, link: Link | None, n: int, payload: bytes, flags: int) -> None:
        delivered = False
        if link is not None:
            try:
                write_frame(link.data.fileno(), flags, self.clock(), payload)
                delivered = True
            except OSError:  # the writer is gone; the watcher restarts it
                link.broken = True
        with self.state:
            self.shipped += n
            if delivered and link is self.link and link is not None:
                link.sent += n
            else:  # never reached a writer, or reached one after its end was counted
                self.lost_here += n
                self.state.notify_all()
        if delivered:
            self._last_ship = time.monotonic()
            self._unflagged = not flags & FLAG_WRITE and (n > 0 or self._unflagged)

    def _watch(self) -> None:
        """Each writer's counters as they come; its end; another if it died."""
        link = self.link
        backoff = 0.0
        while link is not None:
            self._follow(link)
            link.proc.join(5)
            if link.proc.is_alive():  # it closed its pipe yet lingers: make sure
                link.proc.kill()
                link.proc.join(5)
            with self.state:
                unwritten = link.sent - link.done
                self.base = tuple(b + c for b, c in zip(self.base, link.counters, strict=True))
                self.base = (self.base[0], self.base[1] + unwritten, *self.base[2:])
                self.totals = self.base
                self.link = None
                self.state.notify_all()
            link.acks.close()
            if self.stopping.is_set():
                return
            early = time.monotonic() - link.started < EARLY_DEATH_SECONDS
            backoff = min(max(2 * backoff, 0.5), MAX_BACKOFF_SECONDS) if early else 0.0
            level = logging.DEBUG if self._down else logging.ERROR  # once per outage
            log.log(
                level,
                "the request log writer process (pid %s) exited with code %s; %d entries it"
                " had not written are counted lost; starting another in %.1f s",
                link.proc.pid,
                link.proc.exitcode,
                unwritten,
                backoff,
            )
            self._down = True
            link = self._restart(backoff)

    def _follow(self, link: Link) -> None:
        """Read ``link``'s reports until its end."""
        while True:
            try:
                counters, messages = marshal.loads(link.acks.recv_bytes())
            except (EOFError, OSError):
                return
            if self._down:
                self._down = False
                log.info("the request log writer process is back")
            for level, text in messages:
                log.log(level, "request log writer: %s", text)
            with self.state:
                link.counters = tuple(counters)
                link.done = counters[0] + counters[1]
                self.totals = tuple(b + c for b, c in zip(self.base, counters, strict=True))
                self.state.notify_all()

    def _restart(self, backoff: float) -> Link | None:
        while not self.stopping.wait(backoff):
            assert self.settings is not None
            try:
                link = spawn_writer(self.settings)
            except Exception:
                log.exception("cannot start the request log writer process")
                backoff = min(max(2 * backoff, 0.5), MAX_BACKOFF_SECONDS)
                continue
            with self.state:
                self.link = link
                self.restarts += 1
                self.state.notify_all()
            return link
        return None
