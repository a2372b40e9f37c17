"""The gateway port's HTTP/1.1 server: an asyncio Protocol over httptools (llhttp, C).

Why not a framework's server: on the hot path the server is a fixed cost per
request, and bench/stack measured a thin proxy on this design at 14.4k req/s on one
core where the same proxy on aiohttp's server did 9.5k. The gateway needs little of
a framework: six fixed paths, bodies read whole (they are JSON), answers either
whole or streamed as SSE.

What it does:
- keep-alive, and pipelined requests answered in order (reading pauses while a few
  wait, so a client cannot queue unbounded work);
- request bodies by content-length or chunked, up to a limit asked per request (the
  live config's); over it, a 413 is answered at once and the rest of the body read
  and dropped before the connection closes, so the client sees the answer, not a reset;
- ``Expect: 100-continue``; a bound on the request line and headers (431);
- streamed answers (chunked) that wait when the client reads slower than we write;
- a handler is cancelled when its client goes away, as the pipeline expects;
- connections idle for ``keepalive`` seconds are closed by a sweep, not a timer per
  request; ``close`` stops accepting, lets in-flight requests finish for ``grace``
  seconds, then drops what remains.

Not supported, by design: upgrades (a 400), HTTP/2 and TLS (terminate those in front),
trailers. Header names reach the handler lowercased; repeated ones joined by ", ".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools
import orjson

from turnout.exceptions import GatewayError, HeadersTooLarge, InvalidRequest, PayloadTooLarge

__all__ = ["HttpServer", "Request", "Response", "StreamResponse"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together
MAX_PIPELINED = 8  # requests waiting behind the one being answered, before reading pauses
DISCARD_LIMIT = 64 * 1024 * 1024  # body bytes read and dropped after a 413, then we close
_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request:
    """One request, its body read whole. ``headers`` names are lowercase."""

    __slots__ = ("_conn", "body", "headers", "keep_alive", "method", "path", "query_string")

    def __init__(
        self,
        conn: _Connection,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers: Mapping[str, str] = headers
        self.body = body
        self.keep_alive = keep_alive


class Response:
    """A whole answer, written by the server after the handler returns it."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = (
            {**headers, "content-type": content_type} if headers else {"content-type": content_type}
        )


