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
- A ``Conn`` (``upstream_wire``) is one socket with one ``HttpResponseParser`` for its whole life
  (llhttp resets itself between messages). It feeds the ``Response`` in flight and,
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
from collections import deque

from turnout.exceptions import UpstreamFailed
from turnout.gateway.transport import UpstreamResponse, _translate
from turnout.gateway.upstream_wire import Conn, Response
from turnout.snapshot import UpstreamTarget

KEEPALIVE = 30.0  # seconds a pooled connection may stay idle
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OURS = frozenset(("host", "content-length", "transfer-encoding", "connection"))


def _expire(stack: list[Conn]) -> None:
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


class H1Transport:
    """A pooled keep-alive HTTP/1.1 client for upstream calls; one per process."""

    def __init__(
        self, max_connections: int = 1024, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._limit = max_connections
        self._open = 0  # connecting, active and idle
        self._all: set[Conn] = set()
        self._idle: dict[tuple[str, str, int], list[Conn]] = {}  # oldest first
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
                resp = Response(conn, target, first_by, total_at)
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

    def _pooled(self, key: tuple[str, str, int], now: float) -> Conn | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            conn._idle = False
            if now - conn._idle_since < KEEPALIVE:
                return conn
            conn._drop(graceful=True)
        return None

    async def _connect(self, plan: _Plan, target: UpstreamTarget, due: float, fresh: bool) -> Conn:
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
            conn = Conn(self, plan.key, loop)
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

    def put_back(self, conn: Conn) -> None:
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

    def forget(self, conn: Conn) -> None:
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
