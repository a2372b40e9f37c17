"""One upstream connection of ``H1Transport``: the socket, its response parser, and
the response being read on it (see ``gateway.upstream_client`` for the design).

A ``Conn`` feeds the ``Response`` in flight and, once the message is complete on the
wire, goes back to its pool at once: what the consumer has not taken yet stays
buffered in the response. It keeps one timer, only ever moved earlier, for every
deadline of the exchange; a slow stream consumer pauses socket reads above
``HIGH_WATER`` buffered bytes.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Mapping
from math import inf
from typing import Protocol, cast

from httptools import HttpResponseParser

from turnout.gateway.transport import _translate
from turnout.snapshot import UpstreamTarget

HIGH_WATER = 64 * 1024  # bytes a stream may buffer before socket reads pause
_SLACK = 0.001  # timers fire up to a clock tick early (uvloop's clock is in ms)
_OCTET = "application/octet-stream"
_NAMES: dict[bytes, str] = {}  # raw header name -> lowercased str; names repeat a lot
_MEDIA: dict[str, str] = {}  # content-type value -> media type


class Pool(Protocol):
    """What a connection tells its pool: free again, or gone."""

    def put_back(self, conn: Conn) -> None: ...
    def forget(self, conn: Conn) -> None: ...


def _until_eof(headers: Mapping[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


class Response:
    """One exchange: status and headers, then the body as the connection delivers it."""

    __slots__ = ("_buf", "_conn", "_decoder", "_done", "_error", "_first_by", "_h", "_limit",
        "_received", "_size", "_target", "_total_at", "_waiter", "content_type", "headers",
        "status")  # fmt: skip

    def __init__(
        self, conn: Conn, target: UpstreamTarget, first_by: float, total_at: float
    ) -> None:
        self._conn: Conn | None = conn  # None once complete, failed or closed
        self._target = target
        self._first_by = first_by
        self._total_at = total_at
        self._buf: list[bytes] = []
        self._size = 0
        self._limit: float = HIGH_WATER
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._done = False
        self._received = False  # any byte of the answer: a retry is no longer safe
        self._decoder: zlib._Decompress | None = None
        self.status = 0  # set when the final (not 1xx) headers are complete
        self.content_type = _OCTET
        self._h: dict[str, str] = {}
        self.headers: Mapping[str, str] = self._h

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, due: float) -> None:
        """Until the connection delivers something, fails, or ``due`` (loop time)."""
        conn = self._conn
        if conn is None:
            raise self._error or ConnectionAbortedError("response closed")
        waiter = self._waiter = conn._loop.create_future()
        conn._arm(due)
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _take(self) -> bytes:
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._size = 0
        conn = self._conn
        if conn is not None and conn._paused:
            conn._resume()
        return data

    async def read(self) -> bytes:
        if not self._done:
            # The whole body is wanted at once: a buffer limit would only stall it.
            self._limit = inf
            conn = self._conn
            if conn is not None and conn._paused:
                conn._resume()
            due = min(asyncio.get_running_loop().time() + self._target.idle_timeout, self._total_at)
            try:
                while not self._done:
                    await self._wait(due)
            except Exception as exc:
                self.close()
                raise _translate(exc, self._target) from None
            except BaseException:
                self.close()
                raise
        return self._take()

    def chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self)

    @property
    def at_end(self) -> bool:
        return self._done and not self._buf

    def close(self) -> None:
        # Drops the connection if the body is still coming, so an upstream generating
        # a stream nobody reads stops being paid for; after a complete body the
        # connection is already back in the pool and this does nothing.
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._error = self._error or ConnectionAbortedError("response closed")
            conn._resp = None
            conn._drop()


class _Chunks:
    """The body as it arrives. A class, not an async generator: a generator left
    unfinished (the dispatcher stops at the chunk the upstream says was the last)
    costs a finalizer task per stream. Whoever stops early closes the response."""

    __slots__ = ("_first_by", "_resp")

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self._first_by = resp._first_by

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        # The idle limit covers each wait on the upstream only, not the time the
        # consumer takes between chunks; the first chunk is also due by first_by.
        resp = self._resp
        if not resp._buf:
            if resp._done:
                raise StopAsyncIteration
            target = resp._target
            try:
                while not resp._buf and not resp._done:
                    now = asyncio.get_running_loop().time()
                    await resp._wait(min(now + target.idle_timeout, self._first_by, resp._total_at))
            except Exception as exc:
                resp.close()
                raise _translate(exc, target) from None
            if not resp._buf:
                raise StopAsyncIteration
        self._first_by = inf
        return resp._take()


class Conn(asyncio.Protocol):
    __slots__ = ("_due", "_fresh", "_idle", "_idle_since", "_keep", "_loop", "_open", "_parser",
        "_paused", "_pool", "_resp", "_timer", "_timer_at", "_transport", "key")  # fmt: skip

    def __init__(
        self, pool: Pool, key: tuple[str, str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._pool = pool
        self.key = key
        self._loop = loop
        self._parser = HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._resp: Response | None = None
        self._open = True  # counted in the pool's open connections
        self._fresh = True  # has completed no response: a failure is not a stale reuse
        self._keep = False
        self._paused = False
        self._idle = False
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = inf
        self._due = inf

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        resp = self._resp
        if resp is None:  # nobody asked: an idle connection that talks is broken
            self._drop()
            return
        resp._received = True
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # malformed answer, or a callback's (zlib) error
            self._fail(exc)
            return
        if self._resp is None:  # the message completed in this data
            if self._keep:
                self._pool.put_back(self)
            else:
                self._drop(graceful=True)

    def connection_lost(self, exc: Exception | None) -> None:
        resp = self._resp
        if resp is not None and exc is None and resp.status and _until_eof(resp.headers):
            self.on_message_complete()  # a body delimited by the close is complete
        self._fail(exc or ConnectionResetError("the upstream closed the connection"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self._resp
        if resp is None:
            raise ConnectionError("data after the end of the response")
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < 512:
                _NAMES[name] = key
        text = value.decode("latin-1")
        h = resp._h
        h[key] = f"{h[key]}, {text}" if key in h else text

    def on_headers_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        status = self._parser.get_status_code()
        if status < 200:  # an interim 1xx answer: the real one follows
            resp._h.clear()
            return
        h = resp._h
        ctype = h.get("content-type")
        if ctype is not None:
            media = _MEDIA.get(ctype)
            if media is None:
                media = ctype.partition(";")[0].strip().lower() or _OCTET
                if len(_MEDIA) < 256:
                    _MEDIA[ctype] = media
            resp.content_type = media
        coding = h.get("content-encoding")
        if coding is not None and coding.strip().lower() in ("gzip", "x-gzip", "deflate"):
            resp._decoder = zlib.decompressobj(47)  # 32 + 15: a gzip or a zlib header
        self._keep = self._parser.should_keep_alive()
        resp.status = status
        resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self._resp
        assert resp is not None
        if resp._decoder is not None:
            body = resp._decoder.decompress(body)
            if not body:
                return
        resp._buf.append(body)
        resp._size += len(body)
        if resp._size > resp._limit and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        waiter = resp._waiter  # resp._wake() inlined: once per piece of a stream
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        if not resp.status:
            return  # the end of a 1xx
        if resp._decoder is not None:
            tail = resp._decoder.flush()
            if tail:
                resp._buf.append(tail)
        self._resp = None
        self._fresh = False
        resp._conn = None
        resp._done = True
        resp._wake()

    # -- the rest

    def _start(self, resp: Response, data: bytes) -> None:
        assert self._transport is not None
        self._resp = resp
        self._transport.write(data)

    def _arm(self, due: float) -> None:
        self._due = due
        if due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(due, self._on_timer)
            self._timer_at = due

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, inf
        resp = self._resp
        if resp is None or resp._waiter is None:
            return
        if self._loop.time() >= self._due - _SLACK:
            self._fail(TimeoutError())
        else:
            self._arm(self._due)

    def _resume(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    def _fail(self, exc: Exception) -> None:
        resp = self._resp
        if resp is not None:
            self._resp = None
            resp._conn = None
            resp._error = exc
            resp._wake()
        self._drop()

    def _drop(self, graceful: bool = False) -> None:
        """Close; by default at once, unread data and all (TLS without a close_notify)."""
        if self._transport is not None:
            if graceful:
                self._transport.close()
            else:
                self._transport.abort()
        if self._open:
            self._open = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._pool.forget(self)
