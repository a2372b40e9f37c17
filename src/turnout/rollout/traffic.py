"""What a rollout's state means for its route, as a config document (pure).

The candidate's weight is a percent of the traffic the *pair* (stable plus
candidate) has, so other variants of the route keep theirs. The pair's total is
what the other variants leave, read from the document each time. A
preview is a segment named after the rollout, put first among the route's
segments, sending matching requests to the candidate.
"""

from __future__ import annotations

import copy
from typing import Any

from turnout.config.rollout import PreviewStep, RolloutSpec
from turnout.exceptions import Conflict

__all__ = ["pair_weights", "with_traffic"]

_STEP = 0.01  # weights are multiples of 0.01 percent (one bucket of 10,000)


def pair_weights(total: float, candidate_percent: float) -> tuple[float, float]:
    """(stable, candidate) weights that split ``total`` by ``candidate_percent``."""
    units = round(total / _STEP)
    cand = round(units * candidate_percent / 100.0)
    return round((units - cand) * _STEP, 2), round(cand * _STEP, 2)


def _preview_match(spec: RolloutSpec, step: int) -> dict[str, Any] | None:
    for s in reversed(spec.steps[:step]):
        if isinstance(s, PreviewStep):
            match: dict[str, Any] = s.preview.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
            return match
    return None


def with_traffic(
    document: dict[str, Any], spec: RolloutSpec, weight: float, preview: bool, step: int
) -> dict[str, Any]:
    """A copy of ``document`` with the route split as the rollout state says."""
    doc = copy.deepcopy(document)
    route = next((r for r in doc.get("routes", []) if r.get("name") == spec.route), None)
    if route is None:
        raise Conflict(f"the live config has no route {spec.route!r}", code="unknown_route")
    variants = {v["name"]: v for v in route.get("variants", [])}
    missing = [n for n in (spec.stable, spec.candidate) if n not in variants]
    if missing:
        raise Conflict(
            f"route {spec.route!r} has no variant(s) {missing} in the live config",
            code="unknown_variant",
        )
    stable, candidate = variants[spec.stable], variants[spec.candidate]
    # Weights add up to 100, so the pair has whatever the other variants leave.
    total = 100.0 - sum(
        float(v.get("weight") or 0.0)
        for n, v in variants.items()
        if n not in (spec.stable, spec.candidate)
    )
    if total <= 0.0:
        raise Conflict(
            f"the other variants of route {spec.route!r} take all its traffic",
            code="no_traffic",
        )
    stable["weight"], candidate["weight"] = pair_weights(total, weight)
    segments = [s for s in route.get("segments", []) if s.get("name") != spec.name]
    match = _preview_match(spec, step) if preview else None
    if match is not None:
        segments.insert(0, {"name": spec.name, "match": match, "variant": spec.candidate})
    if segments:
        route["segments"] = segments
    else:
        route.pop("segments", None)
    return doc
