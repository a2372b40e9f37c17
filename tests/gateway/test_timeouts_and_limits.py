"""Upstream timeouts as configured, body limits as configured, rate-limit hints passed on."""

from __future__ import annotations

import openai
import pytest
from tests.gateway.conftest import gateway_for, split_config

from turnout.simulator import Delay, ModelProfile, start_simulator

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


async def _setup(profile: ModelProfile, **timeouts: float):  # type: ignore[no-untyped-def]
    sim = await start_simulator({"m-stable": profile, "m-canary": profile}, seed=1)
    config = split_config(sim.base_url)
    config["upstreams"][0]["timeouts"] = timeouts
    return sim, gateway_for(config)


async def test_slow_first_byte_within_first_byte_timeout_succeeds() -> None:
    # idle is shorter than the wait for headers; only first_byte may bound that wait.
    sim, ctx = await _setup(ModelProfile(ttft=Delay.fixed(600)), first_byte=5, idle=0.2)
    async with sim, ctx as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert status == 200, body


async def test_first_byte_timeout_is_504() -> None:
    sim, ctx = await _setup(ModelProfile(ttft=Delay.fixed(2000)), first_byte=0.3)
    async with sim, ctx as gw:
        status, _, body = await gw.post("/v1/chat/completions", CHAT)
        assert status == 504 and body["error"]["code"] == "upstream_timeout"


async def test_idle_gap_mid_stream_ends_with_error_event() -> None:
    # 2 words a chunk at 2 tokens/s: a one-second gap between chunks, idle allows 0.3 s.
    slow = ModelProfile(tokens_per_second=2, words_per_chunk=2, output_tokens=10)
    sim, ctx = await _setup(slow, first_byte=5, idle=0.3)
    async with sim, ctx as gw:
        stream = await gw.openai().chat.completions.create(
            model="x", messages=CHAT["messages"], stream=True
        )
        with pytest.raises(openai.APIError, match="timed out"):
            async for _ in stream:
                pass


async def test_body_up_to_the_configured_limit_is_accepted(sim) -> None:  # type: ignore[no-untyped-def]
    config = split_config(sim.base_url)
    config["gateway"] = {"max_body_bytes": 4 * 1024 * 1024}
    async with gateway_for(config) as gw:
        big = {**CHAT, "padding": "x" * (2 * 1024 * 1024)}  # over aiohttp's 1 MiB default
        status, _, body = await gw.post("/v1/chat/completions", big)
        assert status == 200, body


async def test_rate_limit_headers_are_passed_on() -> None:
    sim, ctx = await _setup(ModelProfile(error_rate=1.0, error_status=429, retry_after=3))
    async with sim, ctx as gw:
        status, headers, _ = await gw.post("/v1/chat/completions", CHAT)
        assert status == 429
        assert headers["retry-after"] == "3"
        assert headers["retry-after-ms"] == "3000"
