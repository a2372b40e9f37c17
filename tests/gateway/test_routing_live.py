"""Routing decisions and variant overrides as the upstream sees them, over real sockets."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from tests.gateway.conftest import Running, gateway_for, split_config

from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router
from turnout.simulator import RunningSimulator

CHAT = {"model": "client-model", "messages": [{"role": "user", "content": "hi"}]}


async def test_split_proportions_and_stickiness(gw: Running) -> None:
    n = 1000

    async def variant_of(user: str) -> str:
        _, headers, _ = await gw.post("/v1/chat/completions", CHAT, headers={"x-user-id": user})
        return headers["x-turnout-variant"]

    first = await asyncio.gather(*(variant_of(f"user-{i}") for i in range(n)))
    counts = Counter(first)
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(counts["canary"] - 100) < 5 * sigma
    again = await asyncio.gather(*(variant_of(f"user-{i}") for i in range(0, n, 10)))
    assert again == first[::10]
    # The gateway decides exactly as the pure router does for the same key.
    router = Router(config_from_mapping(split_config("http://x/v1")))
    expected = [
        router.decide(RequestView("/", {"x-user-id": f"user-{i}"}, {})).variant.name
        for i in range(n)
    ]
    assert first == expected


async def test_overrides_reach_the_upstream(sim: RunningSimulator) -> None:
    config = split_config(sim.base_url)
    config["routes"][0]["variants"] = [
        {
            "name": "tuned",
            "upstream": "sim",
            "model": "m-stable",
            "params": {"temperature": 0.1, "max_tokens": 7},
            "system_prompt": {
                "mode": "prepend",
                "template": "Tenant {{header:x-tenant}} via {{route}}/{{variant}}.",
            },
        }
    ]
    async with gateway_for(config) as gw:
        body = {
            "model": "client-model",
            "temperature": 0.9,
            "top_p": 0.5,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
        }
        status, _, resp = await gw.post("/v1/chat/completions", body, headers={"x-tenant": "acme"})
    assert status == 200, resp
    seen = sim.received[-1].body
    assert seen["model"] == "m-stable"
    assert seen["temperature"] == 0.1 and seen["max_tokens"] == 7 and seen["top_p"] == 0.5
    assert seen["messages"][0] == {
        "role": "system",
        "content": "Tenant acme via main/tuned.\n\nBe brief.",
    }
    assert len(resp["choices"][0]["message"]["content"].split()) == 7


async def test_forced_variant_header(gw: Running) -> None:
    for _ in range(5):
        _, headers, body = await gw.post(
            "/v1/chat/completions", CHAT, headers={"x-turnout-variant": "canary"}
        )
        assert headers["x-turnout-variant"] == "canary"
        assert body["model"] == "m-canary"


async def test_forced_variant_ignored_where_not_allowed(sim: RunningSimulator) -> None:
    async with gateway_for(split_config(sim.base_url, allow_override=False)) as gw:
        variants = set()
        for i in range(60):
            _, headers, _ = await gw.post(
                "/v1/chat/completions",
                CHAT,
                headers={"x-turnout-variant": "canary", "x-user-id": f"u{i}"},
            )
            variants.add(headers["x-turnout-variant"])
        assert "stable" in variants


async def test_routes_match_in_order(sim: RunningSimulator) -> None:
    config = split_config(sim.base_url)
    premium = {
        "name": "premium",
        "match": {
            "any": [
                {"attr": "header:x-tier", "equals": "gold"},
                {"attr": "body:metadata.plan", "in": ["pro", "team"]},
            ]
        },
        "variants": [{"name": "big", "upstream": "sim", "model": "m-big"}],
    }
    config["routes"].insert(0, premium)
    async with gateway_for(config) as gw:
        _, h1, _ = await gw.post("/v1/chat/completions", CHAT, headers={"x-tier": "gold"})
        _, h2, _ = await gw.post("/v1/chat/completions", {**CHAT, "metadata": {"plan": "team"}})
        _, h3, _ = await gw.post("/v1/chat/completions", {**CHAT, "metadata": {"plan": "free"}})
    assert (h1["x-turnout-route"], h1["x-turnout-variant"]) == ("premium", "big")
    assert h2["x-turnout-route"] == "premium"
    assert h3["x-turnout-route"] == "main"
