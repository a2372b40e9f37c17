"""The routing engine: a config compiled into routes that decide route and variant.

``Router.decide`` is the hot path: predicates in route order, then one hash for
the stickiness key. ``Router.explain`` answers the same question in words.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from turnout.config.attributes import parse_attr, parse_template
from turnout.config.model import Config, Route, Variant
from turnout.config.shadow import Shadow
from turnout.exceptions import InvalidRequest, NoRouteMatched
from turnout.routing.bucketing import (
    BUCKETS,
    bucket_of,
    pick,
    range_ends,
    salt_prefix,
    weight_units,
)
from turnout.routing.predicates import Predicate, compile_match
from turnout.routing.request import RequestView, as_text, getter
from turnout.routing.transform import Part, compile_template

FORCE_HEADER = "x-turnout-variant"


@dataclass(frozen=True, slots=True)
class CompiledVariant:
    name: str
    upstream: str  # the first of the variant's own upstreams (the chain is in the snapshot)
    units: int  # buckets out of BUCKETS
    model: str | None
    params: Mapping[str, Any]
    prompt_mode: str | None
    prompt: tuple[Part, ...] | None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    index: int
    predicate: Predicate | None
    variants: tuple[CompiledVariant, ...]
    by_name: Mapping[str, CompiledVariant]
    ends: tuple[int, ...]
    prefix: bytes
    keys: tuple[tuple[str, Callable[[RequestView], Any]], ...]  # key then fallbacks
    reject_missing_key: bool
    allow_override: bool
    # (test, variant) in order, tried before the hash: previews, beta groups.
    segments: tuple[tuple[Callable[[RequestView], bool], CompiledVariant], ...] = ()

    def key_of(self, view: RequestView) -> tuple[str, str] | None:
        """(attribute, text) of the first stickiness attribute present, or None."""
        for label, get in self.keys:
            text = as_text(get(view))
            if text:
                return label, text
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    route: CompiledRoute
    variant: CompiledVariant
    key_source: str  # the attribute hashed, "random", "forced" or "segment"
    bucket: int | None  # None when forced or by segment
    key: str | None = None  # the stickiness key's text, when one was present


def compile_variant(v: Variant | Shadow, units: int) -> CompiledVariant:
    """A variant's bundle, ready to apply; a shadow's too (its ``units`` unused)."""
    prompt = v.system_prompt
    return CompiledVariant(
        name=v.name,
        upstream=v.upstream if isinstance(v, Shadow) else v.upstreams[0],
        units=units,
        model=v.model,
        params=MappingProxyType(dict(v.params)),
        prompt_mode=prompt.mode if prompt else None,
        prompt=compile_template(parse_template(prompt.template)) if prompt else None,
    )


def compile_route(route: Route, index: int) -> CompiledRoute:
    weights = [100.0 if v.weight is None else v.weight for v in route.variants]
    units = weight_units(weights)
    variants = tuple(compile_variant(v, u) for v, u in zip(route.variants, units, strict=True))
    key_attrs = [route.sticky.key, *route.sticky.fallback]
    by_name = {v.name: v for v in variants}
    segments = tuple((compile_match(s.match).test, by_name[s.variant]) for s in route.segments)
    return CompiledRoute(
        name=route.name,
        index=index,
        predicate=compile_match(route.match) if route.match is not None else None,
        variants=variants,
        by_name=MappingProxyType(by_name),
        ends=range_ends(units),
        prefix=salt_prefix(route.salt if route.salt is not None else route.name),
        keys=tuple((a, getter(parse_attr(a))) for a in key_attrs),
        reject_missing_key=route.sticky.on_missing == "reject",
        allow_override=route.allow_override,
        segments=segments,
    )


class Router:
    """Immutable once built; a new config builds a new Router."""

    __slots__ = ("_rand", "_tests", "routes")

    def __init__(self, config: Config, rand: Callable[[int], int] | None = None) -> None:
        self.routes = tuple(compile_route(r, i) for i, r in enumerate(config.routes))
        self._tests = tuple((r.predicate.test if r.predicate else None, r) for r in self.routes)
        # Injected for tests; requests without a key draw a uniform bucket.
        self._rand = rand or random.randrange

    def match(self, view: RequestView) -> CompiledRoute:
        for test, route in self._tests:
            if test is None or test(view):
                return route
        raise NoRouteMatched("no route matches this request and the config has no catch-all")

    def decide(self, view: RequestView) -> Decision:
        return self.assign(self.match(view), view)

    def assign(self, route: CompiledRoute, view: RequestView) -> Decision:
        """Pick the variant of ``route``: forced, hashed from the key, or random."""
        if route.allow_override:
            forced = view.headers.get(FORCE_HEADER)
            if forced:
                variant = route.by_name.get(forced)
                if variant is None:
                    raise InvalidRequest(
                        f"{FORCE_HEADER}: route {route.name!r} has no variant {forced!r};"
                        f" it has {list(route.by_name)}",
                        code="unknown_variant",
                    )
                found = route.key_of(view)  # logged, so experiments see the exposure
                return Decision(route, variant, "forced", None, found[1] if found else None)
        for test, variant in route.segments:
            if test(view):
                found = route.key_of(view)  # kept for the log, as for hashed requests
                return Decision(route, variant, "segment", None, found[1] if found else None)
        key = route.key_of(view)
        text = None
        if key is not None:
            source, text = key
            b = bucket_of(route.prefix, text)
        elif route.reject_missing_key:
            wanted = " or ".join(label for label, _ in route.keys)
            raise InvalidRequest(
                f"route {route.name!r} needs a stickiness key ({wanted})", code="missing_key"
            )
        else:
            b = self._rand(BUCKETS)
            source = "random"
        return Decision(route, route.variants[pick(route.ends, b)], source, b, text)

    def explain(self, view: RequestView) -> list[str]:
        """Why this request gets its route and variant, line by line."""
        lines: list[str] = []
        for route in self.routes:
            if route.predicate is None:
                lines.append(f"route {route.name!r}: no match block, takes every request")
                break
            ok, trace = route.predicate.explain(view, 1)
            lines.append(f"route {route.name!r}: {'matches' if ok else 'does not match'}")
            lines.extend(trace)
            if ok:
                break
        try:
            d = self.decide(view)
        except (NoRouteMatched, InvalidRequest) as exc:
            lines.append(f"→ error: {exc}")
            return lines
        if d.key_source == "forced":
            lines.append(f"→ variant {d.variant.name!r}: forced by the {FORCE_HEADER} header")
            return lines
        if d.key_source == "segment":
            lines.append(f"→ variant {d.variant.name!r}: the request is in one of its segments")
            return lines
        ranges, start = [], 0
        for v, end in zip(d.route.variants, d.route.ends, strict=True):
            ranges.append(f"{v.name} [{start}, {end})")
            start = end
        how = (
            "drawn at random (no stickiness key present)"
            if d.key_source == "random"
            else f"hash of {d.key_source}={d.route.key_of(view)[1]!r}"  # type: ignore[index]
        )
        lines.append(f"→ bucket {d.bucket} of {BUCKETS}, {how}; ranges: {', '.join(ranges)}")
        lines.append(f"→ route {d.route.name!r}, variant {d.variant.name!r}")
        return lines
