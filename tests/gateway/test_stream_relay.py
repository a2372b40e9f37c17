"""Streams an upstream answers whole, in one read (as nginx serves a short one from
memory): the gateway ends the answer with the same write that carries the data, and
the client still gets every event, the usage taken out, and an error event as an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import orjson
import pytest
from tests.gateway.conftest import Running, gateway_for, split_config

from turnout.control.admin import AdminContext, LocalStats, stats

MESSAGES = [{"role": "user", "content": "hi"}]
WORDS = ["one ", "two ", "three"]


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk_event(content: str) -> bytes:
    delta = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return event({"id": "c1", "object": "chat.completion.chunk", "choices": [delta]})


USAGE = event(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
)
ERROR = event({"error": {"message": "the model fell over", "type": "server_error"}})
DONE = b"data: [DONE]\n\n"


def piece(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@asynccontextmanager
async def whole_upstream(body: bytes, chunked: bool, later: bytes = b"") -> AsyncIterator[str]:
    """Answers every request with ``body`` in one write, framed by length or chunked;
    ``later`` follows a moment after it, with the end of the answer."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                if chunked:
                    writer.write(head + b"transfer-encoding: chunked\r\n\r\n" + piece(body))
                    if later:
                        await writer.drain()
                        await asyncio.sleep(0.05)
                    writer.write(piece(later) + b"0\r\n\r\n" if later else b"0\r\n\r\n")
                else:
                    size = len(body) + len(later)
                    writer.write(head + b"content-length: %d\r\n\r\n%b" % (size, body))
                    if later:
                        await writer.drain()
                        await asyncio.sleep(0.05)
                        writer.write(later)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the gateway hung up, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


@asynccontextmanager
async def gateway_on(body: bytes, chunked: bool, later: bytes = b"") -> AsyncIterator[Running]:
    async with whole_upstream(body, chunked, later) as url, gateway_for(split_config(url)) as gw:
        yield gw


async def variant_stats(gw: Running) -> list[dict[str, Any]]:
    ctx = AdminContext(
        snapshot=lambda: gw.gateway.snapshot, stats=LocalStats(gw.gateway.observer.registry)
    )
    doc = await stats(ctx, "60s")
    return [v for v in doc["routes"][0]["variants"] if v["requests"]]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_whole_stream_is_relayed_and_ended(chunked: bool) -> None:
    body = b"".join(chunk_event(w) for w in WORDS) + USAGE + DONE
    async with gateway_on(body, chunked) as gw:
        client = gw.openai()
        for _ in range(3):  # the connection to the client is kept between them
            stream = await client.chat.completions.create(model="x", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
            assert all(c.choices for c in chunks)  # turnout's usage chunk is not passed on

        asked = await client.chat.completions.create(
            model="x", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
        last = [c async for c in asked][-1]
        assert last.usage is not None and last.usage.completion_tokens == 3

        status, headers, raw = await gw.post(
            "/v1/chat/completions", {"model": "x", "messages": MESSAGES, "stream": True}
        )
        assert status == 200 and headers["content-type"] == "text/event-stream"
        assert raw == b"".join(chunk_event(w) for w in WORDS) + DONE
        served = await variant_stats(gw)
        assert sum(v["requests"] for v in served) == 5
        assert sum(v["tokens"]["output"] for v in served) == 15  # the upstream's usage, 3 each
        assert sum(sum(v["errors"].values()) for v in served) == 0
        await client.close()


async def test_an_error_event_in_a_whole_stream_is_a_502_before_anything_is_sent() -> None:
    # Nothing reached the client yet, so the request could still fall back: the error
    # event makes the attempt a failure, answered as one.
    body = b"".join(chunk_event(w) for w in WORDS) + ERROR
    async with gateway_on(body, chunked=False) as gw:
        status, _, doc = await gw.post(
            "/v1/chat/completions", {"model": "x", "messages": MESSAGES, "stream": True}
        )
        assert status == 502 and doc["error"]["code"] == "upstream_bad_response"
        (served,) = await variant_stats(gw)
        assert {k: n for k, n in served["errors"].items() if n} == {"upstream_error": 1}


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_error_event_in_the_last_read_ends_the_stream_as_an_error(chunked: bool) -> None:
    first = b"".join(chunk_event(w) for w in WORDS)
    async with gateway_on(first, chunked, later=chunk_event("four") + ERROR) as gw:
        client = gw.openai()
        stream = await client.chat.completions.create(model="x", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
        got = []
        with pytest.raises(openai.APIError, match="the model fell over"):
            async for c in stream:
                got.append(c.choices[0].delta.content)
        assert got == [*WORDS, "four"]
        await client.close()
        (served,) = await variant_stats(gw)
        assert {k: n for k, n in served["errors"].items() if n} == {"upstream_error": 1}
