"""Config of resilience routing: fallback chains, retries, timeouts, ejection,
regions. Schema only; the behaviour is in ``turnout.resilience`` (pure) and
``turnout.gateway.dispatch`` (the attempt loop)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from turnout.config.attributes import parse_attr
from turnout.config.base import Name, Strict

# The failure classes an attempt can end with; the same names as the error classes
# of the metrics (a client's 4xx is never retried nor a reason to fall back).
FailureClass = Literal["connection", "timeout", "rate_limited", "upstream_5xx", "upstream_error"]
ALL_FAILURES: tuple[FailureClass, ...] = (
    "connection",
    "timeout",
    "rate_limited",
    "upstream_5xx",
    "upstream_error",
)
# Retrying on the same upstream after a timeout mostly waits out another timeout:
# by default a timeout moves on to the next upstream of the chain instead.
DEFAULT_RETRY_ON: tuple[FailureClass, ...] = ("connection", "rate_limited", "upstream_5xx")


# Body fields a variant or fallback may not set through `params`: they carry the
# request itself or have their own, more specific setting.
RESERVED_PARAMS = frozenset({"model", "messages", "prompt", "input", "stream"})


def not_reserved(params: dict[str, Any]) -> dict[str, Any]:
    bad = sorted(RESERVED_PARAMS.intersection(params))
    if bad:
        raise ValueError(f"{bad} cannot be set through params (use `model` for the model)")
    return params


class Ejection(Strict):
    """Outlier ejection of an upstream (per gateway process)."""

    enabled: bool = True
    consecutive_failures: int = Field(
        5, ge=0, description="failures in a row that eject; 0: not by consecutive failures"
    )
    error_rate: float | None = Field(
        0.5, gt=0, le=1, description="failure share over the window that ejects; null: off"
    )
    min_requests: int = Field(20, ge=1, description="requests in the window before the rate counts")
    window: float = Field(30.0, gt=0, description="seconds")
    cooldown: float = Field(
        10.0, gt=0, description="seconds ejected the first time; doubles on each repeat"
    )
    max_cooldown: float = Field(300.0, gt=0, description="seconds; the cap of the doubling")

    @model_validator(mode="after")
    def _cap(self) -> Ejection:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be >= cooldown")
        return self


class RouteTimeouts(Strict):
    """Per-attempt timeouts for this route, in seconds, each replacing the
    upstream's own value when set."""

    connect: float | None = Field(None, gt=0)
    first_byte: float | None = Field(None, gt=0)
    idle: float | None = Field(None, gt=0)
    total: float | None = Field(None, gt=0)


class Retry(Strict):
    """Retries of one upstream of a chain before moving to the next."""

    max_retries: int = Field(1, ge=0, le=10, description="per upstream of the chain")
    on: list[FailureClass] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    backoff: float = Field(
        0.1, ge=0, description="seconds; the ceiling doubles per retry, full jitter"
    )
    max_backoff: float = Field(2.0, ge=0, description="seconds")
    max_retry_after: float = Field(
        5.0,
        ge=0,
        description="seconds; an upstream asking (Retry-After) to wait longer is not"
        " retried, the chain moves on",
    )
    budget: float = Field(
        0.2, ge=0, le=10, description="retries as a share of requests, over 10 s, per route"
    )
    min_per_second: float = Field(
        1.0, ge=0, description="retries a second always allowed, for quiet routes"
    )


class Region(Strict):
    """Prefer the upstream in the request's region, then the others in ``order``."""

    attr: str = Field("header:x-region", description="where the request names its region")
    order: list[str] = Field(
        default_factory=list,
        description="region labels, most preferred first, after the request's own;"
        " upstreams of regions not listed come last, in config order",
    )

    @field_validator("attr")
    @classmethod
    def _attr(cls, v: str) -> str:
        parse_attr(v)
        return v


Upstreams = Name | list[Name]


class Fallback(Strict):
    """One more step of a variant's chain: another upstream, possibly another model."""

    upstream: Upstreams = Field(
        description="an upstream, or equivalent upstreams in several regions"
    )
    model: str | None = Field(None, description="model sent to this upstream instead")
    params: dict[str, Any] = Field(
        default_factory=dict, description="body fields set for this step, over the variant's"
    )

    @field_validator("upstream")
    @classmethod
    def _not_empty(cls, v: Upstreams) -> Upstreams:
        return upstream_list(v)

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        return not_reserved(v)


def upstream_list(v: Upstreams) -> Upstreams:
    if isinstance(v, list):
        if not v:
            raise ValueError("name at least one upstream")
        if len(set(v)) != len(v):
            raise ValueError("an upstream is listed twice")
    return v


def names(v: Upstreams) -> tuple[str, ...]:
    return tuple(v) if isinstance(v, list) else (v,)
