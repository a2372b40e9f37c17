from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from turnout.simulator import (
    Delay,
    ModelProfile,
    build_app,
    run_simulator_forever,
    start_simulator,
)
from turnout.simulator.server import RunningSimulator

pytestmark = pytest.mark.asyncio

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there simulator"}]


def client(sim: RunningSimulator, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0, **kwargs)


async def post(sim: RunningSimulator, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.base_url + path, data=data) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def sse_payloads(raw: bytes) -> list[bytes]:
    events = raw.split(b"\n\n")
    assert events[-1] == b"", "stream must end with a blank line"
    assert all(e.startswith(b"data: ") for e in events[:-1])
    return [e[len(b"data: ") :] for e in events[:-1]]


# -- chat completions -------------------------------------------------------------------


async def test_chat_completion_through_the_openai_client() -> None:
    async with await start_simulator() as sim, client(sim) as oai:
        reply = await oai.chat.completions.create(
            model="gpt-sim", messages=[{"role": "system", "content": "be brief"}, *USER]
        )
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-sim"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    content = choice.message.content or ""
    assert content.startswith("This is a simulated answer from gpt-sim.")
    assert len(content.split()) == 40
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 40)
    assert reply.usage.total_tokens == 45


async def test_chat_stream_through_the_openai_client_with_usage() -> None:
    async with await start_simulator() as sim, client(sim) as oai:
        full = await oai.chat.completions.create(model="m", messages=USER)
        stream = await oai.chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert 15 <= len(chunks) <= 30, "default answers should stream as ~20 chunks"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert set(finish[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 40
    assert chunks[-1].usage.prompt_tokens == 3


async def test_chat_stream_wire_format_without_usage() -> None:
    async with await start_simulator() as sim:
        status, headers, raw = await post(
            sim, "/chat/completions", {"model": "m", "messages": USER, "stream": True}
        )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(raw)
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_the_answer(key: str) -> None:
    profiles = {"m": ModelProfile(answer="w", output_tokens=50)}
    async with await start_simulator(profiles) as sim, client(sim) as oai:
        reply = await oai.chat.completions.create(model="m", messages=USER, extra_body={key: 7})
        stream = await oai.chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={key: 7},
        )
        chunks = [c async for c in stream]
    assert reply.choices[0].message.content == " ".join(["w"] * 7)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 7
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


async def test_answer_template_sees_the_conversation() -> None:
    profiles = {
        "echo": ModelProfile(
            answer="[{system_prompt}] {model} got: {last_user_message}", output_tokens=5
        )
    }
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "{braces} here"}]},
    ]
    async with await start_simulator(profiles) as sim:
        _, _, raw = await post(sim, "/chat/completions", {"model": "echo", "messages": messages})
    body = orjson.loads(raw)
    assert body["choices"][0]["message"]["content"] == "[sys] echo got: {braces} here"
    assert body["usage"]["prompt_tokens"] == 5


async def test_unknown_models_use_the_default_profile() -> None:
    listed = {"a": ModelProfile(answer="from a", output_tokens=2)}
    fallback = ModelProfile(answer="fallback", output_tokens=1)
    async with (
        await start_simulator(listed, default=fallback) as sim,
        await start_simulator({**listed, "default": fallback}) as sim2,
    ):
        for s in (sim, sim2):
            async with client(s) as oai:
                a = await oai.chat.completions.create(model="a", messages=USER)
                other = await oai.chat.completions.create(model="zzz", messages=USER)
            assert a.choices[0].message.content == "from a"
            assert other.choices[0].message.content == "fallback"


# -- other endpoints --------------------------------------------------------------------


