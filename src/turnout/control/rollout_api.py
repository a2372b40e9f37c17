"""Admin endpoints for rollouts, over ``RolloutController``.

GET  /admin/rollouts                 every rollout, one status each
POST /admin/rollouts                 start one: {"rollout": {spec}} (422 with field paths)
GET  /admin/rollouts/{name}          status: step, time left, weights, verdicts, history
POST /admin/rollouts/{name}/{cmd}    abort | promote | resume | retry, {"reason": "..."}
"""

from __future__ import annotations

from aiohttp import web

from turnout.control.config_api import actor_and_reason, json_response, read_body
from turnout.exceptions import InvalidRequest
from turnout.rollout.controller import RolloutController
from turnout.rollout.machine import Command


def add_rollout_routes(app: web.Application, controller: RolloutController) -> None:
    async def list_rollouts(request: web.Request) -> web.Response:
        return json_response({"rollouts": await controller.list()})

    async def start(request: web.Request) -> web.Response:
        body = await read_body(request)
        spec = body.get("rollout")
        if not isinstance(spec, dict):
            raise InvalidRequest('send {"rollout": {...}, "reason": "..."}', param="rollout")
        author, _ = actor_and_reason(request, body)
        return json_response(await controller.start_rollout(spec, author), status=201)

    async def status(request: web.Request) -> web.Response:
        return json_response(await controller.status(request.match_info["name"]))

    async def command(request: web.Request) -> web.Response:
        body = await read_body(request) if request.can_read_body else {}
        author, reason = actor_and_reason(request, body)
        try:
            cmd = Command(request.match_info["command"])
        except ValueError:
            raise InvalidRequest(
                f"unknown rollout command {request.match_info['command']!r};"
                f" use one of {[c.value for c in Command]}",
                code="unknown_command",
            ) from None
        return json_response(
            await controller.command(request.match_info["name"], cmd, author, reason)
        )

    app.router.add_get("/admin/rollouts", list_rollouts)
    app.router.add_post("/admin/rollouts", start)
    app.router.add_get("/admin/rollouts/{name}", status)
    app.router.add_post("/admin/rollouts/{name}/{command}", command)
