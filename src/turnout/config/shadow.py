"""The config of shadow deployments: variants that get a copy of live requests.

A shadow is a variant bundle (upstream, model, parameters, system prompt) whose
answers are never returned: each mirrored request's shadow answer is compared
with the answer the user got, by the shadow's evaluators. Which requests are
mirrored: ``percent`` of those that pass ``match``, chosen by hashing the route's
stickiness key (a user is mirrored on every request or on none) or at random.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from turnout.config.attributes import parse_template
from turnout.config.base import Name, Strict
from turnout.config.match import Match
from turnout.config.resilience import not_reserved

__all__ = ["EvaluatorSpec", "Shadow", "ShadowSamples", "SystemPrompt"]


class SystemPrompt(Strict):
    """Replace, prepend to or append to the system prompt (chat requests only)."""

    mode: Literal["replace", "prepend", "append"] = "replace"
    template: str = Field(description="text with {{attr}}, {{route}}, {{variant}}, {{model}}")

    @field_validator("template")
    @classmethod
    def _parses(cls, v: str) -> str:
        parse_template(v)
        return v


EvaluatorType = Literal[
    "exact", "similarity", "json_valid", "length_ratio", "json_schema", "python", "llm_judge"
]
# type -> fields it needs, fields it may have (besides type and name)
_EVALUATOR_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "json_schema": (frozenset({"json_schema"}), frozenset()),
    "python": (frozenset({"function"}), frozenset()),
    "llm_judge": (frozenset({"upstream"}), frozenset({"model", "max_tokens"})),
}
_OPTIONAL = ("json_schema", "function", "upstream", "model", "max_tokens")


class EvaluatorSpec(Strict):
    """One comparison of a shadow answer with the live one; scores are in [0, 1]."""

    type: EvaluatorType
    name: Name | None = Field(None, description="defaults to the type (python: the function)")
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="json_schema: the JSON Schema the shadow must meet"
    )
    function: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="python: module:function called as f(request_body, live_text, shadow_text)",
    )
    upstream: Name | None = Field(None, description="llm_judge: the upstream that judges")
    model: str | None = Field(None, min_length=1, description="llm_judge: the judging model")
    max_tokens: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _fields_of_type(self) -> EvaluatorSpec:
        required, optional = _EVALUATOR_FIELDS.get(self.type, (frozenset(), frozenset()))
        given = {f for f in _OPTIONAL if getattr(self, f) is not None}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"type {self.type!r} needs {', '.join(_shown(missing))}")
        extra = sorted(given - required - optional)
        if extra:
            raise ValueError(f"type {self.type!r} takes no {', '.join(_shown(extra))}")
        return self

    @property
    def label(self) -> str:
        """The name its scores are reported under."""
        if self.name:
            return self.name
        if self.type == "python" and self.function:
            return self.function.rpartition(":")[2].rpartition(".")[2]
        return self.type

    def loader_spec(self) -> dict[str, Any]:
        """The mapping ``shadow.evaluators.load_evaluator`` takes (without ``upstream``:
        the data plane turns it into the judge's ``ask``)."""
        out: dict[str, Any] = {"type": self.type, "name": self.label}
        if self.json_schema is not None:
            out["schema"] = self.json_schema
        for field in ("function", "model", "max_tokens"):
            value = getattr(self, field)
            if value is not None:
                out[field] = value
        return out


def _shown(fields: list[str]) -> list[str]:
    return ["schema" if f == "json_schema" else f for f in fields]


def _default_evaluators() -> list[EvaluatorSpec]:
    return [
        EvaluatorSpec(type="exact"),
        EvaluatorSpec(type="similarity"),
        EvaluatorSpec(type="json_valid"),
        EvaluatorSpec(type="length_ratio"),
    ]


class ShadowSamples(Strict):
    """Disagreeing pairs kept for review (``turnout shadow diff``)."""

    keep: int = Field(
        100, ge=0, le=100_000, description="pairs kept per shadow, newest; 0 keeps none"
    )
    on: str = Field("similarity", description="the evaluator that decides whether a pair disagrees")
    below: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a pair disagrees when the `on` score is below this, or when exactly"
        " one of the two calls failed",
    )
    redact: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function f(kind, body) -> body applied before storing;"
        " defaults to the route's log_bodies.redact",
    )


class Shadow(Strict):
    name: Name
    upstream: Name = Field(description="one upstream: a shadow call is never retried elsewhere")
    model: str | None = Field(None, description="model name sent upstream instead of the client's")
    params: dict[str, Any] = Field(
        default_factory=dict, description="body fields set on every mirrored request"
    )
    system_prompt: SystemPrompt | None = None
    percent: float = Field(
        100.0, ge=0, le=100, description="share of the matching requests that are mirrored"
    )
    by: Literal["key", "random"] = Field(
        "key",
        description="key: decided by the route's stickiness key (random without one);"
        " random: per request",
    )
    match: Match | None = Field(None, description="only requests matching this are mirrored")
    max_concurrency: int = Field(
        8, ge=1, le=10_000, description="shadow calls in flight at once, per process"
    )
    queue: int = Field(
        100, ge=0, le=1_000_000, description="mirrored requests waiting for a slot; more drop"
    )
    evaluators: list[EvaluatorSpec] = Field(default_factory=_default_evaluators)
    samples: ShadowSamples = ShadowSamples()

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        return not_reserved(v)

    @model_validator(mode="after")
    def _evaluator_names(self) -> Shadow:
        labels = [e.label for e in self.evaluators]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ValueError(f"evaluator names must differ; {twice} given twice (set `name`)")
        if self.samples.keep and self.samples.on not in labels:
            raise ValueError(
                f"samples.on: {self.samples.on!r} is not one of this shadow's evaluators {labels}"
            )
        return self
