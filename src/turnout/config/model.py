"""The config schema: what a user writes in YAML, validated field by field.

Models are frozen and forbid unknown keys, so a typo is an error with its path
rather than a silently ignored setting. Checks that relate several fields
(names unique, upstreams exist, weights add up) live in ``config.checks``, which
reports them all at once with their paths.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from turnout.config.attributes import parse_attr
from turnout.config.base import Name, Strict
from turnout.config.experiment import ExperimentSpec
from turnout.config.match import Match
from turnout.config.resilience import (
    ALL_FAILURES,
    Ejection,
    FailureClass,
    Fallback,
    Region,
    Retry,
    RouteTimeouts,
    Upstreams,
    names,
    not_reserved,
    upstream_list,
)
from turnout.config.rollout import RolloutSpec, Segment
from turnout.config.shadow import Shadow, SystemPrompt


class Timeouts(Strict):
    """Seconds. ``first_byte`` bounds the wait for response headers; ``idle`` the wait
    for each read of the body after them (each stream chunk; a whole non-streamed body)."""

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(60.0, gt=0)
    idle: float = Field(60.0, gt=0)
    total: float = Field(600.0, gt=0)


class Upstream(Strict):
    name: Name
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    api_key_file: str | None = Field(None, description="file holding the API key")
    timeouts: Timeouts = Timeouts()
    labels: dict[str, str] = Field(default_factory=dict, description="e.g. region, provider")
    stream_usage: bool = Field(
        True,
        description="ask for token usage in a stream's final chunk (stream_options.include_usage);"
        " turn off for upstreams that refuse the option",
    )
    ejection: Ejection = Ejection()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> Upstream:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        return self


class Sticky(Strict):
    """Which attribute is hashed to assign a variant, and what to do without it."""

    key: str = "header:x-user-id"
    fallback: list[str] = Field(
        default_factory=list, description="attributes tried in order when key is missing"
    )
    on_missing: Literal["random", "reject"] = Field(
        "random", description="random: a random variant per request; reject: answer 400"
    )

    @field_validator("key")
    @classmethod
    def _attr(cls, v: str) -> str:
        parse_attr(v)
        return v

    @field_validator("fallback")
    @classmethod
    def _attrs(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_attr(item)
        return v


class Variant(Strict):
    name: Name
    upstream: Upstreams = Field(
        description="an upstream, or equivalent upstreams in several regions (tried in the"
        " route's region order)"
    )
    weight: float | None = Field(
        None, ge=0, le=100, description="percent, in steps of 0.01; all of a route's add to 100"
    )
    model: str | None = Field(None, description="model name sent upstream instead of the client's")
    params: dict[str, Any] = Field(
        default_factory=dict, description="body fields set on every request, e.g. temperature"
    )
    system_prompt: SystemPrompt | None = None
    fallbacks: list[Fallback] = Field(
        default_factory=list, description="tried in order when the upstream(s) above fail"
    )
    fallback_on: list[FailureClass] = Field(
        default_factory=lambda: list(ALL_FAILURES),
        description="failure classes that move on to the next upstream of the chain",
    )

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        return not_reserved(v)

    @field_validator("upstream")
    @classmethod
    def _upstreams(cls, v: Upstreams) -> Upstreams:
        return upstream_list(v)

    @property
    def upstreams(self) -> tuple[str, ...]:
        return names(self.upstream)


class BodySampling(Strict):
    """Store some requests' and responses' bodies in the request log, redacted."""

    sample_rate: float = Field(
        0.0, ge=0, le=1, description="share of requests whose bodies are kept"
    )
    redact: str | None = Field(
        None,
        description="module:function called as f(kind, body) -> body before storing;"
        " kind is 'request' or 'response'",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
    )


class Route(Strict):
    name: Name
    match: Match | None = Field(None, description="absent: the route matches every request")
    sticky: Sticky = Sticky()
    salt: str | None = Field(
        None, description="hash salt of this split; defaults to the route name", min_length=1
    )
    allow_override: bool = Field(
        False, description="honour the x-turnout-variant header to force a variant"
    )
    variants: list[Variant] = Field(min_length=1)
    segments: list[Segment] = Field(
        default_factory=list,
        description="checked in order before the weights: a matching request gets the"
        " segment's variant (a preview, a beta group)",
    )
    shadows: list[Shadow] = Field(
        default_factory=list,
        description="variants that get a copy of (some) requests; their answers are"
        " compared with the live ones, never returned",
    )
    log_bodies: BodySampling | None = None
    timeouts: RouteTimeouts = RouteTimeouts()
    deadline: float | None = Field(
        None,
        gt=0,
        description="seconds for all attempts of a request until its response starts;"
        " no retry or fallback begins after it",
    )
    retry: Retry = Retry()
    region: Region | None = Field(None, description="prefer upstreams in the request's region")

    @field_validator("salt")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain NUL (it separates salt from key in the hash)")
        return v


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)


class Price(Strict):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class StoreSettings(Strict):
    path: str = Field(
        "turnout.db", description="SQLite file; relative paths are relative to the config file"
    )


class TracingSettings(Strict):
    """OpenTelemetry traces, one span per request (GenAI semantic conventions)."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = Field(
        "otlp", description="otlp: OTLP over HTTP (needs turnout[otel]); console: stdout"
    )
    endpoint: str | None = Field(
        None, description="OTLP traces URL; default from OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    sample_rate: float = Field(1.0, ge=0, le=1)
    service_name: str = "turnout"


class MetricsSettings(Strict):
    enabled: bool = Field(True, description="per-variant metrics; off only to measure their cost")


class RequestLogSettings(Strict):
    enabled: bool = True
    max_age_hours: float = Field(168.0, gt=0)
    max_rows: int = Field(1_000_000, gt=0)
    queue_limit: int = Field(10_000, gt=0, description="entries waiting to be written; more drop")


class ControllerSettings(Strict):
    """The rollout controller, in the control-plane process."""

    interval: float = Field(
        1.0, gt=0, le=60, description="seconds between rounds (timers, analyses, leases)"
    )
    lease_ttl: float = Field(
        10.0, gt=0, description="seconds another controller waits after this one stops renewing"
    )


class AdminSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)


class Config(Strict):
    """A whole turnout config. ``version`` is the schema version of this file format."""

    version: Literal[1] = 1
    gateway: GatewaySettings = GatewaySettings()
    admin: AdminSettings = AdminSettings()
    upstreams: list[Upstream] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    prices: dict[str, Price] = Field(
        default_factory=dict, description="per model name as sent upstream"
    )
    store: StoreSettings = StoreSettings()
    request_log: RequestLogSettings = RequestLogSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    controller: ControllerSettings = ControllerSettings()
    experiments: list[ExperimentSpec] = Field(
        default_factory=list, description="A/B comparisons of a route's variants"
    )
    rollouts: list[RolloutSpec] = Field(
        default_factory=list, description="started when a config first names them"
    )
