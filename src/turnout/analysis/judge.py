"""The canary judge: stable against candidate, metric by metric, then overall (pure).

In the spirit of Netflix's automated canary analysis (Kayenta). The controller sends
stable and candidate observations taken over the same window -- the two versions
side by side, never the candidate against the past -- so a busy hour or a slow
upstream weighs on both alike, and only their difference is judged.

Per metric (continuous samples: Mann-Whitney U and the Hodges-Lehmann shift; rates:
a two-proportion z test and the risk ratio):

* Fewer than ``min_samples`` observations on either side (or none at all, or a
  metric missing from the observations): NO_DATA, never FAIL.
* FAIL when the difference is significant (two-sided p < alpha) AND the point estimate
  of the effect lies beyond the tolerance in a bad direction (for rates, also by more
  than ``min_absolute`` in absolute rate). Otherwise PASS.

The effect is a relative change (0.22 = 22% up): the Hodges-Lehmann shift of the
log values for continuous metrics with ``relative=True`` (a ratio, fitting latency,
TTFT, tokens and cost), and ``candidate_rate / stable_rate - 1`` for rates. With
``relative=False`` (scores that may be 0 or negative) the effect is the shift in the
metric's own units and so is the tolerance. Samples must be finite, and positive
when ``relative``: anything else is a recording bug and raises ValueError.

Why the point estimate, not "the whole interval beyond the tolerance": that stricter
rule asks for proof the regression exceeds the tolerance, so at canary sample sizes a
candidate 20% slower with a 10% tolerance mostly passes. Failing a canary is cheap
(traffic returns to stable); promoting a regression is not. Significance guards
against noise: with no true difference a metric fails at most at rate alpha (alpha/2
for a one-sided direction), and a tolerance > 0 lowers that further. The point
estimate guards against the opposite error at large n, where a 5% shift is
significant but within a 10% tolerance, and passes. The interval is still reported.

``min_absolute`` is for rare events: error rate 0.1% -> 0.2% is +100% relative but
one extra error in a thousand requests; ``min_absolute=0.005`` lets that pass while
2% -> 4% still fails. It defaults to 0.

Overall (``judge``), as Kayenta does: the score is the weighted share of judged
metrics that passed, times 100; NO_DATA metrics are left out of it. A FAIL on a
critical metric makes the verdict FAIL at once (``aborted_by`` names it), whatever
the score. Otherwise NO_DATA when no metric could be judged or when a critical
metric has no data -- the controller then extends the step rather than promote a
candidate whose critical metrics are unseen. Otherwise PASS at ``pass_score`` and
above, MARGINAL at ``marginal_score`` and above, FAIL below; the score is 0 when
nothing was judged. Observations for names no spec mentions are ignored.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from turnout.analysis.proportions import compare_proportions
from turnout.analysis.ranks import mann_whitney

__all__ = [
    "Counts",
    "Direction",
    "Judgement",
    "MetricKind",
    "MetricSpec",
    "MetricVerdict",
    "Observation",
    "Samples",
    "Status",
    "Thresholds",
    "Verdict",
    "judge",
    "judge_metric",
]

JsonValue = str | int | float | bool | None


class Direction(StrEnum):
    INCREASE = "increase"  # an increase is bad (latency, errors, cost)
    DECREASE = "decrease"  # a decrease is bad (quality score, thumbs up)
    EITHER = "either"


class MetricKind(StrEnum):
    CONTINUOUS = "continuous"
    RATE = "rate"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NO_DATA = "no_data"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: MetricKind
    direction: Direction = Direction.INCREASE
    tolerance: float = 0.1
    min_samples: int = 50
    critical: bool = False
    weight: float = 1.0
    alpha: float = 0.05
    relative: bool = True  # continuous only: compare on the log scale
    min_absolute: float = 0.0  # rates only: absolute rate change needed to fail

    def __post_init__(self) -> None:
        where = f"metric {self.name!r}"
        if not self.name:
            raise ValueError("metric name must not be empty")
        # Plain strings from a config are accepted and turned into the enums.
        for attr, kind in (("kind", MetricKind), ("direction", Direction)):
            value = getattr(self, attr)
            if value not in tuple(kind):
                allowed = ", ".join(kind)
                raise ValueError(f"{where}: {attr} must be one of {allowed}, got {value!r}")
            object.__setattr__(self, attr, kind(value))
        if not self.tolerance >= 0.0 or math.isinf(self.tolerance):
            raise ValueError(f"{where}: tolerance must be finite and >= 0, got {self.tolerance!r}")
        if self.min_samples < 1:
            raise ValueError(f"{where}: min_samples must be >= 1, got {self.min_samples!r}")
        if not self.weight > 0.0 or math.isinf(self.weight):
            raise ValueError(f"{where}: weight must be finite and > 0, got {self.weight!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"{where}: alpha must be strictly in (0, 1), got {self.alpha!r}")
        if not 0.0 <= self.min_absolute <= 1.0:
            raise ValueError(f"{where}: min_absolute must be in [0, 1], got {self.min_absolute!r}")


@dataclass(frozen=True, slots=True)
class Samples:
    """Per-request values of a continuous metric, both sides over the same window."""

    stable: Sequence[float]
    candidate: Sequence[float]


@dataclass(frozen=True, slots=True)
class Counts:
    """Events (errors of a class, feedback events) out of requests, per side."""

    stable_hits: int
    stable_n: int
    candidate_hits: int
    candidate_n: int

    def __post_init__(self) -> None:
        for side, hits, n in (
            ("stable", self.stable_hits, self.stable_n),
            ("candidate", self.candidate_hits, self.candidate_n),
        ):
            if n < 0 or not 0 <= hits <= n:
                raise ValueError(f"{side}: need 0 <= hits <= n, got {hits!r} of {n!r}")


Observation = Samples | Counts


@dataclass(frozen=True, slots=True)
class Thresholds:
    pass_score: float = 95.0
    marginal_score: float = 75.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.marginal_score <= self.pass_score <= 100.0:
            raise ValueError(
                "need 0 <= marginal_score <= pass_score <= 100, got "
                f"marginal {self.marginal_score!r}, pass {self.pass_score!r}"
            )


def _json_float(value: float | None) -> float | None:
    # Strict JSON has no inf or nan: an unbounded interval end is written as null.
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class MetricVerdict:
    """One metric's outcome and the evidence for it. ``stable`` and ``candidate`` are
    medians (continuous) or rates; ``effect`` is a relative change unless ``relative``
    is False; ``effect_low``/``effect_high`` its (1 - alpha) interval."""

    name: str
    kind: MetricKind
    status: Status
    stable_n: int
    candidate_n: int
    reason: str
    stable: float | None = None
    candidate: float | None = None
    effect: float | None = None
    effect_low: float | None = None
    effect_high: float | None = None
    p_value: float | None = None
    relative: bool = True
    tolerance: float = 0.0
    alpha: float = 0.05
    critical: bool = False
    weight: float = 1.0

    def to_dict(self) -> dict[str, JsonValue]:
        """Plain JSON values; infinite interval ends become None."""
        out: dict[str, JsonValue] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StrEnum):
                value = str(value)
            elif isinstance(value, float):
                value = _json_float(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    score: float
    metrics: tuple[MetricVerdict, ...] = field(default_factory=tuple)
    aborted_by: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": str(self.verdict),
            "score": self.score,
            "aborted_by": self.aborted_by,
            "metrics": [m.to_dict() for m in self.metrics],
        }


def _beyond(effect: float, tolerance: float, direction: Direction) -> bool:
    up = effect > tolerance
    down = effect < -tolerance
    if direction is Direction.INCREASE:
        return up
    if direction is Direction.DECREASE:
        return down
    return up or down


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def _conclusion(
    spec: MetricSpec, effect: float, p: float, beyond: bool, tol: str
) -> tuple[Status, str]:
    if p >= spec.alpha:
        return Status.PASS, f"not significant at alpha {spec.alpha:g}"
    if beyond:
        return Status.FAIL, f"beyond tolerance {tol} ({spec.direction} is bad): regression"
    if _beyond(effect, spec.tolerance, Direction.EITHER):
        return Status.PASS, f"significant but in the good direction ({spec.direction} is bad)"
    return Status.PASS, f"significant but within tolerance {tol}"


def _no_data(spec: MetricSpec, stable_n: int, candidate_n: int, why: str) -> MetricVerdict:
    # The base every verdict is made from: judged ones replace status and evidence.
    return MetricVerdict(
        name=spec.name,
        kind=spec.kind,
        status=Status.NO_DATA,
        stable_n=stable_n,
        candidate_n=candidate_n,
        reason=f"{spec.name}: {why}",
        relative=spec.relative or spec.kind is MetricKind.RATE,
        tolerance=spec.tolerance,
        alpha=spec.alpha,
        critical=spec.critical,
        weight=spec.weight,
    )


def _too_few(spec: MetricSpec, stable_n: int, candidate_n: int) -> MetricVerdict | None:
    if stable_n >= spec.min_samples and candidate_n >= spec.min_samples:
        return None
    why = f"too few samples (stable {stable_n}, candidate {candidate_n}; need {spec.min_samples})"
    return _no_data(spec, stable_n, candidate_n, why)


def _judge_samples(spec: MetricSpec, obs: Samples) -> MetricVerdict:
    stable_n, candidate_n = len(obs.stable), len(obs.candidate)
    short = _too_few(spec, stable_n, candidate_n)
    if short is not None:
        return short
    cmp = mann_whitney(obs.stable, obs.candidate, spec.alpha, relative=spec.relative)
    beyond = _beyond(cmp.shift, spec.tolerance, spec.direction)
    conf = f"{100 * (1 - spec.alpha):g}% CI"
    if spec.relative:
        tol = f"{spec.tolerance:.1%}"
        change = f"{_pct(cmp.shift)} ({conf} {_pct(cmp.low)}..{_pct(cmp.high)})"
    else:
        tol = f"{spec.tolerance:g}"
        change = f"shift {cmp.shift:+.4g} ({conf} {cmp.low:+.4g}..{cmp.high:+.4g})"
    status, why = _conclusion(spec, cmp.shift, cmp.p_value, beyond, tol)
    stable_median = statistics.median(obs.stable)
    candidate_median = statistics.median(obs.candidate)
    return replace(
        _no_data(spec, stable_n, candidate_n, ""),
        status=status,
        reason=(
            f"{spec.name} median {stable_median:.4g} -> {candidate_median:.4g}, {change}, "
            f"p={cmp.p_value:.2g}; {why}"
        ),
        stable=stable_median,
        candidate=candidate_median,
        effect=cmp.shift,
        effect_low=cmp.low,
        effect_high=cmp.high,
        p_value=cmp.p_value,
    )


def _judge_counts(spec: MetricSpec, obs: Counts) -> MetricVerdict:
    short = _too_few(spec, obs.stable_n, obs.candidate_n)
    if short is not None:
        return short
    cmp = compare_proportions(
        obs.stable_hits, obs.stable_n, obs.candidate_hits, obs.candidate_n, spec.alpha
    )
    beyond = _beyond(cmp.relative, spec.tolerance, spec.direction)
    floor_note = ""
    if beyond and abs(cmp.difference) <= spec.min_absolute:
        beyond = False
        floor_note = f"absolute change {abs(cmp.difference):.3%} <= {spec.min_absolute:.3%}"
    conf = f"{100 * (1 - spec.alpha):g}% CI"
    status, why = _conclusion(spec, cmp.relative, cmp.p_value, beyond, f"{spec.tolerance:.1%}")
    if floor_note and status is Status.PASS and cmp.p_value < spec.alpha:
        why = f"significant but small: {floor_note}"
    return replace(
        _no_data(spec, obs.stable_n, obs.candidate_n, ""),
        status=status,
        reason=(
            f"{spec.name} {cmp.control_rate:.3%} -> {cmp.treatment_rate:.3%}, "
            f"{_pct(cmp.relative)} relative ({conf} {_pct(cmp.relative_low)}.."
            f"{_pct(cmp.relative_high)}), p={cmp.p_value:.2g}; {why}"
        ),
        stable=cmp.control_rate,
        candidate=cmp.treatment_rate,
        effect=cmp.relative,
        effect_low=cmp.relative_low,
        effect_high=cmp.relative_high,
        p_value=cmp.p_value,
    )


def _check_observation(spec: MetricSpec, obs: object) -> None:
    wanted = Samples if spec.kind is MetricKind.CONTINUOUS else Counts
    if not isinstance(obs, wanted):
        raise ValueError(
            f"metric {spec.name!r} is {spec.kind}: needs a {wanted.__name__} observation, "
            f"got {type(obs).__name__}"
        )


def judge_metric(spec: MetricSpec, observation: Observation | None) -> MetricVerdict:
    """One metric's verdict; ``None`` means nothing was observed (NO_DATA)."""
    if observation is None:
        return _no_data(spec, 0, 0, "no observations")
    _check_observation(spec, observation)
    if isinstance(observation, Counts):
        return _judge_counts(spec, observation)
    return _judge_samples(spec, observation)


