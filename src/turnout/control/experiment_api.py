"""Admin endpoints for experiments, over ``Experiments``.

GET  /admin/experiments                  the experiments of the live config
GET  /admin/experiments/{name}           the report (JSON)
GET  /admin/experiments/{name}/units.csv one row per unit, for a data scientist's tools
POST /admin/experiments/{name}/stop      {"winner": "variant" | null, "reason": "..."}
"""

from __future__ import annotations

from aiohttp import web

from turnout.control.config_api import actor_and_reason, json_response, read_body
from turnout.exceptions import InvalidRequest
from turnout.experiment.service import Experiments


def add_experiment_routes(app: web.Application, experiments: Experiments) -> None:
    async def listing(request: web.Request) -> web.Response:
        return json_response({"experiments": await experiments.names()})

    async def report(request: web.Request) -> web.Response:
        return json_response(await experiments.report(request.match_info["name"]))

    async def units(request: web.Request) -> web.Response:
        text = await experiments.units_csv(request.match_info["name"])
        return web.Response(text=text, content_type="text/csv")

    async def stop(request: web.Request) -> web.Response:
        body = await read_body(request) if request.can_read_body else {}
        winner = body.get("winner")
        if winner is not None and not isinstance(winner, str):
            raise InvalidRequest("winner must be a variant name or null", param="winner")
        author, reason = actor_and_reason(request, body)
        outcome = await experiments.stop(request.match_info["name"], winner, author, reason)
        return json_response({"version": outcome.version, "changed": outcome.changed})

    app.router.add_get("/admin/experiments", listing)
    app.router.add_get("/admin/experiments/{name}", report)
    app.router.add_get("/admin/experiments/{name}/units.csv", units)
    app.router.add_post("/admin/experiments/{name}/stop", stop)
