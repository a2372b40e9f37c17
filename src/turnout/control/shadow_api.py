"""Admin endpoints for shadows, over the shared sample store.

GET /admin/shadows/{route}/samples?shadow=NAME&limit=N   newest disagreeing pairs
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from turnout.control.config_api import json_response
from turnout.exceptions import InvalidRequest, NotFound
from turnout.snapshot import Snapshot
from turnout.store.shadow_samples import ShadowSampleStore

MAX_LIMIT = 500


def add_shadow_routes(
    app: web.Application, store: ShadowSampleStore, snapshot: Callable[[], Snapshot]
) -> None:
    async def samples(request: web.Request) -> web.Response:
        route_name = request.match_info["route"]
        route = next((r for r in snapshot().config.routes if r.name == route_name), None)
        if route is None:
            raise NotFound(f"no route {route_name!r} in the live config")
        shadow = request.query.get("shadow") or None
        names = [s.name for s in route.shadows]
        if shadow is not None and shadow not in names:
            raise NotFound(f"route {route_name!r} has no shadow {shadow!r}; it has {names}")
        text = request.query.get("limit", "20")
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(
                f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}", param="limit"
            )
        rows = await asyncio.get_running_loop().run_in_executor(
            None, store.recent, route_name, shadow, limit
        )
        return json_response({"route": route_name, "shadows": names, "samples": rows})

    async def close(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, store.close)

    app.router.add_get("/admin/shadows/{route}/samples", samples)
    app.on_cleanup.append(close)
