"""Fallbacks, retries, ejection, deadlines and regions over real sockets, with
fault-injecting simulated upstreams."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from tests.gateway.conftest import Running, gateway_for

from turnout.config import config_from_mapping
from turnout.control.admin import process_export
from turnout.exceptions import ConfigError
from turnout.observe.metrics import Merged
from turnout.observe.views import stats_document
from turnout.simulator import Delay, ModelProfile, RunningSimulator, start_simulator

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
HEALTHY = ModelProfile()
FAILING = ModelProfile(error_rate=1.0, error_status=500)


def closed_port_url() -> str:
    """A loopback port nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def chain_config(
    primary: str, fallback: str | None, *, variant: dict[str, Any] | None = None, **route: Any
) -> dict[str, Any]:
    """One route, one variant on ``primary`` falling back to ``fallback``."""
    upstreams = [{"name": "primary", "base_url": primary, "timeouts": {"first_byte": 0.5}}]
    v: dict[str, Any] = {"name": "only", "upstream": "primary", **(variant or {})}
    if fallback is not None:
        upstreams.append({"name": "backup", "base_url": fallback})
        v.setdefault("fallbacks", [{"upstream": "backup"}])
    return {
        "upstreams": upstreams,
        "routes": [{"name": "main", "variants": [v], **route}],
    }


@asynccontextmanager
async def sims(*profiles: ModelProfile) -> AsyncIterator[list[RunningSimulator]]:
    started = [await start_simulator(default=p, seed=i) for i, p in enumerate(profiles)]
    try:
        yield started
    finally:
        for s in started:
            await s.close()


async def fire(gw: Running, n: int, body: dict[str, Any] = CHAT) -> list[Any]:
    return await asyncio.gather(*(gw.post("/v1/chat/completions", body) for _ in range(n)))


def variant_stats(gw: Running) -> dict[str, Any]:
    merged = Merged()
    health = gw.gateway.pipeline.dispatcher.health
    merged.add(process_export(gw.gateway.observer.registry, "cumulative", None, health))
    doc = stats_document(merged, gw.gateway.snapshot.config, "cumulative", generated_at=0.0)
    return doc


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(FAILING, id="500"),
        pytest.param(ModelProfile(error_rate=1.0, error_status=429, retry_after=60), id="429"),
        pytest.param(ModelProfile(hang_rate=1.0), id="hang"),
        pytest.param(ModelProfile(ttft=Delay.fixed(2000)), id="slow-first-token"),
        pytest.param(ModelProfile(garbage_rate=1.0), id="garbage"),
    ],
)
async def test_a_failing_primary_with_a_healthy_fallback_fails_no_request(
    fault: ModelProfile,
) -> None:
    async with sims(fault, HEALTHY) as (bad, good):
        # Ejection off: every request must go through the whole chain.
        config = chain_config(bad.base_url, good.base_url)
        config["upstreams"][0]["ejection"] = {"enabled": False}
        async with gateway_for(config) as gw:
            answers = await fire(gw, 20)
            for status, headers, body in answers:
                assert status == 200, body
                assert headers["x-turnout-upstream"] == "backup"
                assert headers["x-turnout-variant"] == "only"
                assert int(headers["x-turnout-attempts"]) >= 2
            assert len(good.received) == 20
            stats = variant_stats(gw)
            only = stats["routes"][0]["variants"][0]
            assert only["requests"] == 20
            assert only["error_rate"] == 0.0  # nobody saw an error...
            assert only["fallbacks"] == 20  # ...but the variant's failures are on record
            assert sum(only["absorbed_errors"].values()) >= 20
            primary = next(u for u in stats["upstreams"] if u["upstream"] == "primary")
            assert primary["error_rate"] == 1.0 and primary["requests"] >= 20


async def test_refused_connections_fall_back_for_streams_too() -> None:
    async with sims(HEALTHY) as (good,):
        config = chain_config(closed_port_url(), good.base_url)
        async with gateway_for(config) as gw:
            client = gw.openai()
            stream = await client.chat.completions.with_raw_response.create(
                model="x", messages=CHAT["messages"], stream=True
            )
            assert stream.headers["x-turnout-upstream"] == "backup"
            text = "".join(
                [c.choices[0].delta.content or "" async for c in stream.parse() if c.choices]
            )
            assert "simulated answer" in text


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        pytest.param(None, 502, "upstream_unavailable", id="refused"),
        pytest.param(ModelProfile(hang_rate=1.0), 504, "upstream_timeout", id="hang"),
        pytest.param(FAILING, 500, None, id="500"),
        pytest.param(ModelProfile(garbage_rate=1.0), 502, "upstream_bad_response", id="garbage"),
    ],
)
async def test_without_a_fallback_the_client_gets_the_right_error(
    fault: ModelProfile | None, status: int, code: str | None
) -> None:
    async with sims(*([fault] if fault else [])) as started:
        url = started[0].base_url if started else closed_port_url()
        config = chain_config(url, None, retry={"backoff": 0.01})
        async with gateway_for(config) as gw:
            got, headers, body = await gw.post("/v1/chat/completions", CHAT)
            assert got == status, body
            assert "message" in body["error"]
            if code is not None:
                assert body["error"]["code"] == code
            assert headers["x-should-retry"] == "false"  # the gateway is the only retry loop
            assert headers["x-turnout-upstream"] == "primary"
            # The official client raises the matching error and does not retry.
            client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="k", max_retries=2)
            with pytest.raises(openai.APIStatusError) as err:
                await client.chat.completions.create(model="x", messages=CHAT["messages"])
            assert err.value.status_code == status


