"""The gateway's HTTP/1.1 server on raw sockets: framing, limits, pipelining, streams,
clients that leave, keep-alive and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from turnout.gateway.http1 import (
    MAX_HEAD_BYTES,
    HttpServer,
    Request,
    Response,
    StreamResponse,
)

LIMIT = 1000


class Recorder:
    """A handler that echoes what it saw; ``/stream`` streams, ``/slow`` waits."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.wrote = 0

    async def __call__(self, request: Request) -> Response | StreamResponse:
        self.seen.append(request)
        if request.path == "/slow":
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.path == "/stream":
            out = StreamResponse(200, {"content-type": "text/event-stream"})
            out.prepare(request)
            for i in range(3):
                await out.write(b"data: %d\n\n" % i)
            await out.write_eof()
            return out
        if request.path == "/flood":
            out = StreamResponse(200, {"content-type": "text/event-stream"})
            out.prepare(request)
            self.started.set()
            chunk = b"x" * 65536
            try:
                for _ in range(2000):
                    await out.write(chunk)
                    self.wrote += 1
            except (ConnectionResetError, asyncio.CancelledError):
                self.cancelled.set()  # gone: a failed write, or cancelled as it left
                raise
            await out.write_eof()
            return out
        if request.path == "/boom":
            raise RuntimeError("a bug")
        body = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "size": len(request.body),
        }
        return Response(200, orjson.dumps(body), {"x-test": "yes"})


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Recorder, int]]:
    rec = Recorder()
    server = HttpServer(rec, lambda: LIMIT, keepalive=0.3, grace=1.0)
    port = await server.start("127.0.0.1", 0)
    yield server, rec, port
    rec.release.set()
    await server.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if status == 100:
        return status, headers, b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    return status, headers, body


def post(path: str, body: bytes = b"{}", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_request_parts_reach_the_handler(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/v1/a%20b?x=1&y=2", b'{"a": 1}', "X-User: Bob\r\nx-user: Al\r\n"))
    status, headers, body = await read_response(reader)
    seen = orjson.loads(body)
    assert status == 200 and headers["x-test"] == "yes" and "date" in headers
    assert headers["content-type"] == "application/json"
    assert seen["method"] == "POST" and seen["path"] == "/v1/a b" and seen["query"] == "x=1&y=2"
    assert seen["headers"]["x-user"] == "Bob, Al" and seen["size"] == 8
    writer.close()


async def test_keep_alive_and_pipelining_answer_in_order(
    served: tuple[HttpServer, Recorder, int],
) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(post(f"/p{i}", b"{}") for i in range(12)))  # one write, 12 requests
    paths = [orjson.loads((await read_response(reader))[2])["path"] for _ in range(12)]
    assert paths == [f"/p{i}" for i in range(12)]
    writer.write(post("/again"))  # the connection is still open
    assert orjson.loads((await read_response(reader))[2])["path"] == "/again"
    writer.close()


async def test_http10_closes_after_the_answer(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_chunked_upload_is_read_whole(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    for part in (b"ab", b"cde"):
        writer.write(b"%x\r\n%b\r\n" % (len(part), part))
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")
    assert orjson.loads((await read_response(reader))[2])["size"] == 5
    writer.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_limit_is_413_then_closed(
    served: tuple[HttpServer, Recorder, int], chunked: bool
) -> None:
    _, rec, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    big = b"x" * (LIMIT + 1)
    if chunked:
        writer.write(b"POST /big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big))
    else:
        writer.write(post("/big", big))
    status, headers, body = await read_response(reader)
    error = orjson.loads(body)["error"]
    assert status == 413 and error["code"] == "payload_too_large" and str(LIMIT) in error["message"]
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert rec.seen == []  # the handler never saw it


async def test_body_at_the_limit_is_accepted(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/ok", b"x" * LIMIT))
    assert orjson.loads((await read_response(reader))[2])["size"] == LIMIT
    writer.close()


async def test_expect_100_continue(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    )
    assert (await read_response(reader))[0] == 100
    writer.write(b"{}")
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_http"),
        (
            b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            400,
            "invalid_request",
        ),
    ],
)
async def test_bad_framing_is_a_json_error_then_closed(
    served: tuple[HttpServer, Recorder, int], raw: bytes, status: int, code: str
) -> None:
    _, rec, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    got, headers, body = await read_response(reader)
    assert got == status and orjson.loads(body)["error"]["code"] == code
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert rec.seen == []


async def test_a_handler_bug_is_a_500_and_the_connection_goes_on(
    served: tuple[HttpServer, Recorder, int],
) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/boom"))
    status, _, body = await read_response(reader)
    assert status == 500 and orjson.loads(body)["error"]["type"] == "api_error"
    writer.write(post("/fine"))
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_stream_is_chunked(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/stream"))
    status, headers, body = await read_response(reader)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    writer.write(post("/after"))  # a finished stream keeps the connection
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_a_stream_head_goes_with_the_first_write_and_the_last_data_with_the_end() -> None:
    steps = [asyncio.Event() for _ in range(3)]

    async def handler(request: Request) -> StreamResponse:
        out = StreamResponse(200, {"content-type": "text/event-stream"})
        out.prepare(request)
        steps[0].set()
        await steps[1].wait()
        await out.write(b"")  # commits the head, no data
        await steps[2].wait()
        await out.write_eof(b"data: last\n\n")
        return out

    server = HttpServer(handler, lambda: LIMIT)
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(post("/s"))
        await asyncio.wait_for(steps[0].wait(), 5)
        with pytest.raises(TimeoutError):  # prepared, but nothing sent yet
            await asyncio.wait_for(reader.read(1), 0.2)
        steps[1].set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        with pytest.raises(TimeoutError):  # an empty write sent the head alone
            await asyncio.wait_for(reader.read(1), 0.2)
        steps[2].set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert rest == b"c\r\ndata: last\n\n\r\n0\r\n\r\n"
        writer.write(post("/s"))  # the stream ended properly: the connection goes on
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        for step in steps:
            step.set()
        writer.close()
        await server.close()


async def test_a_client_that_leaves_cancels_its_handler(
    served: tuple[HttpServer, Recorder, int],
) -> None:
    _, rec, port = served
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/slow"))
    await asyncio.wait_for(rec.started.wait(), 5)
    writer.close()
    await asyncio.wait_for(rec.cancelled.wait(), 5)


async def test_a_stream_waits_for_a_slow_reader(served: tuple[HttpServer, Recorder, int]) -> None:
    _, rec, port = served
    _, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
    writer.write(post("/flood"))
    await asyncio.wait_for(rec.started.wait(), 5)
    await asyncio.sleep(0.3)  # nobody reads: the handler must be held back, not buffer 128 MB
    held = rec.wrote
    assert held < 400
    writer.transport.abort()
    await asyncio.wait_for(rec.cancelled.wait(), 5)


async def test_idle_connections_are_closed(served: tuple[HttpServer, Recorder, int]) -> None:
    _, _, port = served  # keepalive 0.3 s
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/x"))
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_close_lets_in_flight_requests_finish(
    served: tuple[HttpServer, Recorder, int],
) -> None:
    server, rec, port = served
    idle_reader, _ = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/slow"))
    await asyncio.wait_for(rec.started.wait(), 5)
    closing = asyncio.create_task(server.close())
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle: closed at once
    rec.release.set()
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    await asyncio.wait_for(closing, 5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
