"""The config of progressive delivery: rollouts, their steps and their analysis.

A rollout moves one route's traffic from a ``stable`` variant to a ``candidate``
by steps: set the candidate's weight, pause (for a time, or until a person
resumes), judge the candidate against stable over a window, or send a segment
of requests (a preview) to the candidate. When the last step passes, the
candidate gets all the traffic the two had; a failed analysis gives it all back
to stable. Durations are seconds, or text such as ``30s``, ``5m``, ``2h``, ``3d``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from turnout.config.base import Name, Strict
from turnout.config.match import Match
from turnout.config.resilience import ALL_FAILURES

__all__ = [
    "Analysis",
    "AnalysisStep",
    "MetricCheck",
    "PauseStep",
    "PreviewStep",
    "RolloutSpec",
    "Segment",
    "Step",
    "Webhook",
    "WeightStep",
    "metric_defaults",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def _seconds(v: Any) -> Any:
    if isinstance(v, str):
        found = _DURATION.match(v)
        if found is None:
            raise ValueError(f"{v!r} is not a duration: use seconds, or e.g. 30s, 5m, 2h, 3d")
        return float(found[1]) * _UNITS[found[2]]
    return v


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]

# The metrics a rollout can judge, with what an increase or a decrease means by
# default. ``error_rate`` counts every failure the client saw except its own 4xx;
# ``error_rate:<class>`` one class; ``feedback:<name>`` the values of one feedback name.
_CONTINUOUS = {"latency_ms": "increase", "ttft_ms": "increase", "output_tokens": "either"}
_CONTINUOUS |= {"input_tokens": "either", "cost_usd": "increase"}
ERROR_CLASSES = ("client_4xx", *ALL_FAILURES)
Direction = Literal["increase", "decrease", "either"]


def metric_defaults(metric: str) -> tuple[Literal["continuous", "rate"], Direction]:
    """(kind, bad direction) of a metric name; ValueError for an unknown one."""
    if metric in _CONTINUOUS:
        return "continuous", _CONTINUOUS[metric]  # type: ignore[return-value]
    if metric == "error_rate":
        return "rate", "increase"
    kind, _, arg = metric.partition(":")
    if kind == "error_rate" and arg in ERROR_CLASSES:
        return "rate", "increase"
    if kind == "feedback" and arg:
        return "continuous", "decrease"
    raise ValueError(
        f"unknown metric {metric!r}: use one of {sorted(_CONTINUOUS)}, error_rate,"
        f" error_rate:<{'|'.join(ERROR_CLASSES)}> or feedback:<name>"
    )


class MetricCheck(Strict):
    """One metric judged candidate against stable over the same window."""

    metric: str = Field(description="latency_ms, ttft_ms, cost_usd, error_rate, feedback:<name>...")
    direction: Direction | None = Field(
        None, description="which change is bad; default: by metric (latency: increase)"
    )
    tolerance: float = Field(
        0.1, ge=0, description="relative change allowed before it counts (0.1 = 10%)"
    )
    min_samples: int = Field(30, ge=1, description="per variant; fewer is 'no data', never a fail")
    critical: bool = Field(False, description="a failure aborts at once, whatever the score")
    weight: float = Field(1.0, gt=0, description="share in the score")
    kind: Literal["continuous", "rate"] | None = Field(
        None, description="feedback only: 'rate' judges the share of values > 0"
    )
    min_absolute: float = Field(
        0.0, ge=0, le=1, description="rates: the absolute change also needed to fail (0.005)"
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        metric_defaults(v)
        return v

    @model_validator(mode="after")
    def _kind_for_feedback_only(self) -> MetricCheck:
        if self.kind is not None and not self.metric.startswith("feedback:"):
            raise ValueError("kind is for feedback:<name> metrics; the others have a fixed kind")
        return self


def _default_metrics() -> list[MetricCheck]:
    return [
        MetricCheck(metric="error_rate", critical=True),
        MetricCheck(metric="latency_ms"),
        MetricCheck(metric="ttft_ms"),
    ]


class Analysis(Strict):
    """How a candidate is judged; a rollout's defaults, which a step can override."""

    window: Duration = Field(60.0, description="traffic judged per analysis")
    metrics: list[MetricCheck] = Field(default_factory=_default_metrics, min_length=1)
    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level of each test")
    pass_score: float = Field(95.0, ge=0, le=100)
    marginal_score: float = Field(75.0, ge=0, le=100)
    failure_limit: int = Field(
        1, ge=1, description="consecutive failed analyses that abort (a critical metric: one)"
    )
    max_extensions: int = Field(
        3, ge=0, description="too little data extends the window this often, then pauses"
    )
    background: bool = Field(True, description="also judge every window during pauses")

    @model_validator(mode="after")
    def _scores(self) -> Analysis:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not be above pass_score")
        names = [m.metric for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric(s) {dupes} listed twice")
        return self


class WeightStep(Strict):
    weight: float = Field(gt=0, le=100, description="the candidate's percent of the pair")


class Pause(Strict):
    duration: Duration | None = Field(None, description="absent: until a person resumes")


class PauseStep(Strict):
    pause: Pause


class AnalysisOverride(Strict):
    window: Duration | None = None
    failure_limit: int | None = Field(None, ge=1)


class AnalysisStep(Strict):
    analysis: AnalysisOverride = AnalysisOverride()


class PreviewStep(Strict):
    preview: Match = Field(description="requests matching this go to the candidate")


Step = WeightStep | PauseStep | AnalysisStep | PreviewStep


class Webhook(Strict):
    url: str = Field(description="receives a signed JSON POST on every transition")
    secret_env: str | None = Field(None, description="environment variable with the secret")
    secret_file: str | None = Field(None, description="file with the secret")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> Webhook:
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("give secret_env or secret_file, not both")
        return self


class RolloutSpec(Strict):
    """A rollout of ``candidate`` over ``stable`` on ``route``."""

    name: Name
    route: Name
    stable: Name
    candidate: Name
    steps: list[Step] = Field(min_length=1)
    analysis: Analysis = Analysis()
    rollback_window: Duration | None = Field(
        None,
        description="after promotion, how long an abort still switches back to stable at once",
    )
    webhooks: list[Webhook] = Field(default_factory=list)

    @model_validator(mode="after")
    def _two(self) -> RolloutSpec:
        if self.stable == self.candidate:
            raise ValueError("stable and candidate must be different variants")
        return self


class Segment(Strict):
    """Requests matching ``match`` go to ``variant``, whatever the weights."""

    name: Name | None = Field(None, description="who added it; a rollout names its preview")
    match: Match
    variant: Name
