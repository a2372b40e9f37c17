"""Admin endpoints that read and change the live config, over ``ControlPlane``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from turnout.control.diff import diff, format_diff
from turnout.control.plane import ControlPlane, Outcome
from turnout.exceptions import ConfigError, InvalidRequest
from turnout.store.configs import StoredVersion, VersionInfo

ACTOR_HEADER = "x-turnout-actor"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def config_error_response(exc: ConfigError) -> web.Response:
    """422 with every problem: the field's path and the reason."""
    body = {
        "error": {
            "message": str(exc),
            "type": "invalid_request_error",
            "code": "invalid_config",
            "param": None,
            "errors": [{"path": e.path, "message": e.message} for e in exc.errors],
        }
    }
    return json_response(body, status=422)


async def read_body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    return data


def actor_and_reason(request: web.Request, body: dict[str, Any]) -> tuple[str, str]:
    author = body.get("author") or request.headers.get(ACTOR_HEADER) or "api"
    reason = body.get("reason") or ""
    if not isinstance(author, str) or not isinstance(reason, str):
        raise InvalidRequest("author and reason must be strings")
    return author[:200], reason[:2000]


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "version": outcome.version,
        "changed": outcome.changed,
        "changes": [asdict(c) for c in outcome.changes],
        "propagation_ms": outcome.propagation_ms,
    }


def _version(v: StoredVersion | VersionInfo, with_document: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": v.version,
        "author": v.author,
        "reason": v.reason,
        "created_at": v.created_at,
        "source": v.source,
    }
    if with_document and isinstance(v, StoredVersion):
        out["config"] = v.document
    return out


def add_config_routes(app: web.Application, plane: ControlPlane) -> None:
    async def get_config(request: web.Request) -> web.Response:
        locks = await plane.locks()
        return json_response(
            {
                "version": plane.snapshot.version,
                "config": plane.document,
                "locks": {name: asdict(lock) for name, lock in locks.items()},
            }
        )

    async def put_config(request: web.Request) -> web.Response:
        body = await read_body(request)
        document = body.get("config")
        if not isinstance(document, dict):
            raise InvalidRequest('send {"config": {...}, "reason": "..."}', param="config")
        author, reason = actor_and_reason(request, body)
        # A refused config (ConfigError) becomes a 422 in the admin app's middleware.
        outcome = await plane.apply(document, author=author, reason=reason)
        return json_response(_outcome(outcome))

    async def put_weights(request: web.Request) -> web.Response:
        body = await read_body(request)
        weights = body.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise InvalidRequest('send {"weights": {"variant": percent, ...}}', param="weights")
        author, reason = actor_and_reason(request, body)
        outcome = await plane.set_weights(
            request.match_info["route"], weights, author=author, reason=reason
        )
        return json_response(_outcome(outcome))

    async def promote(request: web.Request) -> web.Response:
        body = await read_body(request)
        variant = body.get("variant")
        if not isinstance(variant, str):
            raise InvalidRequest('send {"variant": "name"}', param="variant")
        author, reason = actor_and_reason(request, body)
        outcome = await plane.promote(
            request.match_info["route"], variant, author=author, reason=reason
        )
        return json_response(_outcome(outcome))

    async def rollback(request: web.Request) -> web.Response:
        body = await read_body(request) if request.can_read_body else {}
        to = body.get("to")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise InvalidRequest("to must be a version number", param="to")
        author, reason = actor_and_reason(request, body)
        outcome = await plane.rollback(
            to, author=author, reason=reason, force=body.get("force") is True
        )
        return json_response(_outcome(outcome))

    async def versions(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise InvalidRequest("limit must be a number", param="limit") from None
        found = await plane.versions(max(1, min(limit, 1000)))
        return json_response(
            {"live": plane.snapshot.version, "versions": [_version(v, False) for v in found]}
        )

    async def one_version(request: web.Request) -> web.Response:
        return json_response(_version(await plane.version(_number(request.match_info["n"])), True))

    async def get_diff(request: web.Request) -> web.Response:
        a = await plane.version(_number(request.query.get("a", "")))
        b_text = request.query.get("b")
        b = plane.document if b_text is None else (await plane.version(_number(b_text))).document
        changes = diff(a.document, b)
        return json_response(
            {"changes": [asdict(c) for c in changes], "text": format_diff(changes)}
        )

    async def lock(request: web.Request) -> web.Response:
        body = await read_body(request) if request.can_read_body else {}
        author, reason = actor_and_reason(request, body)
        await plane.lock(request.match_info["route"], author=author, reason=reason)
        return json_response({"route": request.match_info["route"], "locked": True})

    async def unlock(request: web.Request) -> web.Response:
        author, _ = actor_and_reason(request, {})
        await plane.unlock(request.match_info["route"], author=author)
        return json_response({"route": request.match_info["route"], "locked": False})

    app.router.add_get("/admin/config", get_config)
    app.router.add_put("/admin/config", put_config)
    app.router.add_put("/admin/routes/{route}/weights", put_weights)
    app.router.add_post("/admin/routes/{route}/promote", promote)
    app.router.add_post("/admin/rollback", rollback)
    app.router.add_get("/admin/versions", versions)
    app.router.add_get("/admin/versions/{n}", one_version)
    app.router.add_get("/admin/diff", get_diff)
    app.router.add_post("/admin/routes/{route}/lock", lock)
    app.router.add_delete("/admin/routes/{route}/lock", unlock)


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a version number") from None
