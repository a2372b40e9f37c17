"""Checks across fields that pydantic cannot express per field, all reported at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from turnout.config.experiment import ExperimentSpec
from turnout.config.model import Config, Route
from turnout.config.resilience import names as names_of
from turnout.config.rollout import RolloutSpec
from turnout.exceptions import FieldError

WEIGHT_STEP = 0.01  # one bucket of 10,000 is 0.01 percent


def semantic_errors(config: Config) -> list[FieldError]:
    return [
        *_unique_names(config),
        *_route_errors(config),
        *_region_errors(config),
        *_rollout_errors(config),
        *_experiment_errors(config),
    ]


def _unique_names(config: Config) -> Iterator[FieldError]:
    seen: dict[str, int] = {}
    for i, up in enumerate(config.upstreams):
        if up.name in seen:
            yield FieldError(f"upstreams[{i}].name", f"duplicate upstream name {up.name!r}")
        seen.setdefault(up.name, i)
    routes: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if route.name in routes:
            yield FieldError(f"routes[{i}].name", f"duplicate route name {route.name!r}")
        routes.setdefault(route.name, i)


def _route_errors(config: Config) -> Iterator[FieldError]:
    upstreams = {u.name for u in config.upstreams}
    catch_all: str | None = None
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if catch_all is not None:
            yield FieldError(
                f"{where}.match",
                f"unreachable: route {catch_all!r} before it has no match and takes every request",
            )
        if route.match is None and catch_all is None:
            catch_all = route.name
        yield from _variant_errors(route, where, upstreams)
        yield from _shadow_errors(route, where, upstreams)


def _unknown(names: tuple[str, ...], where: str, upstreams: set[str]) -> Iterator[FieldError]:
    for name in names:
        if name not in upstreams:
            yield FieldError(where, f"unknown upstream {name!r}; known: {sorted(upstreams)}")


def _shadow_errors(route: Route, where: str, upstreams: set[str]) -> Iterator[FieldError]:
    # Shadow and variant names share one namespace: both label the same route's series.
    taken = {v.name for v in route.variants}
    for j, shadow in enumerate(route.shadows):
        at = f"{where}.shadows[{j}]"
        if shadow.name in taken:
            yield FieldError(
                f"{at}.name", f"{shadow.name!r} is already a variant or shadow of this route"
            )
        taken.add(shadow.name)
        yield from _unknown((shadow.upstream,), f"{at}.upstream", upstreams)
        for k, spec in enumerate(shadow.evaluators):
            if spec.upstream is not None:
                yield from _unknown((spec.upstream,), f"{at}.evaluators[{k}].upstream", upstreams)


def _region_errors(config: Config) -> Iterator[FieldError]:
    regions = {u.labels["region"] for u in config.upstreams if "region" in u.labels}
    for i, route in enumerate(config.routes):
        if route.region is None:
            continue
        for k, region in enumerate(route.region.order):
            if region not in regions:
                yield FieldError(
                    f"routes[{i}].region.order[{k}]",
                    f"no upstream has the region label {region!r}; labelled: {sorted(regions)}",
                )


def _variant_errors(route: Route, where: str, upstreams: set[str]) -> Iterator[FieldError]:
    names: set[str] = set()
    for j, v in enumerate(route.variants):
        if v.name in names:
            yield FieldError(f"{where}.variants[{j}].name", f"duplicate variant name {v.name!r}")
        names.add(v.name)
        yield from _unknown(v.upstreams, f"{where}.variants[{j}].upstream", upstreams)
        for k, step in enumerate(v.fallbacks):
            yield from _unknown(
                names_of(step.upstream), f"{where}.variants[{j}].fallbacks[{k}].upstream", upstreams
            )
    for k, segment in enumerate(route.segments):
        if segment.variant not in names:
            yield FieldError(
                f"{where}.segments[{k}].variant",
                f"route {route.name!r} has no variant {segment.variant!r}",
            )
    weights = [v.weight for v in route.variants]
    if len(weights) == 1 and weights[0] is None:
        return
    for j, w in enumerate(weights):
        if w is None:
            yield FieldError(
                f"{where}.variants[{j}].weight",
                "required when a route has more than one variant",
            )
        elif abs(round(w / WEIGHT_STEP) * WEIGHT_STEP - w) > 1e-9:
            yield FieldError(f"{where}.variants[{j}].weight", "must be a multiple of 0.01")
    if all(w is not None for w in weights):
        total = sum(round(w / WEIGHT_STEP) for w in weights if w is not None)
        if total != round(100 / WEIGHT_STEP):
            yield FieldError(
                f"{where}.variants",
                f"weights add up to {total * WEIGHT_STEP:g}, they must add up to 100",
            )


def _on_routes(
    config: Config, kind: str, specs: Sequence[RolloutSpec | ExperimentSpec]
) -> Iterator[tuple[str, RolloutSpec | ExperimentSpec, Route | None, FieldError | None]]:
    """Each rollout or experiment with its route, and the problem with its name or
    route if it has one (duplicate name, unknown route)."""
    routes = {r.name: r for r in config.routes}
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"{kind}s[{i}]"
        if spec.name in seen:
            yield (
                where,
                spec,
                None,
                FieldError(f"{where}.name", f"duplicate {kind} name {spec.name!r}"),
            )
        seen.add(spec.name)
        route = routes.get(spec.route)
        problem = None if route else FieldError(f"{where}.route", f"unknown route {spec.route!r}")
        yield where, spec, route, problem


def _rollout_errors(config: Config) -> Iterator[FieldError]:
    for where, spec, route, problem in _on_routes(config, "rollout", config.rollouts):
        if problem is not None:
            yield problem
        elif route is not None and isinstance(spec, RolloutSpec):
            yield from rollout_variant_errors(spec.stable, spec.candidate, route, where)


def rollout_variant_errors(
    stable: str, candidate: str, route: Route, where: str = ""
) -> Iterator[FieldError]:
    """A rollout's variants must both be variants of its route."""
    names = [v.name for v in route.variants]
    for field, name in (("stable", stable), ("candidate", candidate)):
        if name not in names:
            yield FieldError(
                f"{where}.{field}" if where else field,
                f"route {route.name!r} has no variant {name!r}; it has {names}",
            )


def _experiment_errors(config: Config) -> Iterator[FieldError]:
    for where, spec, route, problem in _on_routes(config, "experiment", config.experiments):
        if problem is not None:
            yield problem
        elif (
            route is not None
            and isinstance(spec, ExperimentSpec)
            and spec.control not in {v.name for v in route.variants}
        ):
            yield FieldError(
                f"{where}.control", f"route {route.name!r} has no variant {spec.control!r}"
            )