async def test_completions_with_prompt_lists_and_streaming() -> None:
    profiles = {"c": ModelProfile(answer="re: {last_user_message}", output_tokens=3)}
    async with await start_simulator(profiles) as sim, client(sim) as oai:
        single = await oai.completions.create(model="c", prompt="one two")
        many = await oai.completions.create(model="c", prompt=["x", "y z"])
        stream = await oai.completions.create(
            model="c", prompt=["x", "y"], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert single.object == "text_completion"
    assert single.choices[0].text == "re: one two"
    assert single.usage is not None
    assert single.usage.prompt_tokens == 2
    assert [c.text for c in many.choices] == ["re: x re:", "re: y z"]
    assert [c.index for c in many.choices] == [0, 1]
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == ["re: x re:", "re: y re:"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


async def test_embeddings_are_deterministic_per_input() -> None:
    async with await start_simulator() as sim, client(sim) as oai:
        first = await oai.embeddings.create(model="e", input=["alpha", "beta"])
        again = await oai.embeddings.create(model="other", input="alpha")
        wide = await oai.embeddings.create(model="e", input="alpha", dimensions=32)
        packed = await oai.embeddings.create(model="e", input=["alpha"], encoding_format="base64")
    a, b = first.data[0].embedding, first.data[1].embedding
    assert len(a) == 8
    assert a == again.data[0].embedding
    assert a != b
    assert sum(x * x for x in a) == pytest.approx(1.0)
    assert len(wide.data[0].embedding) == 32
    assert first.usage.prompt_tokens == 2
    decoded = struct.unpack("<8f", base64.b64decode(str(packed.data[0].embedding)))
    assert decoded == pytest.approx(a, abs=1e-6)


async def test_models_lists_profile_names() -> None:
    profiles = {"a": ModelProfile(), "b": ModelProfile(), "default": ModelProfile()}
    async with await start_simulator(profiles) as sim, client(sim) as oai:
        models = await oai.models.list()
    assert [m.id for m in models.data] == ["a", "b"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", b"{not json", None),
        ("/chat/completions", b"[1, 2]", None),
        ("/chat/completions", {"messages": USER}, "model"),
        ("/chat/completions", {"model": "m", "messages": "hi"}, "messages"),
        ("/chat/completions", {"model": "m", "messages": USER, "max_tokens": -1}, "max_tokens"),
        ("/completions", {"model": "m", "prompt": [1, "a"]}, "prompt"),
        ("/embeddings", {"model": "m"}, "input"),
        ("/embeddings", {"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
    ],
)
async def test_bad_requests_get_openai_style_400s(path: str, body: Any, param: str | None) -> None:
    async with await start_simulator() as sim:
        status, headers, raw = await post(sim, path, body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = orjson.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


# -- recording --------------------------------------------------------------------------


async def test_received_requests_are_recorded_and_served() -> None:
    async with await start_simulator() as sim, client(sim) as oai:
        await oai.chat.completions.create(
            model="m", messages=USER, extra_headers={"X-Tenant": "acme"}
        )
        await oai.models.list()
        seen = sim.received[0]
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["x-tenant"] == "acme"
        assert seen.headers["authorization"] == "Bearer x"
        assert seen.body == {"model": "m", "messages": USER}
        assert sim.received[1].path == "/v1/models"

        async with aiohttp.ClientSession() as session:
            root = sim.base_url.removesuffix("/v1")
            async with session.get(root + "/_sim/received") as resp:
                listed = await resp.json()
            assert [r["path"] for r in listed] == ["/v1/chat/completions", "/v1/models"]
            assert listed[0]["body"]["messages"] == USER
            async with session.delete(root + "/_sim/received") as resp:
                assert resp.status == 204
            assert len(sim.received) == 0
            async with session.get(root + "/_sim/received") as resp:
                assert await resp.json() == []


# -- latency ----------------------------------------------------------------------------


async def test_ttft_and_generation_time_are_honoured() -> None:
    profiles = {
        "slow-start": ModelProfile(ttft=Delay.fixed(100)),
        "slow-gen": ModelProfile(tokens_per_second=200, output_tokens=40),
    }
    async with await start_simulator(profiles) as sim, client(sim) as oai:
        started = time.perf_counter()
        await oai.chat.completions.create(model="slow-start", messages=USER)
        assert time.perf_counter() - started >= 0.1

        started = time.perf_counter()
        await oai.chat.completions.create(model="slow-gen", messages=USER)
        assert time.perf_counter() - started >= 0.2  # 40 tokens at 200/s

        started = time.perf_counter()
        stream = await oai.chat.completions.create(model="slow-start", messages=USER, stream=True)
        async for _ in stream:
            break
        assert time.perf_counter() - started >= 0.1
        await stream.close()

        arrivals = []
        stream = await oai.chat.completions.create(model="slow-gen", messages=USER, stream=True)
        started = time.perf_counter()
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter() - started)
    # 20 chunks of 2 words at 200 words/s: the last leaves 19 * 10 ms after the first.
    assert len(arrivals) == 20
    assert arrivals[-1] - arrivals[0] >= 0.17
    assert arrivals[10] - arrivals[0] >= 0.08  # spread out, not bunched at the end


# -- faults -----------------------------------------------------------------------------


async def test_error_fault_with_retry_after() -> None:
    profiles = {"flaky": ModelProfile(error_rate=1, error_status=429, retry_after=1.5)}
    async with await start_simulator(profiles) as sim:
        status, headers, raw = await post(
            sim, "/chat/completions", {"model": "flaky", "messages": USER}
        )
        assert status == 429
        assert headers["Retry-After"] == "2"
        assert headers["retry-after-ms"] == "1500"
        error = orjson.loads(raw)["error"]
        assert error["type"] == "rate_limit_error"
        assert set(error) >= {"message", "type", "code"}
        async with client(sim) as oai:
            with pytest.raises(openai.RateLimitError):
                await oai.chat.completions.create(model="flaky", messages=USER)


async def test_server_error_fault_defaults_to_500() -> None:
    async with await start_simulator({"bad": ModelProfile(error_rate=1)}) as sim:
        status, headers, raw = await post(sim, "/embeddings", {"model": "bad", "input": "x"})
    assert status == 500
    assert "Retry-After" not in headers
    assert orjson.loads(raw)["error"]["type"] == "server_error"


async def test_garbage_fault_answers_200_with_a_non_json_body() -> None:
    async with await start_simulator({"junk": ModelProfile(garbage_rate=1)}) as sim:
        status, _, raw = await post(sim, "/chat/completions", {"model": "junk", "messages": USER})
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


async def test_die_mid_stream_cuts_the_stream_without_done() -> None:
    profiles = {"dies": ModelProfile(die_mid_stream_rate=1)}
    body = orjson.dumps({"model": "dies", "messages": USER, "stream": True})
    async with await start_simulator(profiles) as sim:
        received = b""
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.base_url + "/chat/completions", data=body) as resp,
        ):
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for piece in resp.content.iter_any():
                    received += piece
        assert received.startswith(b"data: {")
        assert b"[DONE]" not in received
        assert b'"finish_reason":"stop"' not in received

        async with client(sim) as oai:
            stream = await oai.chat.completions.create(model="dies", messages=USER, stream=True)
            got = []
            with pytest.raises(openai.APIError):
                async for chunk in stream:
                    got.append(chunk)
            assert got, "some chunks arrive before the connection drops"
        # Non-streaming requests are not affected by this knob.
        status, _, _ = await post(sim, "/chat/completions", {"model": "dies", "messages": USER})
        assert status == 200


async def test_hang_fault_never_answers() -> None:
    async with await start_simulator({"stuck": ModelProfile(hang_rate=1)}) as sim:
        async with client(sim, timeout=0.3) as oai:
            started = time.perf_counter()
            with pytest.raises(openai.APITimeoutError):
                await oai.chat.completions.create(model="stuck", messages=USER)
            assert time.perf_counter() - started >= 0.3
        # A hung request still open at shutdown must not hold close() up.
        session = aiohttp.ClientSession()
        pending = asyncio.create_task(
            session.post(
                sim.base_url + "/chat/completions", json={"model": "stuck", "messages": USER}
            )
        )
        await asyncio.sleep(0.1)
        started = time.perf_counter()
    assert time.perf_counter() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await pending
    await session.close()


async def test_a_seed_makes_faults_reproducible() -> None:
    profiles = {"coin": ModelProfile(error_rate=0.5)}

    async def statuses(seed: int) -> list[int]:
        async with await start_simulator(profiles, seed=seed) as sim:
            return [
                (await post(sim, "/embeddings", {"model": "coin", "input": "x"}))[0]
                for _ in range(24)
            ]

    first = await statuses(42)
    assert first == await statuses(42)
    assert set(first) == {200, 500}
    assert first != await statuses(43)


async def test_client_leaving_mid_stream_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    profiles = {"slow": ModelProfile(tokens_per_second=100)}
    body = orjson.dumps({"model": "slow", "messages": USER, "stream": True})
    with caplog.at_level(logging.WARNING):
        async with await start_simulator(profiles) as sim, aiohttp.ClientSession() as session:
            async with session.post(sim.base_url + "/chat/completions", data=body) as resp:
                await resp.content.readline()
                resp.close()
            await asyncio.sleep(0.1)
            status, _, _ = await post(sim, "/chat/completions", {"model": "m", "messages": USER})
            assert status == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- running ----------------------------------------------------------------------------


async def test_build_app_can_be_served_by_any_runner() -> None:
    runner = web.AppRunner(build_app({"m": ModelProfile(answer="hi", output_tokens=1)}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with session.post(url, json={"model": "m", "messages": USER}) as resp:
                assert (await resp.json())["choices"][0]["message"]["content"] == "hi"
    finally:
        await runner.cleanup()


async def test_start_simulator_reports_its_address() -> None:
    sim = await start_simulator()
    try:
        assert sim.host == "127.0.0.1"
        assert sim.port > 0
        assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
    finally:
        await sim.close()


async def test_run_simulator_forever_returns_on_cancellation() -> None:
    task = asyncio.create_task(run_simulator_forever({}, host="127.0.0.1", port=0))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    await asyncio.wait_for(task, 5)  # returns instead of raising CancelledError
    assert not task.cancelled()
