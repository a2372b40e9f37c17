"""What ``turnout rollout status`` and ``GET /admin/rollouts/NAME`` show (pure).

The step and what it waits for, the time left, the route's weights as the live
config has them, the latest per-metric verdicts with the numbers behind them,
and the recent history.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from turnout.config.rollout import (
    AnalysisStep,
    PauseStep,
    PreviewStep,
    RolloutSpec,
    Step,
    WeightStep,
)
from turnout.rollout.machine import Phase, RolloutState
from turnout.store.rollouts import RolloutEvent, StoredRollout

__all__ = ["describe_step", "status_view"]


def describe_step(step: Step) -> str:
    if isinstance(step, WeightStep):
        return f"weight {step.weight:g}%"
    if isinstance(step, PreviewStep):
        return "preview segment"
    if isinstance(step, PauseStep):
        d = step.pause.duration
        return "pause until resumed" if d is None else f"pause {d:g}s"
    assert isinstance(step, AnalysisStep)
    return "analysis" + (f" ({step.analysis.window:g}s)" if step.analysis.window else "")


def _weights(document: dict[str, Any], route: str) -> dict[str, float]:
    for r in document.get("routes", []):
        if r.get("name") == route:
            return {v["name"]: float(v.get("weight") or 0.0) for v in r.get("variants", [])}
    return {}


def _time_left(spec: RolloutSpec, state: RolloutState, now: float) -> float | None:
    if state.phase is Phase.PROMOTED and state.next_check is not None:
        return max(0.0, state.next_check - now)
    if state.phase is not Phase.PROGRESSING or state.step >= len(spec.steps):
        return None
    step = spec.steps[state.step]
    if isinstance(step, PauseStep):
        d = step.pause.duration
        return None if d is None else max(0.0, state.step_started + d - now)
    if state.next_check is not None:
        return max(0.0, state.next_check - now)
    return None


def status_view(
    stored: StoredRollout,
    events: list[RolloutEvent],
    document: dict[str, Any],
    now: float,
    blocked: str | None = None,
) -> dict[str, Any]:
    spec = RolloutSpec.model_validate(stored.spec)
    state = RolloutState.from_dict(stored.state)
    running = state.phase in (Phase.PROGRESSING, Phase.PAUSED) and state.step < len(spec.steps)
    current = spec.steps[state.step] if running else None
    return {
        "name": spec.name,
        "route": spec.route,
        "stable": spec.stable,
        "candidate": spec.candidate,
        "phase": state.phase.value,
        "paused_reason": state.paused_reason,
        "reason": state.reason,
        "step": state.step,
        "steps": [describe_step(s) for s in spec.steps],
        "current_step": describe_step(current) if current is not None else None,
        "time_left_s": _time_left(spec, state, now),
        "candidate_percent": state.weight,
        "preview": state.preview,
        "weights": _weights(document, spec.route),
        "failures": state.failures,
        "extensions": state.extensions,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "analysis": state.last,
        "blocked": blocked,
        "events": [asdict(e) for e in events],
    }
