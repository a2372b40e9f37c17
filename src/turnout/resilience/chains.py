"""A route's resilience policy, compiled from config once per snapshot: for each
variant the ordered chain of upstreams to try, in every region's order.

Pure: built from the config and the snapshot's upstream targets; the per-request
work is one dict lookup for the request's region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from turnout.config.attributes import parse_attr
from turnout.config.model import Route, Upstream, Variant
from turnout.config.resilience import names
from turnout.resilience.budget import RetryBudget
from turnout.resilience.ejection import EjectionPolicy
from turnout.routing.request import Getter, getter

if TYPE_CHECKING:
    from turnout.snapshot import UpstreamTarget


@dataclass(frozen=True, slots=True)
class Step:
    """One upstream to try, with what changes in the body for it."""

    target: UpstreamTarget  # the route's timeouts applied
    fallback: int  # 0: one of the variant's own upstreams; k: from its k-th fallback
    model: str | None = None  # set on fallback steps that name another model
    params: Mapping[str, Any] | None = None  # set on fallback steps with parameters

    @property
    def rewrites(self) -> bool:
        return self.model is not None or bool(self.params)


@dataclass(frozen=True, slots=True)
class Chain:
    default: tuple[Step, ...]  # when the request names no region, or an unknown one
    by_region: Mapping[str, tuple[Step, ...]]
    fallback_on: frozenset[str]

    def steps(self, region: str | None) -> tuple[Step, ...]:
        if region is None:
            return self.default
        return self.by_region.get(region, self.default)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    chains: Mapping[str, Chain]  # by variant name
    retry_on: frozenset[str]
    max_retries: int
    backoff: float
    max_backoff: float
    max_retry_after: float
    budget_ratio: float
    budget_min_per_second: float
    deadline: float | None
    region: Getter | None  # where the request names its region

    def new_budget(self) -> RetryBudget:
        return RetryBudget(self.budget_ratio, self.budget_min_per_second)


def region_order(
    regions: Sequence[str | None], first: str | None, order: Sequence[str]
) -> list[int]:
    """Indices of candidates: those in region ``first`` first, then by ``order``, then
    the rest; ties keep config order."""
    rank = {r: i + 1 for i, r in enumerate(order)}
    last = len(order) + 1

    def key(i: int) -> int:
        r = regions[i]
        if first is not None and r == first:
            return 0
        return rank.get(r, last) if r is not None else last

    return sorted(range(len(regions)), key=key)


def ejection_policy(up: Upstream) -> EjectionPolicy:
    # The config model and the policy have the same fields by design.
    return EjectionPolicy(**up.ejection.model_dump())


def _route_target(target: UpstreamTarget, route: Route) -> UpstreamTarget:
    t = route.timeouts
    if t.connect is None and t.first_byte is None and t.idle is None and t.total is None:
        return target
    return replace(
        target,
        connect_timeout=t.connect or target.connect_timeout,
        first_byte_timeout=t.first_byte or target.first_byte_timeout,
        idle_timeout=t.idle or target.idle_timeout,
        total_timeout=t.total or target.total_timeout,
    )


def _chain(
    variant: Variant, route: Route, targets: Mapping[str, UpstreamTarget], regions: Sequence[str]
) -> Chain:
    groups: list[list[Step]] = [
        [Step(_route_target(targets[n], route), 0) for n in variant.upstreams]
    ]
    for k, fb in enumerate(variant.fallbacks, 1):
        params = MappingProxyType(dict(fb.params)) if fb.params else None
        groups.append(
            [
                Step(_route_target(targets[n], route), k, fb.model, params)
                for n in names(fb.upstream)
            ]
        )
    order = route.region.order if route.region is not None else []

    def flat(first: str | None) -> tuple[Step, ...]:
        out: list[Step] = []
        for group in groups:
            labels = [s.target.labels.get("region") for s in group]
            out.extend(group[i] for i in region_order(labels, first, order))
        return tuple(out)

    default = flat(None)
    by_region = {r: flat(r) for r in regions} if route.region is not None else {}
    return Chain(default, MappingProxyType(by_region), frozenset(variant.fallback_on))


def compile_policy(route: Route, targets: Mapping[str, UpstreamTarget]) -> RoutePolicy:
    regions = sorted({r for t in targets.values() if (r := t.labels.get("region"))})
    retry = route.retry
    return RoutePolicy(
        chains=MappingProxyType(
            {v.name: _chain(v, route, targets, regions) for v in route.variants}
        ),
        retry_on=frozenset(retry.on),
        max_retries=retry.max_retries,
        backoff=retry.backoff,
        max_backoff=retry.max_backoff,
        max_retry_after=retry.max_retry_after,
        budget_ratio=retry.budget,
        budget_min_per_second=retry.min_per_second,
        deadline=route.deadline,
        region=getter(parse_attr(route.region.attr)) if route.region is not None else None,
    )
