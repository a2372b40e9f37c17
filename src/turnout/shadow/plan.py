"""A route's shadows compiled for the data plane, and which requests each one gets.

Compiled once per config into the snapshot, like routes: the match as a predicate,
the bundle (model, params, system prompt) as a ``CompiledVariant``, the percentage
as a number of hash buckets. ``chosen`` is the per-request decision. With
``by: key`` a request is mirrored when the hash of the route's stickiness key falls
in the shadow's buckets, so a user is mirrored on all their requests or none, in
every process; the hash is salted with the shadow's name so the mirrored users are
independent of the users' variant assignment (every variant is mirrored alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from turnout.config.model import Route
from turnout.config.shadow import EvaluatorSpec, ShadowSamples
from turnout.routing.bucketing import BUCKETS, UNITS_PER_PERCENT, bucket_of, salt_prefix
from turnout.routing.predicates import compile_match
from turnout.routing.request import RequestView
from turnout.routing.router import CompiledVariant, compile_variant
from turnout.shadow.evaluators import Evaluator, load_evaluator
from turnout.shadow.judge_llm import Ask

__all__ = ["Redactor", "ShadowPlan", "build_evaluators", "chosen", "compile_shadows"]

Redactor = Callable[[str, object], object]


@dataclass(frozen=True, slots=True, eq=False)
class ShadowPlan:
    route: str
    name: str
    upstream: str
    bundle: CompiledVariant
    units: int  # mirrored buckets out of BUCKETS
    by_key: bool
    prefix: bytes  # hash salt of the mirror decision
    test: Callable[[RequestView], bool] | None
    max_concurrency: int
    queue: int
    evaluators: tuple[EvaluatorSpec, ...]
    samples: ShadowSamples
    redact: Redactor | None


def compile_shadows(
    route: Route, redact: Callable[[str], Redactor | None] = lambda _: None
) -> tuple[ShadowPlan, ...]:
    """``redact`` resolves a redaction hook's "module:function" (the snapshot imports)."""
    salt = route.salt if route.salt is not None else route.name
    default_hook = route.log_bodies.redact if route.log_bodies is not None else None
    plans = []
    for s in route.shadows:
        hook = s.samples.redact or default_hook
        plans.append(
            ShadowPlan(
                route=route.name,
                name=s.name,
                upstream=s.upstream,
                bundle=compile_variant(s, 0),
                units=round(s.percent * UNITS_PER_PERCENT),
                by_key=s.by == "key",
                prefix=salt_prefix(f"{salt}\x1fshadow\x1f{s.name}"),
                test=compile_match(s.match).test if s.match is not None else None,
                max_concurrency=s.max_concurrency,
                queue=s.queue,
                evaluators=tuple(s.evaluators),
                samples=s.samples,
                redact=redact(hook) if hook else None,
            )
        )
    return tuple(plans)


def chosen(plan: ShadowPlan, view: RequestView, key: str | None, draw: Callable[[], int]) -> bool:
    """Whether this request is mirrored to ``plan``'s shadow. ``draw`` gives a uniform
    bucket in [0, BUCKETS), used without a key or with ``by: random``."""
    if plan.units <= 0 or (plan.test is not None and not plan.test(view)):
        return False
    if plan.units >= BUCKETS:
        return True
    if plan.by_key and key is not None:
        return bucket_of(plan.prefix, key) < plan.units
    return draw() < plan.units


def build_evaluators(
    specs: tuple[EvaluatorSpec, ...], ask_for: Callable[[EvaluatorSpec], Ask | None]
) -> tuple[Evaluator, ...]:
    """The evaluators of a shadow; ``ask_for`` gives an LLM judge its upstream call.
    Raises ValueError (or RuntimeError for a missing optional package) like
    ``load_evaluator``."""
    return tuple(load_evaluator(spec.loader_spec(), ask=ask_for(spec)) for spec in specs)
