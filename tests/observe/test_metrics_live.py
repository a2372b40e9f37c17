"""Known latency, error and token distributions through the gateway, read back as stats."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from tests.gateway.conftest import Running, gateway_for, split_config

from turnout.control.admin import AdminContext, LocalStats, stats
from turnout.simulator import Delay, ModelProfile, start_simulator

MESSAGES = [{"role": "user", "content": "one two three four five"}]  # 5 prompt tokens


async def stats_of(gw: Running, window: str = "60s") -> dict[str, Any]:
    ctx = AdminContext(
        snapshot=lambda: gw.gateway.snapshot, stats=LocalStats(gw.gateway.observer.registry)
    )
    return await stats(ctx, window)


def variant(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in doc["routes"][0]["variants"] if v["variant"] == name)


def single_variant_config(url: str) -> dict[str, Any]:
    config = split_config(url)
    config["routes"][0]["variants"] = [{"name": "only", "upstream": "sim", "model": "m"}]
    config["prices"] = {"m": {"input": 3.0, "output": 15.0}}
    # Known error rates must reach the client as they are: no retries, no ejection.
    config["routes"][0]["retry"] = {"max_retries": 0}
    config["upstreams"][0]["ejection"] = {"enabled": False}
    return config


async def test_latency_tokens_cost_and_errors_non_streaming() -> None:
    profile = ModelProfile(ttft=Delay.fixed(40), output_tokens=20, error_rate=0.25)
    async with (
        await start_simulator({"m": profile}, seed=11) as sim,
        gateway_for(single_variant_config(sim.base_url)) as gw,
    ):
        n = 400
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            async with sem:
                body = {"model": "x", "messages": MESSAGES, "user": f"u{i}"}
                status, _, _ = await gw.post("/v1/chat/completions", body)
                return status

        statuses = await asyncio.gather(*(one(i) for i in range(n)))
        doc = await stats_of(gw)
    v = variant(doc, "only")
    failed = sum(1 for s in statuses if s == 500)
    ok = n - failed
    assert v["requests"] == n
    assert v["errors"]["upstream_5xx"] == failed
    assert abs(failed - 100) < 5 * math.sqrt(n * 0.25 * 0.75)
    assert v["error_rate"] == pytest.approx(failed / n)
    # The simulator waits 40 ms before answering; the gateway adds little to that.
    assert 40 <= v["latency_ms"]["p50"] <= 80
    assert v["overhead_ms"]["p50"] < v["latency_ms"]["p50"] / 4
    assert v["tokens"] == {"input": 5 * ok, "output": 20 * ok}
    assert v["cost_usd"] == pytest.approx(ok * (5 * 3.0 + 20 * 15.0) / 1e6)
    assert v["ttft_ms"]["p50"] is None  # no streams
    up = doc["upstreams"][0]
    assert up["upstream"] == "sim" and up["requests"] == n
    assert doc["workers"] == 1 and doc["window"] == "60s"


async def test_streams_ttft_and_usage_stripped_unless_asked() -> None:
    profile = ModelProfile(
        ttft=Delay.fixed(60), output_tokens=30, tokens_per_second=600, words_per_chunk=3
    )
    async with (
        await start_simulator({"m": profile}, seed=5) as sim,
        gateway_for(single_variant_config(sim.base_url)) as gw,
    ):
        client = gw.openai()
        for _ in range(10):
            stream = await client.chat.completions.create(model="x", messages=MESSAGES, stream=True)
            chunks = [c async for c in stream]
            # Asked upstream for usage on the client's behalf: the client never sees it.
            assert all(c.choices for c in chunks)
            assert all(c.usage is None for c in chunks)
        stream = await client.chat.completions.create(
            model="x", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 30
        assert sim.received[-1].body["stream_options"] == {"include_usage": True}
        doc = await stats_of(gw, "cumulative")
    v = variant(doc, "only")
    assert v["requests"] == 11
    assert v["tokens"] == {"input": 5 * 11, "output": 30 * 11}
    assert 60 <= v["ttft_ms"]["p50"] <= 100
    # 30 tokens at 600 tokens/s after the first: about 50 ms of generation.
    assert 200 <= v["output_tokens_per_s"]["p50"] <= 1200
    assert v["latency_ms"]["p50"] >= v["ttft_ms"]["p50"]


async def test_error_classes_timeout_connection_garbage() -> None:
    hang = ModelProfile(hang_rate=1.0)
    garbage = ModelProfile(garbage_rate=1.0)
    async with await start_simulator({"m-stable": hang, "m-canary": garbage}, seed=2) as sim:
        config = split_config(sim.base_url)
        config["upstreams"][0]["timeouts"] = {"first_byte": 0.2}
        async with gateway_for(config) as gw:
            for variant_name in ("stable", "canary"):
                await gw.post(
                    "/v1/chat/completions",
                    {"model": "x", "messages": MESSAGES},
                    headers={"x-turnout-variant": variant_name},
                )
            await gw.post("/v1/chat/completions", data=b"{bad")  # refused before a route
            doc = await stats_of(gw)
    assert variant(doc, "stable")["errors"]["timeout"] == 1
    assert variant(doc, "canary")["errors"]["upstream_error"] == 1
    assert sum(v["requests"] for v in doc["routes"][0]["variants"]) == 2


async def test_in_flight_counts_requests_being_served() -> None:
    slow = ModelProfile(ttft=Delay.fixed(400))
    async with (
        await start_simulator({"m": slow}) as sim,
        gateway_for(single_variant_config(sim.base_url)) as gw,
    ):
        body = {"model": "x", "messages": MESSAGES}
        tasks = [asyncio.create_task(gw.post("/v1/chat/completions", body)) for _ in range(3)]
        await asyncio.sleep(0.2)
        during = variant(await stats_of(gw), "only")["in_flight"]
        await asyncio.gather(*tasks)
        after = variant(await stats_of(gw), "only")["in_flight"]
    assert (during, after) == (3, 0)