async def test_a_stream_that_dies_after_its_first_byte_ends_with_an_error_event() -> None:
    dying = ModelProfile(die_mid_stream_rate=1.0, output_tokens=40, words_per_chunk=1)
    async with (
        sims(dying, HEALTHY) as (bad, good),
        gateway_for(chain_config(bad.base_url, good.base_url)) as gw,
    ):
        stream = await gw.openai().chat.completions.create(
            model="x", messages=CHAT["messages"], stream=True
        )
        got = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got.append(chunk)
        assert got  # some of the answer arrived before the error...
        assert len(good.received) == 0  # ...so there was no fallback after it


async def test_retry_honours_retry_after_then_passes_the_429_on() -> None:
    limited = ModelProfile(error_rate=1.0, error_status=429, retry_after=0.4)
    async with sims(limited) as (sim,):
        config = chain_config(sim.base_url, None, retry={"max_retries": 1, "backoff": 0.0})
        async with gateway_for(config) as gw:
            started = time.perf_counter()
            status, headers, body = await gw.post("/v1/chat/completions", CHAT)
            took = time.perf_counter() - started
            assert status == 429 and body["error"]
            assert headers["x-turnout-attempts"] == "2"
            assert took >= 0.4  # waited as asked before the retry
            assert headers["retry-after"]  # the client learns when to come back
            assert len(sim.received) == 2


async def test_a_retry_after_over_the_limit_moves_on_at_once() -> None:
    limited = ModelProfile(error_rate=1.0, error_status=429, retry_after=30)
    async with sims(limited, HEALTHY) as (bad, good):
        config = chain_config(bad.base_url, good.base_url, retry={"max_retry_after": 1})
        async with gateway_for(config) as gw:
            started = time.perf_counter()
            status, headers, _ = await gw.post("/v1/chat/completions", CHAT)
            assert status == 200 and headers["x-turnout-upstream"] == "backup"
            assert headers["x-turnout-attempts"] == "2"
            assert time.perf_counter() - started < 5


async def test_the_retry_budget_caps_retries() -> None:
    async with sims(FAILING) as (sim,):
        spent = {"max_retries": 3, "budget": 0.0, "min_per_second": 0.0, "backoff": 0.0}
        config = chain_config(sim.base_url, None, retry=spent)
        config["upstreams"][0]["ejection"] = {"enabled": False}
        async with gateway_for(config) as gw:
            answers = await fire(gw, 10)
            assert [a[0] for a in answers] == [500] * 10
            assert len(sim.received) == 10  # no retry at all: the budget is nil
        roomy = {**spent, "min_per_second": 100.0}
        sim.received.clear()
        async with gateway_for(chain_config(sim.base_url, None, retry=roomy)) as gw:
            await fire(gw, 2)
            assert len(sim.received) == 8  # 1 + 3 retries each


async def test_the_deadline_bounds_the_whole_request() -> None:
    async with sims(ModelProfile(hang_rate=1.0), HEALTHY) as (bad, good):
        config = chain_config(bad.base_url, good.base_url, deadline=0.3)
        config["upstreams"][0]["timeouts"] = {"first_byte": 30}
        async with gateway_for(config) as gw:
            started = time.perf_counter()
            status, _, body = await gw.post("/v1/chat/completions", CHAT)
            assert status == 504, body
            assert time.perf_counter() - started < 3
            assert len(good.received) == 0  # the deadline passed: no fallback began


async def test_route_timeouts_replace_the_upstreams() -> None:
    async with sims(ModelProfile(ttft=Delay.fixed(800))) as (sim,):
        config = chain_config(sim.base_url, None)  # the upstream allows 0.5 s
        config["routes"][0]["timeouts"] = {"first_byte": 5}
        async with gateway_for(config) as gw:
            status, _, body = await gw.post("/v1/chat/completions", CHAT)
            assert status == 200, body


