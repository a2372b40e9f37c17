"""Mirroring over real sockets: a gateway, simulated live and shadow models."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from time import perf_counter
from typing import Any

import pytest
from tests.gateway.conftest import Running, gateway_for
from tests.rollout.conftest import until

from turnout.config import config_from_mapping
from turnout.gateway.server import serve_gateway
from turnout.observe.metrics import Merged
from turnout.observe.views import stats_document
from turnout.simulator import ModelProfile, RunningSimulator, start_simulator
from turnout.simulator.server import RECEIVED_LIMIT
from turnout.snapshot import build_snapshot
from turnout.store.shadow_samples import ShadowSampleStore

LIVE = ModelProfile(answer="the capital of france is paris", output_tokens=6)
SAME = ModelProfile(answer="the capital of france is paris", output_tokens=6)
OTHER = ModelProfile(answer="lyon is a city in france", output_tokens=6)


@pytest.fixture
async def upstream() -> AsyncIterator[RunningSimulator]:
    profiles = {"m-live": LIVE, "m-same": SAME, "m-other": OTHER}
    async with await start_simulator(profiles, seed=3) as s:
        yield s


def config(url: str, *shadows: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "sim", "base_url": url}],
        "routes": [
            {
                "name": "main",
                "sticky": {"key": "header:x-user-id"},
                "variants": [{"name": "live", "upstream": "sim", "model": "m-live"}],
                "shadows": list(shadows),
                **route,
            }
        ],
    }


def shadow(name: str = "sh", model: str = "m-same", **kw: Any) -> dict[str, Any]:
    return {"name": name, "upstream": "sim", "model": model, **kw}


def chat(text: str = "what is the capital of france?", **kw: Any) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": text}], **kw}


def models_seen(sim: RunningSimulator) -> list[str]:
    return [r.body.get("model") for r in sim.received]


def tally(gw: Running, name: str = "sh") -> Any:
    return gw.gateway.observer.registry.tally("main", name)


def stats(gw: Running) -> dict[str, Any]:
    merged = Merged()
    merged.add(gw.gateway.observer.registry.export("cumulative", perf_counter()))
    return stats_document(merged, gw.gateway.snapshot.config, "cumulative", generated_at=0.0)


async def test_a_mirrored_request_reaches_the_shadow_and_the_client_gets_the_live_answer(
    upstream: RunningSimulator,
) -> None:
    async with gateway_for(config(upstream.base_url, shadow(model="m-other"))) as gw:
        status, headers, body = await gw.post(
            "/v1/chat/completions", chat(), headers={"x-user-id": "u1"}
        )
        assert status == 200
        assert body["choices"][0]["message"]["content"] == "the capital of france is paris"
        assert headers["x-turnout-variant"] == "live"
        await until(lambda: tally(gw).pairs == 1)
    assert sorted(models_seen(upstream)) == ["m-live", "m-other"]
    t = tally(gw)
    assert (t.selected, t.sent, t.failed, t.dropped) == (1, 1, 0, 0)
    assert t.scores["exact"].total == 0.0
    # "paris", "capital", "the", "of", "is" vs "lyon", "a", "city", "in": shared: france, is
    assert 0.0 < t.scores["similarity"].total < 0.5


async def test_identical_answers_agree_on_every_evaluator(upstream: RunningSimulator) -> None:
    async with gateway_for(config(upstream.base_url, shadow(model="m-same"))) as gw:
        for i in range(5):
            status, _, _ = await gw.post(
                "/v1/chat/completions", chat(), headers={"x-user-id": f"u{i}"}
            )
            assert status == 200
        await until(lambda: tally(gw).pairs == 5)
        doc = stats(gw)
    t = tally(gw)
    assert t.disagreements == 0
    for name in ("exact", "similarity", "length_ratio"):
        assert t.scores[name].count == 5 and t.scores[name].total == 5.0, name
    # Plain text is not JSON: the json_valid rate is 0 for both, so it is measured, not hidden.
    assert t.scores["json_valid"].total == 0.0
    route = doc["routes"][0]
    assert route["variants"][0]["requests"] == 5
    (sh,) = route["shadows"]
    assert sh["shadow"] == "sh" and sh["requests"] == 5
    agreement = sh["mirror"]["agreement"]
    assert agreement["exact"]["mean"] == 1.0 and agreement["exact"]["is_rate"]
    lo, hi = agreement["exact"]["ci95"]
    assert lo < 1.0 <= hi + 1e-12


async def test_the_mirrored_share_is_within_binomial_bounds_and_sticky(
    upstream: RunningSimulator,
) -> None:
    n, p = 300, 0.3
    async with gateway_for(config(upstream.base_url, shadow(percent=30, queue=1000))) as gw:
        for i in range(n):
            await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": f"user-{i}"})
        selected = tally(gw).selected
        # The same users again: by key, exactly the same ones are mirrored.
        for i in range(n):
            await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": f"user-{i}"})
        assert tally(gw).selected == 2 * selected
        await until(lambda: tally(gw).pairs == 2 * selected)
    sd = math.sqrt(n * p * (1 - p))
    assert abs(selected - n * p) < 4 * sd, selected  # 4 sigma: a false alarm 1 in 16,000
    seen = models_seen(upstream)
    assert len(seen) < RECEIVED_LIMIT  # so the counts below are complete
    assert seen.count("m-same") == 2 * selected
    assert seen.count("m-live") == 2 * n


async def test_random_mirroring_without_a_key(upstream: RunningSimulator) -> None:
    n, p = 400, 0.5
    async with gateway_for(config(upstream.base_url, shadow(percent=50, by="random"))) as gw:
        for _ in range(n):
            await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": "one-user"})
        selected = tally(gw).selected
        await until(lambda: tally(gw).sent == selected)
    # One user, yet about half the requests: by random ignores the key.
    assert abs(selected - n * p) < 4 * math.sqrt(n * p * (1 - p)), selected


async def test_a_match_limits_what_is_mirrored(upstream: RunningSimulator) -> None:
    only_beta = shadow(match={"attr": "header:x-tier", "equals": "beta"})
    async with gateway_for(config(upstream.base_url, only_beta)) as gw:
        await gw.post("/v1/chat/completions", chat(), headers={"x-tier": "beta"})
        await gw.post("/v1/chat/completions", chat(), headers={"x-tier": "free"})
        await gw.post("/v1/chat/completions", chat())
        await until(lambda: tally(gw).sent == 1)
        assert tally(gw).selected == 1


async def _same_response(gw: Running) -> tuple[int, dict[str, Any]]:
    status, _, body = await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": "u"})
    assert isinstance(body, dict)
    body.pop("id", None)
    body.pop("created", None)
    return status, body


async def test_an_erroring_shadow_changes_nothing_for_the_client(
    upstream: RunningSimulator,
) -> None:
    async with gateway_for(config(upstream.base_url)) as plain:
        expected = await _same_response(plain)
    upstream.set_profiles({**_profiles(), "m-same": ModelProfile(error_rate=1.0)})
    async with gateway_for(config(upstream.base_url, shadow())) as gw:
        assert await _same_response(gw) == expected
        await until(lambda: tally(gw).pairs == 1)
        doc = stats(gw)
    t = tally(gw)
    assert t.failed == 1 and t.disagreements == 1  # exactly one side failed
    route = doc["routes"][0]
    assert route["variants"][0]["error_rate"] == 0.0
    assert route["shadows"][0]["errors"]["upstream_5xx"] == 1


async def test_a_hanging_shadow_does_not_hold_the_client(upstream: RunningSimulator) -> None:
    upstream.set_profiles({**_profiles(), "m-same": ModelProfile(hang_rate=1.0)})
    async with gateway_for(config(upstream.base_url, shadow())) as gw:
        for _ in range(3):
            status, _, body = await gw.post(
                "/v1/chat/completions", chat(), headers={"x-user-id": "u"}
            )
            assert status == 200
            assert body["choices"][0]["message"]["content"] == "the capital of france is paris"
        # Every client answer came back while the shadow calls were still hanging.
        series = gw.gateway.observer.registry.shadow_series("main", "sh", perf_counter())
        assert series.in_flight == 3
        assert tally(gw).pairs == 0
    # Closing the gateway cancelled them rather than waiting.
    assert series.in_flight == 0


async def test_overflow_is_dropped_and_counted(upstream: RunningSimulator) -> None:
    upstream.set_profiles({**_profiles(), "m-same": ModelProfile(hang_rate=1.0)})
    narrow = shadow(max_concurrency=1, queue=2)
    async with gateway_for(config(upstream.base_url, narrow)) as gw:
        for _ in range(6):
            status, _, _ = await gw.post("/v1/chat/completions", chat())
            assert status == 200
        t = tally(gw)
        assert (t.selected, t.sent, t.dropped) == (6, 1, 3)  # 1 in flight, 2 queued
        assert stats(gw)["routes"][0]["shadows"][0]["mirror"]["drop_rate"] == 0.5


async def test_streams_are_consumed_by_the_shadow(upstream: RunningSimulator) -> None:
    async with gateway_for(config(upstream.base_url, shadow(model="m-other"))) as gw:
        client = gw.openai()
        stream = await client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == "the capital of france is paris"
        await until(lambda: tally(gw).pairs == 1)
        sh = stats(gw)["routes"][0]["shadows"][0]
    assert sh["tokens"]["output"] == 6
    assert sh["ttft_ms"]["p50"] is not None
    assert tally(gw).scores["exact"].total == 0.0


async def test_shadow_cost_is_reported_apart_from_live_cost(upstream: RunningSimulator) -> None:
    cfg = config(upstream.base_url, shadow(model="m-other"))
    cfg["prices"] = {"m-live": {"input": 1.0, "output": 1.0}, "m-other": {"input": 9, "output": 9}}
    async with gateway_for(cfg) as gw:
        await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": "u"})
        await until(lambda: tally(gw).pairs == 1)
        route = stats(gw)["routes"][0]
    live, shadow_cost = route["variants"][0]["cost_usd"], route["shadow_cost_usd"]
    assert live > 0 and shadow_cost == pytest.approx(9 * live)


def redact_emails(kind: str, body: Any) -> Any:
    import re  # noqa: PLC0415

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\S+@\S+", "[email]", value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return scrub(body)


async def test_disagreements_are_stored_redacted(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    upstream.set_profiles(
        {
            **_profiles(),
            "m-live": ModelProfile(answer="write to {last_user_message}", output_tokens=3),
            "m-other": ModelProfile(answer="nothing in common here", output_tokens=4),
        }
    )
    cfg = config(
        upstream.base_url,
        shadow(model="m-other", samples={"keep": 5, "redact": f"{__name__}:redact_emails"}),
    )
    store = ShadowSampleStore(tmp_path / "t.db")
    snapshot = build_snapshot(config_from_mapping(cfg))
    gateway, server = await serve_gateway(snapshot, host="127.0.0.1", port=0, samples=store)
    try:
        import aiohttp  # noqa: PLC0415

        async with aiohttp.ClientSession() as http:
            gw = Running(gateway, f"http://127.0.0.1:{server.port}", http)
            for i in range(8):
                status, _, _ = await gw.post(
                    "/v1/chat/completions", chat(f"bob{i}@example.com"), headers={"x-user-id": "u"}
                )
                assert status == 200
            await until(lambda: tally(gw).samples_kept == 8)
    finally:
        await server.close()
        await gateway.close()
    rows = store.recent("main")
    store.close()
    assert len(rows) == 5  # keep: the newest five
    assert rows[0]["scores"]["similarity"] == 0.0
    assert (
        rows[0]["live"] == "write to [email]" and rows[0]["shadow_text"] == "nothing in common here"
    )
    assert "[email]" in rows[0]["request"]
    assert b"@example.com" not in _all_bytes(tmp_path)


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir())


def _profiles() -> dict[str, ModelProfile]:
    return {"m-live": LIVE, "m-same": SAME, "m-other": OTHER}


def starts_alike(request_body: Any, live: str, shadow: str) -> bool:
    """A user plug-in, named in config as tests.shadow.test_mirror_live:starts_alike."""
    return live.split(maxsplit=1)[0] == shadow.split(maxsplit=1)[0]


async def test_user_and_llm_judge_evaluators(upstream: RunningSimulator) -> None:
    verdict = '{"agree": false, "score": 0.25, "reason": "different city"}'
    upstream.set_profiles({**_profiles(), "m-judge": ModelProfile(answer=verdict)})
    evaluators = [
        {"type": "similarity"},
        {"type": "python", "function": f"{__name__}:starts_alike"},
        {"type": "llm_judge", "upstream": "sim", "model": "m-judge"},
    ]
    cfg = config(upstream.base_url, shadow(model="m-other", evaluators=evaluators))
    async with gateway_for(cfg) as gw:
        for i in range(3):
            await gw.post("/v1/chat/completions", chat(), headers={"x-user-id": f"u{i}"})
        await until(lambda: tally(gw).pairs == 3)
    scores = tally(gw).scores
    assert scores["starts_alike"].total == 0.0  # "the" vs "lyon"
    assert scores["llm_judge"].count == 3 and scores["llm_judge"].total == 0.75
    judged = [r.body for r in upstream.received if r.body.get("model") == "m-judge"]
    assert len(judged) == 3
    prompt = judged[0]["messages"][1]["content"]
    assert "the capital of france is paris" in prompt and "lyon is a city" in prompt


async def test_an_unloadable_plugin_refuses_the_config() -> None:
    from turnout.exceptions import ConfigError  # noqa: PLC0415

    plugin = {"type": "python", "function": "no_such_module:f"}
    bad = shadow(evaluators=[{"type": "similarity"}, plugin])
    with pytest.raises(ConfigError) as refused:
        build_snapshot(config_from_mapping(config("http://127.0.0.1:9/v1", bad)))
    (error,) = refused.value.errors
    assert error.path == "routes[0].shadows[0].evaluators[1]"
    assert "no_such_module" in error.message


async def test_match_sees_the_clients_request_not_the_variants(
    upstream: RunningSimulator,
) -> None:
    # The live variant sends model m-live upstream; the client asked for "any".
    by_model = shadow(match={"attr": "body:model", "equals": "any"})
    async with gateway_for(config(upstream.base_url, by_model)) as gw:
        await gw.post("/v1/chat/completions", chat())
        await until(lambda: tally(gw).pairs == 1)
        assert tally(gw).selected == 1


async def test_a_client_that_leaves_mid_stream_is_not_compared(
    upstream: RunningSimulator,
) -> None:
    slow = ModelProfile(answer="one two three four five six", tokens_per_second=20)
    upstream.set_profiles({**_profiles(), "m-live": slow})
    async with gateway_for(config(upstream.base_url, shadow())) as gw:
        body = chat(stream=True)
        async with gw.http.post(f"{gw.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            await resp.content.readany()  # the first chunk, then leave
        await until(lambda: tally(gw).abandoned == 1)
        assert tally(gw).pairs == 0 and tally(gw).disagreements == 0
