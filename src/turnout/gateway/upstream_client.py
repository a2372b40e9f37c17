"""``H1Transport``: the upstream HTTP/1.1 client, on asyncio Protocols and httptools.

aiohttp's client was over half of the gateway's CPU per request, mostly generality
the gateway never uses. This client does one thing: POST a JSON body to an
OpenAI-compatible upstream and hand back a JSON body or an SSE stream. It fits the
``Transport`` seam (``gateway.transport``) with the same semantics as
``AiohttpTransport``; failures come out as ``UpstreamFailed``/``UpstreamTimeout``.

How the hot path stays short:

- The request head (request line, host, content-type, the target's headers) is built
  once per (target, endpoint); a request adds only its content-length and writes
  head and body in one ``write``.
- A ``_Conn`` is one socket with one ``HttpResponseParser`` for its whole life
  (llhttp resets itself between messages). It feeds the ``_Response`` in flight and,
  once the message is complete on the wire, goes back to the pool at once: what the
  consumer has not taken yet stays buffered in the response.
- Timeouts cost no timer per request: each connection keeps one timer that is only
  moved earlier, never later; when it fires too early it re-arms itself for the
  current deadline. With the usual limits (seconds to minutes) a keep-alive
  connection re-arms about once per limit, not once per request.
- Keep-alive connections are pooled per (scheme, host, port), reused LIFO (the
  warmest first, and the coldest expire), at most ``max_connections`` open in all;
  over the limit an idle connection of another upstream is closed, else the caller
  waits for one. A reused connection that dies before any response byte (the server
  closed it as we picked it) is retried once on a new connection; after a response
  byte, never.
- A slow stream consumer pauses socket reads above ``HIGH_WATER`` buffered bytes.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from math import inf
from typing import cast

from httptools import HttpResponseParser

from turnout.exceptions import UpstreamFailed
from turnout.gateway.transport import UpstreamResponse, _translate
from turnout.snapshot import UpstreamTarget

KEEPALIVE = 30.0  # seconds a pooled connection may stay idle
HIGH_WATER = 64 * 1024  # bytes a stream may buffer before socket reads pause
_SLACK = 0.001  # timers fire up to a clock tick early (uvloop's clock is in ms)
_OCTET = "application/octet-stream"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OURS = frozenset(("host", "content-length", "transfer-encoding", "connection"))
_NAMES: dict[bytes, str] = {}  # raw header name -> lowercased str; names repeat a lot
_MEDIA: dict[str, str] = {}  # content-type value -> media type


def _until_eof(headers: Mapping[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


def _expire(stack: list[_Conn]) -> None:
    conn = stack.pop(0)  # the oldest
    conn._idle = False
    conn._drop(graceful=True)


class _Plan:
    """Everything about one (target, endpoint) that is the same for every request."""

    __slots__ = ("head", "host", "key", "port", "tls")

    def __init__(self, target: UpstreamTarget, endpoint: str) -> None:
        url = target.urls[endpoint]
        scheme, host, port = url.scheme, url.raw_host, url.port
        if scheme not in _DEFAULT_PORTS or not host or port is None:
            raise UpstreamFailed(f"upstream {target.name!r}: not an http(s) URL")
        self.tls = scheme == "https"
        self.host, self.port = host, port
        self.key = (scheme, host, port)
        authority = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            authority = f"{authority}:{port}"
        lines = [f"POST {url.raw_path_qs or '/'} HTTP/1.1", f"host: {authority}"]
        names = {name.lower() for name in target.headers}
        if "content-type" not in names:
            lines.append("content-type: application/json")
        for name, value in target.headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise UpstreamFailed(f"upstream {target.name!r}: a header has a line break")
            if name.lower() not in _OURS:
                lines.append(f"{name}: {value}")
        lines.append("content-length: ")  # the request adds "<n>\r\n\r\n<body>"
        self.head = "\r\n".join(lines).encode()


class _Response:
    """One exchange: status and headers, then the body as the connection delivers it."""

    __slots__ = ("_buf", "_conn", "_decoder", "_done", "_error", "_first_by", "_h", "_limit",
        "_received", "_size", "_target", "_total_at", "_waiter", "content_type", "headers",
        "status")  # fmt: skip

    def __init__(
        self, conn: _Conn, target: UpstreamTarget, first_by: float, total_at: float
    ) -> None:
        self._conn: _Conn | None = conn  # None once complete, failed or closed
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

    async def chunks(self) -> AsyncIterator[bytes]:
        # The idle limit covers each wait on the upstream only, not the time the
        # consumer takes between chunks; the first chunk is also due by first_by.
        loop = asyncio.get_running_loop()
        idle, first_by, total_at = self._target.idle_timeout, self._first_by, self._total_at
        try:
            while True:
                if self._buf:
                    first_by = inf
                    yield self._take()
                elif self._done:
                    return
                else:
                    await self._wait(min(loop.time() + idle, first_by, total_at))
        except Exception as exc:
            self.close()
            raise _translate(exc, self._target) from None
        finally:
            if not self._done:  # abandoned or cancelled mid-body: the rest is unwanted
                self.close()

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


class _Conn(asyncio.Protocol):
    __slots__ = ("_due", "_fresh", "_idle", "_idle_since", "_keep", "_loop", "_open", "_parser",
        "_paused", "_pool", "_resp", "_timer", "_timer_at", "_transport", "key")  # fmt: skip

    def __init__(
        self, pool: H1Transport, key: tuple[str, str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._pool = pool
        self.key = key
        self._loop = loop
        self._parser = HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._resp: _Response | None = None
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
                self._pool._put(self)
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

    def _start(self, resp: _Response, data: bytes) -> None:
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
            self._pool._forget(self)


class H1Transport:
    """A pooled keep-alive HTTP/1.1 client for upstream calls; one per process."""

    def __init__(
        self, max_connections: int = 1024, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._limit = max_connections
        self._open = 0  # connecting, active and idle
        self._all: set[_Conn] = set()
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}  # oldest first
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._plans: dict[int, tuple[UpstreamTarget, dict[str, _Plan]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl = ssl_context  # None: the system's CAs, made on first use

    def _plan(self, target: UpstreamTarget, endpoint: str) -> _Plan:
        # Keyed by identity (targets are immutable and hold MappingProxyTypes, so not
        # hashable); the entry keeps its target alive, so an id is never reused under it.
        entry = self._plans.get(id(target))
        if entry is None or entry[0] is not target:
            if len(self._plans) >= 256:  # targets of many old config versions
                self._plans.clear()
            entry = self._plans[id(target)] = (target, {})
        plan = entry[1].get(endpoint)
        if plan is None:
            plan = entry[1][endpoint] = _Plan(target, endpoint)
        return plan

    async def send(
        self, target: UpstreamTarget, endpoint: str, body: bytes, first_byte: float
    ) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        now = loop.time()
        plan = self._plan(target, endpoint)
        first_by, total_at = now + first_byte, now + target.total_timeout
        due = min(first_by, total_at)
        data = b"%b%d\r\n\r\n%b" % (plan.head, len(body), body)
        fresh = False
        while True:
            conn = None if fresh else self._pooled(plan.key, now)
            resp = None
            try:
                if conn is None:
                    conn = await self._connect(plan, target, due, fresh)
                resp = _Response(conn, target, first_by, total_at)
                conn._start(resp, data)
                while not resp.status:
                    await resp._wait(due)
                return resp
            except Exception as exc:
                if conn is None:
                    raise _translate(exc, target) from None
                conn._drop()
                stale = not conn._fresh and not (resp is not None and resp._received)
                if fresh or not stale or isinstance(exc, TimeoutError):
                    raise _translate(exc, target) from None
                fresh = True  # the server closed a pooled connection as we reused it
            except BaseException:
                if conn is not None:
                    conn._drop()
                raise

    def _pooled(self, key: tuple[str, str, int], now: float) -> _Conn | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            conn._idle = False
            if now - conn._idle_since < KEEPALIVE:
                return conn
            conn._drop(graceful=True)
        return None

    async def _connect(self, plan: _Plan, target: UpstreamTarget, due: float, fresh: bool) -> _Conn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(due):
            while self._open >= self._limit and not self._evict():
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._notify()  # pass on a wake-up this caller cannot use
                    raise
                if not fresh:
                    pooled = self._pooled(plan.key, loop.time())
                    if pooled is not None:
                        return pooled
            conn = _Conn(self, plan.key, loop)
            self._open += 1
            self._all.add(conn)
            try:
                async with asyncio.timeout(target.connect_timeout):
                    tls, name = (self._context(), plan.host) if plan.tls else (None, None)
                    await loop.create_connection(
                        lambda: conn, plan.host, plan.port, ssl=tls, server_hostname=name
                    )
            except BaseException:
                conn._drop()
                raise
            return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # loading the CA store takes milliseconds: once
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _put(self, conn: _Conn) -> None:
        if conn._paused:
            conn._resume()
        loop = conn._loop
        conn._idle, conn._idle_since = True, loop.time()
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = []
        stack.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(KEEPALIVE / 2, self._sweep, loop)
        if self._waiters:
            self._notify()

    def _forget(self, conn: _Conn) -> None:
        self._open -= 1
        self._all.discard(conn)
        if conn._idle:
            conn._idle = False
            self._idle[conn.key].remove(conn)
        if self._waiters:
            self._notify()

    def _notify(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _evict(self) -> bool:
        """Close the oldest idle connection of any upstream to make room; False if none."""
        for stack in self._idle.values():
            if stack:
                _expire(stack)
                return True
        return False

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        cutoff = loop.time() - KEEPALIVE
        left = False
        for stack in self._idle.values():
            while stack and stack[0]._idle_since <= cutoff:
                _expire(stack)
            left = left or bool(stack)
        if left:
            self._sweeper = loop.call_later(KEEPALIVE / 2, self._sweep, loop)

    async def close(self) -> None:
        for conn in list(self._all):
            conn._fail(ConnectionAbortedError("transport closed"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.sleep(0)  # let the transports' connection_lost run and close sockets