def judge(
    specs: Sequence[MetricSpec],
    observations: Mapping[str, Observation],
    thresholds: Thresholds = Thresholds(),  # frozen: one shared default is safe
) -> Judgement:
    """Judge every metric in ``specs`` and combine them into one verdict."""
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate metric names: {', '.join(duplicates)}")
    # Check every observation's type before judging any, so a bad call fails whole.
    for spec in specs:
        if spec.name in observations:
            _check_observation(spec, observations[spec.name])
    verdicts = tuple(judge_metric(s, observations.get(s.name)) for s in specs)

    judged = [v for v in verdicts if v.status is not Status.NO_DATA]
    total = sum(v.weight for v in judged)
    passed = sum(v.weight for v in judged if v.status is Status.PASS)
    # min(): float sums of a subset can come out a rounding step above the whole.
    score = min(100.0, 100.0 * (passed / total)) if total > 0 else 0.0

    aborted_by = next((v.name for v in verdicts if v.critical and v.status is Status.FAIL), None)
    if aborted_by is not None:
        verdict = Verdict.FAIL
    elif not judged or any(v.critical and v.status is Status.NO_DATA for v in verdicts):
        verdict = Verdict.NO_DATA
    elif score >= thresholds.pass_score:
        verdict = Verdict.PASS
    elif score >= thresholds.marginal_score:
        verdict = Verdict.MARGINAL
    else:
        verdict = Verdict.FAIL
    return Judgement(verdict=verdict, score=score, metrics=verdicts, aborted_by=aborted_by)