class StreamResponse:
    """An answer written as it goes (chunked): ``prepare``, ``write``..., ``write_eof``.

    Each call is one socket write, which on a short stream is most of the server's
    cost: the head waits to go out with the first ``write`` (an empty one sends it
    alone), and ``write_eof`` takes the last data with it. A write to a client that
    has gone raises ``ConnectionResetError``."""

    __slots__ = ("_conn", "_head", "ended", "headers", "status")

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers or {}  # read once, by prepare(); not copied
        self._conn: _Connection | None = None
        self._head = b""  # rendered by prepare, not yet sent
        self.ended = False  # write_eof was called: the connection may serve another request

    def prepare(self, request: Request) -> None:
        self._conn = request._conn
        self._head = _head(self.status, self.headers, b"transfer-encoding: chunked\r\n", True)

    async def write(self, data: bytes) -> None:
        conn = self._conn
        assert conn is not None, "prepare() first"
        head = self._head
        if head:
            self._head = b""
            conn.send(head + b"%x\r\n%b\r\n" % (len(data), data) if data else head)
        elif data:
            conn.send(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            return
        if conn.write_ready is not None:  # the client reads slower than we write
            await conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        conn = self._conn
        assert conn is not None, "prepare() first"
        if not self.ended:
            self.ended = True
            last = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
            head, self._head = self._head, b""
            conn.send(head + last if head else last)
            if conn.write_ready is not None:
                await conn.drain()


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


class _Clock:
    """The Date header, rendered once a second rather than per response."""

    second = -1
    line = b""

    @classmethod
    def date_line(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.line


def _head(status: int, headers: Mapping[str, str], framing: bytes, keep: bool) -> bytes:
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    end = b"\r\n" if keep else b"connection: close\r\n\r\n"
    return line + fields.encode("latin-1", "replace") + _Clock.date_line() + framing + end


def error_answer(exc: GatewayError) -> Response:
    """The server's own refusals (bad framing, too large), in the OpenAI error shape."""
    body = {"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": None}}
    return Response(exc.status, orjson.dumps(body), {"x-should-retry": "false"})


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0  # bytes of head, then of body, of the request being read
        self._in_body = False
        self._limit = 0
        self._refused: GatewayError | None = None  # answered early; the body is dropped
        self._pending: deque[tuple[Request | Response, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._paused_reading = False
        self.write_ready: asyncio.Future[None] | None = None
        self.idle_since: float | None = None  # loop time; None while a request is in hand

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self.idle_since = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()  # the client left: stop working for it
        waiter, self.write_ready = self.write_ready, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._transport is not None:  # refused in on_message_complete
                self._transport.pause_reading()
        except httptools.HttpParserError as exc:
            if self._refused is not None:
                self._refuse_now(self._refused)
            elif not self._in_body and self._size > MAX_HEAD_BYTES:
                limit = f"{MAX_HEAD_BYTES // 1024} KiB"
                self._refuse_now(HeadersTooLarge(f"the request line and headers are over {limit}"))
            else:
                self._refuse_now(InvalidRequest(f"malformed HTTP request: {exc}", code="bad_http"))

    def pause_writing(self) -> None:
        if self.write_ready is None:
            self.write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.write_ready = self.write_ready, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._in_body = False
        self._refused = None
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value)
        if self._size > MAX_HEAD_BYTES:
            raise _StopParsing
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        prev = self._headers.get(key)
        if prev is not None:  # repeated: one value, as RFC 9110 allows (cookies by "; ")
            text = f"{prev}{'; ' if key == 'cookie' else ', '}{text}"
        self._headers[key] = text

    def on_headers_complete(self) -> None:
        self._size = 0
        self._in_body = True
        self._limit = limit = self._server.max_body()
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._refused = PayloadTooLarge(
                f"request body of {length} bytes is over the {limit}-byte limit"
            )
        elif self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._refused is not None:
            if self._size > DISCARD_LIMIT:
                raise _StopParsing
            return
        if self._size > self._limit:
            self._refused = PayloadTooLarge(f"request body is over the {self._limit}-byte limit")
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        keep = bool(parser.should_keep_alive())
        if parser.should_upgrade():
            self._refused = InvalidRequest("protocol upgrades (and CONNECT) are not supported")
        if self._refused is not None:
            # Answered, then closed: what the client meant by the dropped body is unknown.
            self._enqueue(error_answer(self._refused), False)
            return
        url = self._url
        path, _, query = url.partition(b"?")
        if not path.startswith(b"/"):  # absolute form, as sent to proxies
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        text = path.decode("latin-1")
        body = self._body
        request = Request(
            self,
            parser.get_method().decode("latin-1"),
            unquote(text) if "%" in text else text,
            query.decode("latin-1"),
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            keep,
        )
        self._body = []
        self._enqueue(request, keep)

    # -- answering ----------------------------------------------------------------

    def _refuse_now(self, exc: GatewayError) -> None:
        """The framing is lost: answer (after what is queued) and close."""
        if self._transport is not None:
            self._transport.pause_reading()
        self._enqueue(error_answer(exc), False)

    def _enqueue(self, item: Request | Response, keep: bool) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._answer(item, keep))
            return
        self._pending.append((item, keep))
        if len(self._pending) >= MAX_PIPELINED and self._transport and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()

    async def _answer(self, item: Request | Response, keep: bool) -> None:
        """Answer ``item`` and whatever was pipelined behind it, in order."""
        handler = self._server.handler
        try:
            while True:
                if isinstance(item, Request):
                    try:
                        response = await handler(item)
                    except Exception:
                        log.exception("unhandled error answering %s %s", item.method, item.path)
                        response = error_answer(GatewayError("internal error in the gateway"))
                    if isinstance(response, StreamResponse):
                        keep = keep and response.ended  # only a close ends an unfinished one
                    else:
                        item = response
                if isinstance(item, Response):
                    keep = keep and not self._server.stopping
                    self.send(_whole(item, keep))
                if not keep or self._transport is None:
                    self._close()
                    return
                if not self._pending:
                    break
                item, keep = self._pending.popleft()
                if self._paused_reading and len(self._pending) < MAX_PIPELINED // 2:
                    self._paused_reading = False
                    if self._transport is not None:
                        self._transport.resume_reading()
        except (asyncio.CancelledError, ConnectionResetError):
            return  # the client left (connection_lost), or the server is going down
        finally:
            self._task = None
        self.idle_since = self._loop.time()

    def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def drain(self) -> None:
        if self._transport is None:
            raise ConnectionResetError("the client closed the connection")
        waiter = self.write_ready
        if waiter is not None:
            await asyncio.shield(waiter)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self, older_than: float) -> None:
        idle = self.idle_since
        if idle is not None and idle <= older_than and self._task is None:
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _whole(response: Response, keep: bool) -> bytes:
    body = response.body
    framing = b"content-length: %d\r\n" % len(body)
    return _head(response.status, response.headers, framing, keep) + body


class _StopParsing(Exception):
    """Raised in a parser callback to stop parsing; llhttp reports it as an error."""


class HttpServer:
    """Serves ``handler`` on one listening socket. ``max_body()`` is asked per request."""

    def __init__(
        self,
        handler: Handler,
        max_body: Callable[[], int],
        *,
        keepalive: float = 75.0,
        grace: float = 10.0,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.keepalive = keepalive
        self.grace = grace
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (0 = a free port); returns the bound port."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self._sweeper = self.loop.create_task(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        every = max(min(self.keepalive / 4, 5.0), 0.01)
        while True:
            await asyncio.sleep(every)
            cutoff = self.loop.time() - self.keepalive
            for conn in list(self.connections):
                conn.close_if_idle(cutoff)

    async def close(self) -> None:
        """Stop accepting; answer what is in flight for up to ``grace`` seconds."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + self.grace
        while self.connections:
            for conn in list(self.connections):
                conn.close_if_idle(float("inf"))
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
