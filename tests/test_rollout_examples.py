"""The rollout examples in examples/rollouts/ are valid configs, each with one rollout
whose route, stable and candidate exist, and they are the shape docs/rollouts.md shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.config import load_config
from turnout.config.rollout import AnalysisStep, PauseStep, WeightStep

ROOT = Path(__file__).resolve().parents[1]
ROLLOUTS = ROOT / "examples" / "rollouts"
NAMES = ("canary", "blue-green", "phased-migration")


def test_every_example_is_listed() -> None:
    assert sorted(p.stem for p in ROLLOUTS.glob("*.y*ml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_has_one_rollout_on_an_existing_route_and_variants(name: str) -> None:
    config = load_config(ROLLOUTS / f"{name}.yaml")
    assert len(config.rollouts) == 1
    spec = config.rollouts[0]
    routes = {r.name: r for r in config.routes}
    assert spec.route in routes
    variants = {v.name for v in routes[spec.route].variants}
    assert spec.stable in variants
    assert spec.candidate in variants
    assert spec.stable != spec.candidate
    # Upstreams point at the local simulators of docs/simulator.md.
    assert all(u.base_url.startswith("http://127.0.0.1:910") for u in config.upstreams)


def _weights(name: str) -> list[float]:
    spec = load_config(ROLLOUTS / f"{name}.yaml").rollouts[0]
    return [s.weight for s in spec.steps if isinstance(s, WeightStep)]


def test_canary_ramps_with_an_analysis_before_each_increase() -> None:
    spec = load_config(ROLLOUTS / "canary.yaml").rollouts[0]
    assert _weights("canary") == [5, 25, 50, 100]
    kinds = [type(s).__name__ for s in spec.steps]
    assert kinds == ["WeightStep", "AnalysisStep"] * 3 + ["WeightStep"]
    metrics = [m.metric for m in spec.analysis.metrics]
    assert metrics[:3] == ["error_rate", "latency_ms", "ttft_ms"]
    assert any(m.startswith("feedback:") for m in metrics)


def test_blue_green_previews_then_switches_with_a_rollback_window() -> None:
    spec = load_config(ROLLOUTS / "blue-green.yaml").rollouts[0]
    kinds = [type(s).__name__ for s in spec.steps]
    assert kinds == ["PreviewStep", "AnalysisStep", "WeightStep"]
    assert _weights("blue-green") == [100]
    assert spec.rollback_window is not None


def test_phased_migration_takes_two_weeks_with_background_analysis() -> None:
    spec = load_config(ROLLOUTS / "phased-migration.yaml").rollouts[0]
    assert _weights("phased-migration") == [10, 25, 50, 100]
    waits = [s.pause.duration for s in spec.steps if isinstance(s, PauseStep)]
    gates = [s.analysis.window for s in spec.steps if isinstance(s, AnalysisStep)]
    assert all(w is not None and w >= 86400 for w in waits)
    assert sum(w or 0 for w in waits) + sum(g or spec.analysis.window for g in gates) == 14 * 86400
    assert spec.analysis.background
    assert all(m.min_samples > 30 for m in spec.analysis.metrics)
