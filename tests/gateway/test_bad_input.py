"""Every bad input gets an OpenAI-style error with the right status, and the server goes on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from tests.gateway.conftest import Running, gateway_for, split_config

from turnout.simulator import ModelProfile, start_simulator

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(body: Any, status: int, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body["error"]) >= {"message", "type", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def still_serving(gw: Running) -> None:
    status, headers, _ = await gw.post("/v1/chat/completions", CHAT)
    assert status == 200
    assert headers["x-turnout-route"] == "main"


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json")],
)
async def test_malformed_body_is_400(gw: Running, data: bytes, code: str) -> None:
    status, headers, body = await gw.post(
        "/v1/chat/completions", data=data, headers={"content-type": "application/json"}
    )
    assert_openai_error(body, status, 400, code)
    assert headers["x-turnout-request-id"]
    await still_serving(gw)


async def test_body_over_limit_is_413(sim: Any) -> None:
    config = split_config(sim.base_url)
    config["gateway"] = {"max_body_bytes": 1000}
    async with gateway_for(config) as gw:
        big = {**CHAT, "padding": "x" * 2000}
        status, _, body = await gw.post("/v1/chat/completions", big)
        assert_openai_error(body, status, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 500  # chunked upload, no content-length

        status, _, body = await gw.post("/v1/chat/completions", data=chunks())  # type: ignore[arg-type]
        assert_openai_error(body, status, 413, "payload_too_large")
        await still_serving(gw)


async def test_no_matching_route_is_404(sim: Any) -> None:
    config = split_config(sim.base_url, match={"attr": "header:x-app", "equals": "chat"})
    async with gateway_for(config) as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert_openai_error(body, status, 404, "no_route")
        status, _, _ = await gw.post("/v1/chat/completions", CHAT, headers={"x-app": "chat"})
        assert status == 200


async def test_unknown_forced_variant_is_400(gw: Running) -> None:
    status, headers, body = await gw.post(
        "/v1/chat/completions", CHAT, headers={"x-turnout-variant": "nope"}
    )
    assert_openai_error(body, status, 400, "unknown_variant")
    assert headers["x-turnout-route"] == "main"
    await still_serving(gw)


async def test_missing_key_rejected_when_configured(sim: Any) -> None:
    config = split_config(sim.base_url, sticky={"key": "header:x-user-id", "on_missing": "reject"})
    async with gateway_for(config) as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert_openai_error(body, status, 400, "missing_key")


async def test_unknown_path_and_method(gw: Running) -> None:
    async with gw.http.get(f"{gw.url}/v1/nothing") as resp:
        assert_openai_error(await resp.json(), resp.status, 404, "not_found")
    async with gw.http.get(f"{gw.url}/v1/chat/completions") as resp:
        assert_openai_error(await resp.json(), resp.status, 405, "method_not_allowed")
        assert resp.headers["allow"] == "POST"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_upstream_refusing_is_502() -> None:
    async with gateway_for(split_config(f"http://127.0.0.1:{closed_port()}/v1")) as gw:
        status, headers, body = await gw.post("/v1/chat/completions", CHAT)
        assert_openai_error(body, status, 502, "upstream_unavailable")
        assert headers["x-turnout-upstream"] == "sim"
        client = gw.openai()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="x", messages=CHAT["messages"])
        assert caught.value.status_code == 502


async def _gateway_on_profile(profile: ModelProfile, **timeouts: float) -> Any:
    sim = await start_simulator({"m-stable": profile, "m-canary": profile}, seed=3)
    config = split_config(sim.base_url)
    if timeouts:
        config["upstreams"][0]["timeouts"] = timeouts
    return sim, gateway_for(config)


async def test_upstream_hanging_is_504() -> None:
    sim, ctx = await _gateway_on_profile(ModelProfile(hang_rate=1.0), first_byte=0.3)
    async with sim, ctx as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert_openai_error(body, status, 504, "upstream_timeout")


async def test_upstream_garbage_is_502() -> None:
    sim, ctx = await _gateway_on_profile(ModelProfile(garbage_rate=1.0))
    async with sim, ctx as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert_openai_error(body, status, 502, "upstream_bad_response")


async def test_upstream_openai_error_is_relayed() -> None:
    sim, ctx = await _gateway_on_profile(
        ModelProfile(error_rate=1.0, error_status=429, retry_after=2)
    )
    async with sim, ctx as gw:
        status, headers, body = await gw.post("/v1/chat/completions", CHAT)
        assert status == 429
        assert body["error"]["message"]
        assert headers["x-turnout-variant"] in ("stable", "canary")


async def test_stream_dying_mid_way_ends_with_error_event() -> None:
    sim, ctx = await _gateway_on_profile(ModelProfile(die_mid_stream_rate=1.0))
    async with sim, ctx as gw:
        client = gw.openai()
        stream = await client.chat.completions.create(
            model="x", messages=CHAT["messages"], stream=True
        )
        got = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got.append(chunk)
        assert got  # some chunks arrived before the error event


async def test_client_disconnect_closes_upstream_stream() -> None:
    """A raw upstream that streams slowly records when its connection is dropped."""
    closed = asyncio.Event()

    async def slow_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            for i in range(200):
                event = b'data: {"choices": [{"delta": {"content": "x"}}], "n": %d}\n\n' % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                if reader.at_eof():
                    break
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(slow_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, gateway_for(split_config(f"http://127.0.0.1:{port}/v1")) as gw:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "stream": True})
            await resp.content.readline()
            resp.close()  # the client goes away mid-stream
        await asyncio.wait_for(closed.wait(), timeout=5)
        await still_serving_any(gw)


async def still_serving_any(gw: Running) -> None:
    async with gw.http.get(f"{gw.url}/healthz") as resp:
        assert resp.status == 200


async def test_an_unexpected_failure_is_a_json_500_and_the_server_goes_on(gw: Running) -> None:
    original = gw.gateway.pipeline.proxy

    async def broken(request: Any, endpoint: str) -> Any:
        raise RuntimeError("boom")

    gw.gateway.pipeline.proxy = broken  # type: ignore[method-assign]
    try:
        status, _, body = await gw.post("/v1/embeddings", {"model": "x", "input": "a"})
        assert status == 500 and body["error"]["code"] == "internal_error"
        assert "boom" not in body["error"]["message"]  # internals stay in the log
    finally:
        gw.gateway.pipeline.proxy = original  # type: ignore[method-assign]
    await still_serving(gw)
