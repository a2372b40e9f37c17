"""The stats document (``GET /admin/stats``): merged series laid out by the config."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from turnout.config.model import Config
from turnout.config.shadow import Shadow
from turnout.observe.metrics import WINDOWS, Merged, SeriesStats
from turnout.shadow.agreement import Tally

_ALIASES = {
    "60": "60s",
    "1m": "60s",
    "300": "300s",
    "5m": "300s",
    "3600": "3600s",
    "1h": "3600s",
    "all": "cumulative",
}


def window_name(text: str | None) -> str:
    """Normalise a ``window`` parameter; raises ValueError naming the accepted ones."""
    name = _ALIASES.get(text or "60s", text or "60s")
    if name not in WINDOWS:
        raise ValueError(
            f"unknown window {text!r}; use one of 60s (1m), 300s (5m), 3600s (1h), cumulative"
        )
    return name


def health_summary(views: list[dict[str, Any]]) -> dict[str, Any]:
    """An upstream's ejection state over the processes that have called it: the
    worst state, in how many processes it is ejected, and each process's view."""
    states = [v.get("state") for v in views]
    worst = next((s for s in ("ejected", "half_open") if s in states), "closed")
    return {
        "state": worst,
        "ejected_in": states.count("ejected"),
        "processes": views,
    }


def _shadow_view(
    merged: Merged,
    views: dict[tuple[str, str], dict[str, Any]],
    route: str,
    shadow: Shadow,
    empty: dict[str, Any],
) -> dict[str, Any]:
    key = (route, shadow.name)
    tally = merged.tallies.get(key) or Tally()
    return {
        "shadow": shadow.name,
        "upstream": shadow.upstream,
        "percent": shadow.percent,
        **views.get(key, empty),
        "mirror": tally.view(),
    }


def stats_document(
    merged: Merged,
    config: Config,
    window: str,
    *,
    generated_at: float,
    feedback: Iterable[Any] = (),
) -> dict[str, Any]:
    """Routes and variants in config order, baseline first; idle variants shown as zeros.

    ``feedback`` holds summaries with route, variant, name, count, mean, ci95, is_rate.
    """
    views = dict(merged.variant_views())
    spans = [v[1] for v in merged.variants.values()] + [v[1] for v in merged.upstreams.values()]
    empty = SeriesStats().view(0.0, 0)
    by_variant: dict[tuple[str, str], dict[str, Any]] = {}
    for fb in feedback:
        by_variant.setdefault((fb.route, fb.variant), {})[fb.name] = {
            "count": fb.count,
            "mean": fb.mean,
            "ci95": list(fb.ci95),
            "is_rate": fb.is_rate,
        }
    shadow_views = dict(merged.shadow_views())
    routes = []
    for route in config.routes:
        variants = []
        for v in route.variants:
            key = (route.name, v.name)
            view = dict(views.get(key, empty))
            view["feedback"] = by_variant.get(key, {})
            variants.append({"variant": v.name, **view})
        shadows = [_shadow_view(merged, shadow_views, route.name, s, empty) for s in route.shadows]
        routes.append(
            {
                "route": route.name,
                "baseline": route.variants[0].name,
                "variants": variants,
                "shadows": shadows,
                # What mirroring costs, kept apart from the variants' (live) cost.
                "shadow_cost_usd": sum(s["cost_usd"] for s in shadows),
            }
        )
    upstream_views = dict(merged.upstream_views())
    upstreams = [
        {
            "upstream": u.name,
            **upstream_views.get(u.name, empty),
            "health": health_summary(merged.health.get(u.name, [])),
        }
        for u in config.upstreams
    ]
    return {
        "window": window,
        "window_seconds": max(spans, default=0.0),
        "generated_at": generated_at,
        "workers": merged.sources,
        "routes": routes,
        "upstreams": upstreams,
        "request_log": dict(merged.request_log),
    }
