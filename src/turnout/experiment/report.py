"""An experiment's report from its units (pure): SRM, effects, verdicts, winner.

The unit of analysis is the randomisation unit: one stickiness key (stored as its
keyed hash). Each unit contributes one value per metric, the mean over its
requests, so a heavy user weighs as one user and the arms' observations are
independent, as the tests assume. Units seen on more than one variant (a changed
weight, a forced variant) are left out and counted.

Every variant is compared with the control on every metric three ways: the
always-valid mSPRT (the default: safe to look at daily), Welch's fixed-horizon t
test (valid at the planned sample size), and the Bayesian probability to beat
control. ``spec.analysis`` names which one gives the verdicts. A verdict is
``better`` or ``worse`` (significant in the direction of the metric's goal, or
against it) or ``inconclusive``. The winner is the variant whose primary metric is
better than control with no guardrail worse; of several, the largest primary
effect; none (control stays) otherwise. A sample ratio mismatch (p < 0.001) makes
every number suspect, so the report then names no winner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from turnout.analysis.bayes import bayes_means
from turnout.analysis.fixed import MeanStats, sample_size_per_arm, welch
from turnout.analysis.sequential import msprt
from turnout.analysis.srm import sample_ratio_mismatch
from turnout.config.experiment import ExperimentMetric, ExperimentSpec

__all__ = ["Unit", "build_report"]

_BAYES_SURE = 0.95  # probability to beat control that counts as a verdict


@dataclass(frozen=True, slots=True)
class Unit:
    key: str  # the stickiness key's hash
    variants: tuple[str, ...]  # every variant the unit was served by
    requests: int
    values: Mapping[str, float | None]  # metric -> the unit's value (None: not observed)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _compare(
    spec: ExperimentSpec, metric: ExperimentMetric, control: MeanStats, arm: MeanStats
) -> dict[str, Any]:
    if control.n < 2 or arm.n < 2:
        return {"verdict": "no_data", "n_control": control.n, "n_variant": arm.n}
    if control.variance <= 0 and arm.variance <= 0:  # e.g. no errors on either side
        same = control.mean == arm.mean
        return {
            "verdict": "inconclusive"
            if same
            else (
                "better" if (arm.mean > control.mean) == (metric.better == "increase") else "worse"
            ),
            "n_control": control.n,
            "n_variant": arm.n,
            "control_mean": control.mean,
            "variant_mean": arm.mean,
        }
    fixed = welch(control, arm, spec.alpha)
    sd = math.sqrt(control.variance) if control.variance > 0 else 0.0
    planned = (
        sample_size_per_arm(abs(control.mean), spec.mde, spec.alpha, spec.power, kind="mean", sd=sd)
        if sd > 0 and control.mean != 0
        else None
    )
    seq = msprt(control, arm, spec.alpha, **({"planned_n": planned} if planned else {}))
    bayes = bayes_means(control, arm) if control.variance > 0 or arm.variance > 0 else None
    up = metric.better == "increase"
    if spec.analysis == "sequential":
        significant, diff = seq.significant, seq.difference
    elif spec.analysis == "fixed":
        significant, diff = fixed.significant, fixed.difference
    else:
        p = bayes.prob_treatment_better if bayes else 0.5
        better_p = p if up else 1.0 - p
        significant, diff = (
            better_p >= _BAYES_SURE or better_p <= 1 - _BAYES_SURE,
            (arm.mean - control.mean),
        )
    verdict = "inconclusive"
    if significant and diff != 0:
        verdict = "better" if (diff > 0) == up else "worse"
    return {
        "verdict": verdict,
        "n_control": control.n,
        "n_variant": arm.n,
        "control_mean": control.mean,
        "variant_mean": arm.mean,
        "difference": diff,
        "relative": _finite(fixed.relative),
        "sequential": {
            "low": seq.cs_low,
            "high": seq.cs_high,
            "relative_low": _finite(seq.relative_low),
            "relative_high": _finite(seq.relative_high),
            "p_value": seq.p_value,
        },
        "fixed": {
            "low": fixed.low,
            "high": fixed.high,
            "relative_low": _finite(fixed.relative_low),
            "relative_high": _finite(fixed.relative_high),
            "p_value": fixed.p_value,
            "planned_n": planned,
        },
        "bayesian": None
        if bayes is None
        else {
            "prob_better": bayes.prob_treatment_better if up else 1 - bayes.prob_treatment_better,
            "expected_loss": bayes.expected_loss_treatment if up else bayes.expected_loss_control,
        },
    }


def build_report(
    spec: ExperimentSpec, weights: Mapping[str, float], units: Sequence[Unit]
) -> dict[str, Any]:
    """The whole report; ``weights`` are the route's live weights by variant."""
    metrics = [spec.primary, *spec.guardrails]
    clean = [u for u in units if len(u.variants) == 1]
    excluded = len(units) - len(clean)
    counts = {name: 0 for name in weights}
    stats: dict[str, dict[str, MeanStats]] = {name: {} for name in weights}
    for u in clean:
        arm = u.variants[0]
        counts[arm] = counts.get(arm, 0) + 1
        per = stats.setdefault(arm, {})
        for m in metrics:
            value = u.values.get(m.metric)
            if value is None:
                continue
            prev = per.get(m.metric, MeanStats(0, 0.0, 0.0))
            per[m.metric] = prev + MeanStats(1, value, value * value)
    srm = sample_ratio_mismatch(counts, weights)
    empty = MeanStats(0, 0.0, 0.0)
    comparisons: dict[str, dict[str, Any]] = {}
    control = stats.get(spec.control, {})
    for arm, per in stats.items():
        if arm == spec.control:
            continue
        comparisons[arm] = {
            m.metric: _compare(spec, m, control.get(m.metric, empty), per.get(m.metric, empty))
            for m in metrics
        }
    winner = None
    best = 0.0
    if not srm.mismatch:
        for arm, by_metric in comparisons.items():
            primary = by_metric[spec.primary.metric]
            if primary["verdict"] != "better":
                continue
            if any(by_metric[g.metric]["verdict"] == "worse" for g in spec.guardrails):
                continue
            effect = abs(primary.get("relative") or 0.0)
            if winner is None or effect > best:
                winner, best = arm, effect
    return {
        "name": spec.name,
        "route": spec.route,
        "control": spec.control,
        "analysis": spec.analysis,
        "primary": spec.primary.metric,
        "guardrails": [g.metric for g in spec.guardrails],
        "units": {"analysed": len(clean), "excluded_multiple_variants": excluded},
        "srm": {
            "p_value": srm.p_value,
            "mismatch": srm.mismatch,
            "arms": {
                a.arm: {
                    "units": a.observed,
                    "share": a.observed_share,
                    "expected": a.expected_share,
                }
                for a in srm.arms
            },
        },
        "arms": {
            arm: {"units": counts.get(arm, 0), **{m: s.mean for m, s in per.items() if s.n}}
            for arm, per in stats.items()
        },
        "comparisons": comparisons,
        "winner": winner,
    }
