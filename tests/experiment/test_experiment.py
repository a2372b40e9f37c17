"""An A/B experiment end to end: traffic and feedback through the gateway, then the
report, the unit export and the stop, over the admin API."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from pathlib import Path
from typing import Any

import pytest
from tests.control.conftest import whole
from tests.rollout.conftest import until

from turnout.cli.experiment import render_report
from turnout.config.experiment import ExperimentSpec
from turnout.experiment.report import Unit, build_report
from turnout.simulator import Delay, ModelProfile, start_simulator


def experiment_config(url: str) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "sim", "base_url": url}],
        "routes": [
            {
                "name": "chat",
                "salt": "exp-1",
                "allow_override": True,
                "variants": [
                    {"name": "control", "upstream": "sim", "model": "m-a", "weight": 50},
                    {"name": "concise", "upstream": "sim", "model": "m-b", "weight": 50},
                ],
            }
        ],
        "experiments": [
            {
                "name": "prompt-test",
                "route": "chat",
                "control": "control",
                "primary": {"metric": "feedback:converted"},
                "mde": 0.5,  # the sequential test is tuned to the planned sample size
                "guardrails": [{"metric": "latency_ms"}, {"metric": "error_rate"}],
            }
        ],
    }


async def test_the_report_names_the_variant_built_to_win(tmp_path: Path) -> None:
    profiles = {
        "m-a": ModelProfile(ttft=Delay.uniform(3, 6), output_tokens=5),
        "m-b": ModelProfile(ttft=Delay.uniform(3, 6), output_tokens=5),
    }
    rng = random.Random(42)
    convert = {"control": 0.25, "concise": 0.55}  # built to win on the primary metric
    async with (
        await start_simulator(profiles, seed=1) as sim,
        whole(experiment_config(sim.base_url), tmp_path) as t,
    ):

        async def user(i: int) -> None:
            for _ in range(2):
                _, headers, _ = await t.chat(f"user-{i}")
            variant = headers["x-turnout-variant"]
            converted = rng.random() < convert[variant]
            status, _ = await t.post(
                f"{t.url}/v1/feedback",
                {
                    "request_id": headers["x-turnout-request-id"],
                    "name": "converted",
                    "value": converted,
                },
            )
            assert status in (200, 201)

        for start in range(0, 400, 50):
            await asyncio.gather(*(user(i) for i in range(start, start + 50)))
        # One user forced onto both variants: exposed twice, so left out.
        async with t.http.post(
            f"{t.url}/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-user-id": "user-0", "x-turnout-variant": "concise"},
        ) as resp:
            assert resp.status == 200
        async with t.http.post(
            f"{t.url}/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-user-id": "user-0", "x-turnout-variant": "control"},
        ) as resp:
            assert resp.status == 200

        async def analysed() -> Any:
            _, report = await t.get("/admin/experiments/prompt-test")
            done = report["units"] == {"analysed": 399, "excluded_multiple_variants": 1}
            return report if done else None

        report = await until(analysed, timeout=10)  # the request log flushes every 0.25 s
        assert not report["srm"]["mismatch"]
        primary = report["comparisons"]["concise"]["feedback:converted"]
        assert primary["verdict"] == "better", primary
        assert report["winner"] == "concise"
        assert report["comparisons"]["concise"]["latency_ms"]["verdict"] != "worse"

        status, text = await t.get("/admin/experiments/prompt-test/units.csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert status == 200 and len(rows) == 400
        assert {"key_hash", "variant", "requests", "feedback:converted"} <= set(rows[0])
        assert not any(r["key_hash"].startswith("user-") for r in rows)  # hashed, never raw

        status, body = await t.post(
            f"{t.admin}/admin/experiments/prompt-test/stop", {"winner": "concise"}
        )
        assert status == 200 and body["changed"]
        route = t.running.plane.document["routes"][0]
        assert {v["name"]: v["weight"] for v in route["variants"]} == {
            "control": 0.0,
            "concise": 100.0,
        }
        assert t.running.plane.document["experiments"][0]["stop"] > 0
        status, body = await t.get("/admin/experiments/nope")
        assert status == 404


def _units(counts: dict[str, int], rate: dict[str, float], seed: int) -> list[Unit]:
    rng = random.Random(seed)
    out = []
    for arm, n in counts.items():
        for i in range(n):
            value = 1.0 if rng.random() < rate[arm] else 0.0
            out.append(Unit(f"{arm}-{i}", (arm,), 1, {"feedback:x": value}))
    return out


SPEC = ExperimentSpec.model_validate(
    {"name": "e", "route": "r", "control": "a", "primary": {"metric": "feedback:x"}}
)


def test_a_skewed_split_is_flagged_and_names_no_winner() -> None:
    units = _units({"a": 5000, "b": 5400}, {"a": 0.1, "b": 0.2}, 1)
    report = build_report(SPEC, {"a": 50, "b": 50}, units)
    assert report["srm"]["mismatch"] and report["srm"]["p_value"] < 0.001
    assert report["comparisons"]["b"]["feedback:x"]["verdict"] == "better"
    assert report["winner"] is None


@pytest.mark.parametrize("analysis", ["sequential", "fixed", "bayesian"])
def test_every_analysis_finds_a_clear_effect_and_not_a_null_one(analysis: str) -> None:
    spec = SPEC.model_copy(update={"analysis": analysis})
    clear = build_report(
        spec, {"a": 50, "b": 50}, _units({"a": 3000, "b": 3000}, {"a": 0.1, "b": 0.15}, 2)
    )
    assert clear["winner"] == "b"
    null = build_report(
        spec, {"a": 50, "b": 50}, _units({"a": 3000, "b": 3000}, {"a": 0.1, "b": 0.1}, 3)
    )
    assert null["winner"] is None and not null["srm"]["mismatch"]


def test_the_terminal_report_shows_verdicts_srm_and_the_winner() -> None:
    units = _units({"a": 3000, "b": 3000}, {"a": 0.1, "b": 0.15}, 2)
    text = render_report(build_report(SPEC, {"a": 50, "b": 50}, units))
    assert "SRM: ok" in text and "BETTER" in text and "winner: b" in text
    skewed = _units({"a": 5000, "b": 5400}, {"a": 0.1, "b": 0.1}, 1)
    text = render_report(build_report(SPEC, {"a": 50, "b": 50}, skewed))
    assert "MISMATCH" in text and "winner: none" in text