async def test_fallback_steps_send_their_own_model_and_params() -> None:
    async with sims(FAILING, HEALTHY) as (bad, good):
        fallbacks = [{"upstream": "backup", "model": "cheap", "params": {"temperature": 0.1}}]
        config = chain_config(
            bad.base_url, good.base_url, variant={"model": "big", "fallbacks": fallbacks}
        )
        async with gateway_for(config) as gw:
            status, _, _ = await gw.post("/v1/chat/completions", CHAT)
            assert status == 200
            sent = good.received[-1].body
            assert sent["model"] == "cheap" and sent["temperature"] == 0.1
            assert bad.received[-1].body["model"] == "big"


async def test_ejection_skips_a_failing_upstream_then_probes_it_back() -> None:
    async with sims(FAILING, HEALTHY) as (bad, good):
        config = chain_config(bad.base_url, good.base_url, retry={"max_retries": 0})
        config["upstreams"][0]["ejection"] = {
            "consecutive_failures": 3,
            "error_rate": None,
            "cooldown": 0.5,
        }
        async with gateway_for(config) as gw:
            for _ in range(3):
                await gw.post("/v1/chat/completions", CHAT)
            assert len(bad.received) == 3
            for _ in range(10):  # ejected: straight to the backup
                status, headers, _ = await gw.post("/v1/chat/completions", CHAT)
                assert status == 200 and headers["x-turnout-attempts"] == "1"
            assert len(bad.received) == 3
            health = variant_stats(gw)["upstreams"][0]["health"]
            assert health["state"] == "ejected" and health["ejected_in"] == 1
            bad.set_profiles(default=HEALTHY)  # the outage ends
            await asyncio.sleep(0.6)
            status, headers, _ = await gw.post("/v1/chat/completions", CHAT)
            assert headers["x-turnout-upstream"] == "primary"  # the probe, and it passed
            answers = await fire(gw, 5)
            assert all(h["x-turnout-upstream"] == "primary" for _, h, _ in answers)
            assert variant_stats(gw)["upstreams"][0]["health"]["state"] == "closed"


async def test_a_failed_probe_ejects_for_longer() -> None:
    async with sims(FAILING, HEALTHY) as (bad, good):
        config = chain_config(bad.base_url, good.base_url, retry={"max_retries": 0})
        config["upstreams"][0]["ejection"] = {
            "consecutive_failures": 1,
            "error_rate": None,
            "cooldown": 0.3,
            "max_cooldown": 10,
        }
        async with gateway_for(config) as gw:
            await gw.post("/v1/chat/completions", CHAT)  # ejected for 0.3 s
            await asyncio.sleep(0.35)
            await gw.post("/v1/chat/completions", CHAT)  # probe fails: 0.6 s now
            assert len(bad.received) == 2
            await asyncio.sleep(0.35)
            await gw.post("/v1/chat/completions", CHAT)
            assert len(bad.received) == 2  # still ejected
            await asyncio.sleep(0.35)
            await gw.post("/v1/chat/completions", CHAT)
            assert len(bad.received) == 3  # probed again


async def test_regions_prefer_the_requests_own_then_the_configured_order() -> None:
    async with sims(HEALTHY, HEALTHY, HEALTHY) as (us, eu, ap):
        config = {
            "upstreams": [
                {"name": "m-us", "base_url": us.base_url, "labels": {"region": "us"}},
                {"name": "m-eu", "base_url": eu.base_url, "labels": {"region": "eu"}},
                {"name": "m-ap", "base_url": ap.base_url, "labels": {"region": "ap"}},
            ],
            "routes": [
                {
                    "name": "main",
                    "region": {"attr": "header:x-region", "order": ["eu", "us"]},
                    "variants": [{"name": "only", "upstream": ["m-us", "m-eu", "m-ap"]}],
                }
            ],
        }
        async with gateway_for(config) as gw:

            async def served(region: str | None) -> str:
                headers = {"x-region": region} if region else {}
                _, h, _ = await gw.post("/v1/chat/completions", CHAT, headers=headers)
                return str(h["x-turnout-upstream"])

            assert await served("us") == "m-us"
            assert await served("ap") == "m-ap"
            assert await served(None) == "m-eu"  # the configured order
            assert await served("mars") == "m-eu"
            us.set_profiles(default=FAILING)
            assert await served("us") == "m-eu"  # its own region down: the next in order


async def test_a_config_naming_unknown_upstreams_or_regions_is_refused() -> None:
    config = chain_config("http://a/v1", "http://b/v1")
    config["routes"][0]["variants"][0]["fallbacks"] = [{"upstream": ["backup", "nowhere"]}]
    config["routes"][0]["region"] = {"order": ["atlantis"]}
    with pytest.raises(ConfigError) as err:
        config_from_mapping(config)
    paths = {e.path for e in err.value.errors}
    assert "routes[0].variants[0].fallbacks[0].upstream" in paths
    assert "routes[0].region.order[0]" in paths
