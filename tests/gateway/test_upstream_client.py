"""H1Transport over real loopback sockets: the simulator, and scripted raw servers for
the framings, faults and timeouts a well-behaved upstream never shows."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import re
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from yarl import URL

from turnout.exceptions import UpstreamFailed, UpstreamTimeout
from turnout.gateway.upstream_client import H1Transport
from turnout.gateway.upstream_wire import HIGH_WATER
from turnout.resilience.ejection import EjectionPolicy
from turnout.simulator import ModelProfile, RunningSimulator, start_simulator
from turnout.snapshot import ENDPOINTS, UpstreamTarget

CHAT = "chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def target(base_url: str, **timeouts: float) -> UpstreamTarget:
    t = {"connect": 2.0, "first_byte": 5.0, "idle": 5.0, "total": 20.0, **timeouts}
    return UpstreamTarget(
        name="up",
        base_url=base_url,
        urls=MappingProxyType({e: URL(f"{base_url}/{e}") for e in ENDPOINTS}),
        headers=MappingProxyType(
            {"content-type": "application/json", "authorization": "Bearer sk-test"}
        ),
        connect_timeout=t["connect"],
        first_byte_timeout=t["first_byte"],
        idle_timeout=t["idle"],
        total_timeout=t["total"],
        labels=MappingProxyType({}),
        stream_usage=False,
        ejection=EjectionPolicy(),
    )


@pytest.fixture
async def client() -> AsyncIterator[H1Transport]:
    transport = H1Transport()
    yield transport
    await transport.close()


async def send(
    client: H1Transport, t: UpstreamTarget, body: Any = None, first_byte: float | None = None
) -> Any:
    payload = orjson.dumps(body if body is not None else {"model": "m-stable"})
    return await client.send(t, CHAT, payload, first_byte or t.first_byte_timeout)


# --------------------------------------------------------------------------- raw server

Handler = Callable[["Raw", asyncio.StreamWriter, int, int], Awaitable[bool]]


@dataclass
class Raw:
    """A scripted HTTP/1.1 server: ``handler(server, writer, connection no, request no
    on it)`` answers each request and says whether to keep the connection."""

    handler: Handler
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a client hung up
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def on_connection(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(w)
        self.connections += 1
        number, self.open_now = self.connections, self.open_now + 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            for n in range(1_000_000):
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                body = await reader.readexactly(int(match.group(1)) if match else 0)
                self.heads.append(head)
                self.bodies.append(body)
                if not await self.handler(self, w, number, n):
                    break
                await w.drain()
            else:
                return
            with contextlib.suppress(ConnectionError):
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        except asyncio.CancelledError:
            pass  # torn down by raw_server; ending normally keeps asyncio's streams quiet
        finally:
            self.open_now -= 1
            w.close()
            self._writers.discard(w)

    async def wait_client_gone(self) -> None:
        await asyncio.wait_for(self.closed.wait(), 5.0)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Any]:
    raw = Raw(handler)
    server = await asyncio.start_server(raw.on_connection, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    raw.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}/v1"  # type: ignore[attr-defined]
    try:
        yield raw
    finally:
        server.close()
        for w in list(raw._writers):
            w.transport.abort()
        for task in list(raw._tasks):
            task.cancel()
        await asyncio.gather(*raw._tasks, return_exceptions=True)
        await server.wait_closed()


def answer(body: bytes = b'{"ok": true}', ctype: str = "application/json", **extra: str) -> Handler:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in extra.items())
    data = head.encode() + b"\r\n" + body

    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(data)
        return True

    return handler


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# --------------------------------------------------------------------------- the simulator


async def test_json_body_from_the_simulator(client: H1Transport, sim: RunningSimulator) -> None:
    t = target(sim.base_url)
    resp = await send(client, t, {"model": "m-stable", "messages": MESSAGES})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    parsed = orjson.loads(await resp.read())
    assert parsed["choices"][0]["message"]["content"].startswith("stable answer to hi")
    seen = sim.received[-1]
    assert seen.body["model"] == "m-stable"
    assert seen.headers["authorization"] == "Bearer sk-test"


async def test_sse_stream_from_the_simulator(client: H1Transport) -> None:
    paced = ModelProfile(answer="one two three four five six", tokens_per_second=200)
    async with await start_simulator({"m": paced}, seed=3) as sim:
        t = target(sim.base_url)
        for _ in range(2):  # the second on the kept-alive connection
            body = {"model": "m", "messages": MESSAGES, "stream": True}
            resp = await send(client, t, body)
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            pieces = [c async for c in resp.chunks()]
            assert len(pieces) > 3  # as generated, not all at the end
            text = b"".join(pieces)
            assert text.rstrip().endswith(b"data: [DONE]")
            deltas = [
                orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in text.splitlines()
                if line.startswith(b"data: {")
            ]
            assert "".join(deltas).startswith("one two three four five six")
            resp.close()  # after a complete body: a no-op, the connection stays pooled
        assert client._open == 1


# --------------------------------------------------------------------------- framing


async def test_the_request_is_one_post_with_the_targets_headers(client: H1Transport) -> None:
    async with raw_server(answer()) as raw:
        t = target(raw.url)
        t = replace(t, urls=MappingProxyType({CHAT: URL(f"{raw.url}/{CHAT}?api-version=1")}))
        await (await send(client, t, {"a": 1})).read()
    head = raw.heads[0].decode()
    lines = head.split("\r\n")
    assert lines[0] == f"POST /v1/{CHAT}?api-version=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    port = URL(raw.url).port
    assert fields == {
        "host": f"127.0.0.1:{port}",
        "content-type": "application/json",
        "authorization": "Bearer sk-test",
        "content-length": "7",
    }
    assert raw.bodies == [b'{"a":1}']


async def test_keep_alive_reuses_one_connection(client: H1Transport) -> None:
    async with raw_server(answer()) as raw:
        t = target(raw.url)
        for _ in range(3):
            assert await (await send(client, t)).read() == b'{"ok": true}'
        assert raw.connections == 1 and len(raw.heads) == 3


async def test_chunked_body_in_pieces(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b'{"a"', b": ", b"1}"):
            w.write(chunk(piece))
            await w.drain()
            await asyncio.sleep(0.02)
        w.write(b"0\r\n\r\n")
        return True

    async with raw_server(handler) as raw:
        t = target(raw.url)
        resp = await send(client, t)
        assert resp.content_type == "application/octet-stream"  # none was given
        assert await resp.read() == b'{"a": 1}'
        resp = await send(client, t)
        assert [c async for c in resp.chunks()] == [b'{"a"', b": ", b"1}"]
        assert raw.connections == 1


async def test_close_delimited_body(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"a": ')
        await w.drain()
        await asyncio.sleep(0.02)
        w.write(b"1}")
        return False  # the close ends the body

    async with raw_server(handler) as raw:
        t = target(raw.url)
        for _ in range(2):
            assert await (await send(client, t)).read() == b'{"a": 1}'
        assert raw.connections == 2


async def test_connection_close_is_honoured(client: H1Transport) -> None:
    async with raw_server(answer(connection="close")) as raw:
        t = target(raw.url)
        for _ in range(2):
            assert await (await send(client, t)).read() == b'{"ok": true}'
        assert raw.connections == 2


async def test_gzip_bodies_are_decoded(client: H1Transport) -> None:
    payload = b'{"text": "' + b"abc" * 5000 + b'"}'
    packed = gzip.compress(payload)

    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 0:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n")
            w.write(b"content-length: %d\r\n\r\n%b" % (len(packed), packed))
        else:  # a gzipped stream, cut at arbitrary points
            w.write(SSE_HEAD.replace(b"\r\n\r\n", b"\r\ncontent-encoding: gzip\r\n\r\n"))
            for i in range(0, len(packed), 7):
                w.write(chunk(packed[i : i + 7]))
            w.write(b"0\r\n\r\n")
        return True

    async with raw_server(handler) as raw:
        t = target(raw.url)
        assert await (await send(client, t)).read() == payload
        resp = await send(client, t)
        assert b"".join([c async for c in resp.chunks()]) == payload
        assert raw.connections == 1
    assert not any(b"accept-encoding" in h.lower() for h in raw.heads)


async def test_status_headers_and_content_type(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: Application/JSON; charset=UTF-8\r\n"
            b"Retry-After: 3\r\nretry-after-ms: 3000\r\nX-RateLimit-Remaining-Requests: 0\r\n"
            b'content-length: 21\r\n\r\n{"error": "too many"}'
        )
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url))
        assert resp.status == 429
        assert resp.content_type == "application/json"
        assert resp.headers.get("retry-after") == "3"
        assert resp.headers.get("retry-after-ms") == "3000"
        assert dict(resp.headers.items())["x-ratelimit-remaining-requests"] == "0"
        assert all(name == name.lower() for name in resp.headers)
        assert await resp.read() == b'{"error": "too many"}'


async def test_a_malformed_answer_is_upstream_failed(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(b"<html>not http at all</html>\r\n\r\n")
        return True

    async with raw_server(handler) as raw:
        with pytest.raises(UpstreamFailed, match="'up' failed"):
            await send(client, target(raw.url))
    assert client._open == 0


# --------------------------------------------------------------------------- connections


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    client: H1Transport,
) -> None:
    async with raw_server(
        answer(),
    ) as raw:
        t = target(raw.url)
        await (await send(client, t)).read()
        for w in list(raw._writers):
            w.close()  # the server's keep-alive timeout, say
        await asyncio.sleep(0.05)
        assert client._open == 0  # connection_lost took it out of the pool
        assert await (await send(client, t)).read() == b'{"ok": true}'
        assert raw.connections == 2


async def test_a_reused_connection_closed_before_the_answer_is_retried_once(
    client: H1Transport,
) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 1:  # the server timed the connection out just as it was reused
            return False
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True

    async with raw_server(handler) as raw:
        t = target(raw.url)
        assert await (await send(client, t)).read() == b"ok"
        assert await (await send(client, t)).read() == b"ok"
        assert raw.connections == 2 and len(raw.heads) == 3


async def test_a_fresh_connection_closed_before_the_answer_is_not_retried(
    client: H1Transport,
) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        return False

    async with raw_server(handler) as raw:
        with pytest.raises(UpstreamFailed):
            await send(client, target(raw.url))
        assert raw.connections == 1


async def test_no_retry_once_answer_bytes_arrived(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 0:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            return True
        w.write(b"HTTP/1.1 200 O")  # then the connection dies
        return False

    async with raw_server(handler) as raw:
        t = target(raw.url)
        await (await send(client, t)).read()
        with pytest.raises(UpstreamFailed):
            await send(client, t)
        assert len(raw.heads) == 2


async def test_a_connection_dropped_mid_body_is_upstream_failed(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if conn == 1:
            w.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":')
        else:
            w.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await w.drain()
        await asyncio.sleep(0.05)
        return False

    async with raw_server(handler) as raw:
        t = target(raw.url)
        resp = await send(client, t)
        with pytest.raises(UpstreamFailed, match="closed the connection"):
            await resp.read()
        resp = await send(client, t)
        got = []
        with pytest.raises(UpstreamFailed):
            async for c in resp.chunks():
                got.append(c)
        assert got == [b"data: 1\n\n"]
    assert client._open == 0


async def test_connect_refused_is_upstream_failed(client: H1Transport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamFailed):
        await send(client, target(f"http://127.0.0.1:{port}/v1"))
    assert client._open == 0


async def test_at_end_says_when_the_chunk_taken_was_the_last(client: H1Transport) -> None:
    go_on = asyncio.Event()

    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 0:  # two pieces, apart
            w.write(SSE_HEAD + chunk(b"data: 1\n\n"))
            await w.drain()
            await go_on.wait()
            w.write(chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        else:  # all at once, as a fast upstream's short answer arrives
            w.write(SSE_HEAD + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        return True

    async with raw_server(handler) as raw:
        t = target(raw.url)
        resp = await send(client, t)
        stream = resp.chunks()
        assert await anext(stream) == b"data: 1\n\n"
        assert not resp.at_end
        go_on.set()
        assert await anext(stream) == b"data: 2\n\n"
        assert resp.at_end
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

        resp = await send(client, t)
        for _ in range(100):  # until the whole answer is in (one read, almost always)
            if resp.at_end or resp._done:
                break
            await asyncio.sleep(0.01)
        assert not resp.at_end  # in, but not taken yet
        assert await anext(resp.chunks()) == b"data: 1\n\ndata: 2\n\n"
        assert resp.at_end
        assert raw.connections == 1 and client._open == 1  # kept alive, back in the pool


async def test_close_mid_stream_drops_the_connection(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(SSE_HEAD)
        for i in range(1000):
            w.write(chunk(b"data: %d\n\n" % i))
            await w.drain()
            await asyncio.sleep(0.01)
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url))
        stream = resp.chunks()
        assert (await anext(stream)).startswith(b"data: 0")
        resp.close()
        await raw.wait_client_gone()
        assert client._open == 0
        with pytest.raises(UpstreamFailed):
            await anext(stream)


async def test_the_pool_limit_makes_callers_wait(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True

    limited = H1Transport(max_connections=2)
    try:
        async with raw_server(handler) as raw:
            t = target(raw.url)

            async def one() -> bytes:
                return bytes(await (await send(limited, t)).read())

            assert await asyncio.gather(*(one() for _ in range(7))) == [b"ok"] * 7
            assert raw.most_open <= 2 and raw.connections == 2
            assert limited._open == 2 and not limited._waiters
    finally:
        await limited.close()
    assert limited._open == 0


async def test_a_slow_consumer_pauses_reading(client: H1Transport) -> None:
    piece = b"data: " + b"x" * 8000 + b"\n\n"

    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(SSE_HEAD)
        for _ in range(256):  # 2 MB, written as fast as the socket takes it
            w.write(chunk(piece))
            await w.drain()
        w.write(b"0\r\n\r\n")
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url))
        await asyncio.sleep(0.3)  # the consumer is busy
        assert resp._size <= HIGH_WATER + 256 * 1024  # paused, not all 2 MB buffered
        total = 0
        async for c in resp.chunks():
            total += len(c)
        assert total == 256 * len(piece)
        assert raw.connections == 1 and client._open == 1


# --------------------------------------------------------------------------- timeouts


async def test_first_byte_timeout(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        await asyncio.sleep(10)
        return True

    async with raw_server(handler) as raw:
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout):
            await send(client, target(raw.url, first_byte=5), first_byte=0.2)
        assert 0.15 < time.perf_counter() - start < 2
        assert client._open == 0


async def test_the_first_chunk_is_due_by_first_byte(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(SSE_HEAD)
        await w.drain()
        await asyncio.sleep(1)
        w.write(chunk(b"data: late\n\n"))
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url, idle=5), first_byte=0.3)
        with pytest.raises(UpstreamTimeout):
            await anext(resp.chunks())


async def test_idle_timeout_between_chunks_not_while_the_consumer_works(
    client: H1Transport,
) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(SSE_HEAD + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n"))
        await w.drain()
        if n == 0:
            w.write(b"0\r\n\r\n")
        else:
            await asyncio.sleep(2)  # a stall
        return True

    async with raw_server(handler) as raw:
        t = target(raw.url, idle=0.2)
        resp = await send(client, t)
        got = []
        async for c in resp.chunks():
            await asyncio.sleep(0.3)  # a slow client: not the upstream's idleness
            got.append(c)
        assert b"".join(got) == b"data: 1\n\ndata: 2\n\n"
        resp = await send(client, t)
        stream = resp.chunks()
        assert b"data: 1" in await anext(stream)
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout):
            async for _ in stream:
                pass
        assert time.perf_counter() - start < 1.5


async def test_total_timeout_bounds_a_stream_that_never_ends(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(SSE_HEAD)
        for i in range(1000):
            w.write(chunk(b"data: %d\n\n" % i))
            await w.drain()
            await asyncio.sleep(0.05)
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url, idle=1, total=0.5))
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout):
            async for _ in resp.chunks():
                pass
        assert time.perf_counter() - start < 1.5


async def test_idle_bounds_a_whole_body_read(client: H1Transport) -> None:
    async def handler(raw: Raw, w: asyncio.StreamWriter, conn: int, n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")
        await w.drain()
        await asyncio.sleep(2)
        return True

    async with raw_server(handler) as raw:
        resp = await send(client, target(raw.url, idle=0.2))
        with pytest.raises(UpstreamTimeout):
            await resp.read()


# --------------------------------------------------------------------------- TLS


def self_signed() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for ``localhost``."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(pem)
        (Path(d) / "k.pem").write_bytes(key_pem)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_https_with_server_name_checked() -> None:
    server_ctx, client_ctx = self_signed()
    tls = H1Transport(ssl_context=client_ctx)
    try:
        async with raw_server(answer(), tls=server_ctx) as raw:
            t = target(raw.url)
            for _ in range(2):
                assert await (await send(tls, t)).read() == b'{"ok": true}'
            assert raw.connections == 1
        untrusting = H1Transport()  # the default context does not trust the test CA
        async with raw_server(answer(), tls=server_ctx) as raw:
            with pytest.raises(UpstreamFailed, match="SSL"):
                await send(untrusting, target(raw.url))
        await untrusting.close()
    finally:
        await tls.close()


# --------------------------------------------------------------------------- uvloop

ON_UVLOOP = [
    test_keep_alive_reuses_one_connection,
    test_chunked_body_in_pieces,
    test_close_delimited_body,
    test_gzip_bodies_are_decoded,
    test_status_headers_and_content_type,
    test_a_reused_connection_closed_before_the_answer_is_retried_once,
    test_a_connection_dropped_mid_body_is_upstream_failed,
    test_connect_refused_is_upstream_failed,
    test_close_mid_stream_drops_the_connection,
    test_the_pool_limit_makes_callers_wait,
    test_a_slow_consumer_pauses_reading,
    test_first_byte_timeout,
    test_idle_timeout_between_chunks_not_while_the_consumer_works,
    test_total_timeout_bounds_a_stream_that_never_ends,
]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda f: f.__name__[5:])
def test_on_uvloop(case: Callable[[H1Transport], Awaitable[None]]) -> None:
    """The same cases on uvloop, the production loop (the rest run on asyncio's)."""
    uvloop = pytest.importorskip("uvloop")

    async def run() -> None:
        transport = H1Transport()
        try:
            await case(transport)
        finally:
            await transport.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
