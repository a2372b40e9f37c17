"""The admin HTTP API on its own port (default 127.0.0.1:8081).

Reading numbers here never touches the request path: stats are exported by each
worker on demand and merged here. With an admin token set, every endpoint but
``/healthz`` wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

import orjson
from aiohttp import web

from turnout.control.auth import token_matches
from turnout.control.config_api import add_config_routes, config_error_response
from turnout.control.experiment_api import add_experiment_routes
from turnout.control.openapi import openapi
from turnout.control.plane import ControlPlane
from turnout.control.rollout_api import add_rollout_routes
from turnout.control.shadow_api import add_shadow_routes
from turnout.exceptions import ConfigError, GatewayError, InvalidRequest, NotFound
from turnout.experiment.service import Experiments
from turnout.gateway.errors import error_body
from turnout.observe.metrics import Merged, Registry
from turnout.observe.prometheus import CONTENT_TYPE, render
from turnout.observe.views import stats_document, window_name
from turnout.resilience import HealthBook
from turnout.rollout.controller import RolloutController
from turnout.snapshot import Snapshot
from turnout.store.shadow_samples import ShadowSampleStore

PROMETHEUS_WINDOW = "300s"  # quantiles in /metrics cover the last five minutes


class StatsSource(Protocol):
    async def exports(self, window: str) -> list[dict[str, Any]]:
        """One export per process serving traffic (``Registry.export``)."""
        ...


def process_export(
    registry: Registry,
    window: str,
    log_counters: dict[str, int] | None,
    health: HealthBook | None = None,
) -> dict[str, Any]:
    """What one process contributes to a stats call: its metrics, its log counters
    and the ejection state of its upstreams."""
    now = perf_counter()
    export = registry.export(window, now)
    export["request_log"] = log_counters or {}
    export["upstream_health"] = health.view(now) if health is not None else {}
    return export


class LocalStats:
    """The numbers of this very process (one worker serving and administering)."""

    def __init__(
        self,
        registry: Registry,
        log_counters: Callable[[], dict[str, int]] | None = None,
        health: HealthBook | None = None,
    ) -> None:
        self.registry = registry
        self.log_counters = log_counters
        self.health = health

    async def exports(self, window: str) -> list[dict[str, Any]]:
        counters = self.log_counters() if self.log_counters else None
        return [process_export(self.registry, window, counters, self.health)]


FeedbackSummaries = Callable[[float | None], Awaitable[list[Any]]]
FeedbackRecorder = Callable[[Any], Awaitable[dict[str, Any]]]


@dataclass
class AdminContext:
    snapshot: Callable[[], Snapshot]
    stats: StatsSource
    token: str | None = None
    feedback_summaries: FeedbackSummaries | None = None
    record_feedback: FeedbackRecorder | None = None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(exc: GatewayError) -> web.Response:
    return web.Response(
        body=error_body(exc.message, exc.type, exc.code, exc.param),
        status=exc.status,
        content_type="application/json",
    )


async def stats(ctx: AdminContext, window: str) -> dict[str, Any]:
    merged = Merged()
    for export in await ctx.stats.exports(window):
        merged.add(export)
    feedback: list[Any] = []
    if ctx.feedback_summaries is not None:
        seconds = {"60s": 60.0, "300s": 300.0, "3600s": 3600.0}.get(window)
        feedback = await ctx.feedback_summaries(None if seconds is None else time.time() - seconds)
    return stats_document(
        merged,
        ctx.snapshot().config,
        window,
        generated_at=time.time(),
        feedback=feedback,
    )


def admin_app(
    ctx: AdminContext,
    plane: ControlPlane | None = None,
    rollouts: RolloutController | None = None,
    experiments: Experiments | None = None,
    samples: ShadowSampleStore | None = None,
) -> web.Application:
    @web.middleware
    async def errors_and_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if (
            ctx.token is not None
            and request.path != "/healthz"
            and not token_matches(request.headers.get("authorization"), ctx.token)
        ):
            return web.Response(
                status=401,
                body=error_body(
                    "missing or wrong admin token", "authentication_error", "unauthorized"
                ),
                content_type="application/json",
                headers={"www-authenticate": "Bearer"},
            )
        try:
            return await handler(request)
        except GatewayError as exc:
            return _error(exc)
        except ConfigError as exc:
            return config_error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(NotFound(f"unknown path {request.path}"))
            raise

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok", "config_version": ctx.snapshot().version})

    async def get_stats(request: web.Request) -> web.Response:
        try:
            window = window_name(request.query.get("window"))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="window") from None
        return _json(await stats(ctx, window))

    async def metrics(request: web.Request) -> web.Response:
        cumulative, window = await asyncio.gather(
            stats(ctx, "cumulative"), stats(ctx, PROMETHEUS_WINDOW)
        )
        return web.Response(
            body=render(cumulative, window).encode(),
            headers={"content-type": CONTENT_TYPE},
        )

    async def feedback(request: web.Request) -> web.Response:
        if ctx.record_feedback is None:
            raise NotFound("feedback needs the store (config: store.path)")
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
        return _json(await ctx.record_feedback(payload), status=201)

    async def openapi_json(request: web.Request) -> web.Response:
        return _json(openapi())

    app = web.Application(middlewares=[errors_and_auth])
    app.router.add_get("/admin/openapi.json", openapi_json)
    if plane is not None:
        add_config_routes(app, plane)
    if rollouts is not None:
        add_rollout_routes(app, rollouts)
    if experiments is not None:
        add_experiment_routes(app, experiments)
    if samples is not None:
        add_shadow_routes(app, samples, ctx.snapshot)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/feedback", feedback)
    return app
