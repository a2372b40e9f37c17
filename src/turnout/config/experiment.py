"""The config of A/B experiments: a route's variants compared on declared metrics.

An experiment reads the traffic a route already splits: its variants are the
route's, assignment is the route's stickiness hash (the randomisation unit is the
user or session the key names), and a route's ``salt`` keeps its split
independent of every other route's. The experiment adds what to judge (one
primary metric, guardrails), the plan (minimum detectable effect, power) and a
time span.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from turnout.config.base import Name, Strict
from turnout.config.rollout import metric_defaults

__all__ = ["ExperimentMetric", "ExperimentSpec"]


class ExperimentMetric(Strict):
    metric: str = Field(description="latency_ms, ttft_ms, cost_usd, error_rate, feedback:<name>...")
    goal: Literal["increase", "decrease"] | None = Field(
        None, description="which way is better; default: by metric (latency: decrease)"
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        metric_defaults(v)
        return v

    @property
    def better(self) -> Literal["increase", "decrease"]:
        if self.goal is not None:
            return self.goal
        _, bad = metric_defaults(self.metric)
        return "increase" if bad == "decrease" else "decrease"


class ExperimentSpec(Strict):
    name: Name
    route: Name
    control: Name = Field(description="the variant the others are compared with")
    primary: ExperimentMetric
    guardrails: list[ExperimentMetric] = Field(default_factory=list)
    analysis: Literal["sequential", "fixed", "bayesian"] = Field(
        "sequential",
        description="sequential (always valid, safe to look daily), fixed (planned n),"
        " bayesian (probability to beat control)",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5)
    mde: float = Field(0.05, gt=0, description="relative minimum detectable effect (0.05 = 5%)")
    power: float = Field(0.8, gt=0.5, lt=1)
    start: float | None = Field(None, description="unix time; default: the log's beginning")
    stop: float | None = Field(None, description="unix time; default: now")

    @model_validator(mode="after")
    def _span(self) -> ExperimentSpec:
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("stop must be after start")
        names = [m.metric for m in (self.primary, *self.guardrails)]
        if len(set(names)) != len(names):
            raise ValueError("a metric is listed twice (primary and guardrails)")
        return self
