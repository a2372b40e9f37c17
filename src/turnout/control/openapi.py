"""The admin API's OpenAPI 3.1 description, served at ``/admin/openapi.json``.

Written out by hand (the API is small) and checked against the live routes by a
test, so an endpoint cannot be added without being documented here.
"""

from __future__ import annotations

from typing import Any

from turnout import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_CHANGE = {"$ref": "#/components/schemas/ChangeResult"}


def _op(summary: str, ok: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": ok or {"type": "object"}}},
        },
        "400": {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}},
        "401": {"description": "Missing or wrong admin token"},
    }
    return {"summary": summary, "responses": responses, **extra}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_WHO = {"author": {"type": "string"}, "reason": {"type": "string"}}
_ROUTE = [{"name": "route", "in": "path", "required": True, "schema": {"type": "string"}}]
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_COMMAND = {
    "name": "command",
    "in": "path",
    "required": True,
    "schema": {"enum": ["abort", "promote", "resume", "retry"]},
}


def openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness and the live config version (no token needed)")},
        "/metrics": {"get": _op("Prometheus text exposition of the per-variant metrics")},
        "/admin/stats": {
            "get": _op(
                "Per-variant and per-upstream numbers, merged over every worker",
                parameters=[
                    {
                        "name": "window",
                        "in": "query",
                        "schema": {"enum": ["60s", "300s", "3600s", "cumulative"]},
                    }
                ],
            )
        },
        "/admin/feedback": {
            "post": _op(
                "Attach a score or event to a request id, or to a stickiness key",
                requestBody=_body({"$ref": "#/components/schemas/Feedback"}),
            )
        },
        "/admin/config": {
            "get": _op("The live config, its version and the route locks"),
            "put": _op(
                "Apply a whole new config (validated first; 422 lists every error)",
                _CHANGE,
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["config"],
                        "properties": {"config": {"type": "object"}, **_WHO},
                    }
                ),
            ),
        },
        "/admin/routes/{route}/weights": {
            "put": _op(
                "Change one route's variant weights",
                _CHANGE,
                parameters=_ROUTE,
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["weights"],
                        "properties": {
                            "weights": {
                                "type": "object",
                                "additionalProperties": {"type": "number"},
                            },
                            **_WHO,
                        },
                    }
                ),
            )
        },
        "/admin/routes/{route}/promote": {
            "post": _op(
                "Send 100% of a route to one variant",
                _CHANGE,
                parameters=_ROUTE,
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["variant"],
                        "properties": {"variant": {"type": "string"}, **_WHO},
                    }
                ),
            )
        },
        "/admin/rollback": {
            "post": _op(
                "Go back to the previous version, or to version `to`, as a new version",
                _CHANGE,
                requestBody={
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "to": {"type": "integer"},
                                    "force": {"type": "boolean"},
                                    **_WHO,
                                },
                            }
                        }
                    }
                },
            )
        },
        "/admin/versions": {"get": _op("Accepted config versions, newest first")},
        "/admin/versions/{n}": {
            "get": _op(
                "One version with its config",
                parameters=[
                    {"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
            )
        },
        "/admin/diff": {
            "get": _op(
                "What changed from version a to version b (default: the live config)",
                parameters=[
                    {"name": "a", "in": "query", "required": True, "schema": {"type": "integer"}},
                    {"name": "b", "in": "query", "schema": {"type": "integer"}},
                ],
            )
        },
        "/admin/routes/{route}/lock": {
            "post": _op("Lock a route against changes", parameters=_ROUTE),
            "delete": _op("Unlock a route", parameters=_ROUTE),
        },
        "/admin/openapi.json": {"get": _op("This document")},
        "/admin/rollouts": {
            "get": _op("Every rollout with its status"),
            "post": _op(
                'Start a rollout: {"rollout": {name, route, stable, candidate, steps, ...}}',
                requestBody=_body({"type": "object", "required": ["rollout"]}),
            ),
        },
        "/admin/experiments": {"get": _op("The experiments of the live config")},
        "/admin/experiments/{name}": {
            "get": _op(
                "An experiment's report: SRM, per-metric effects and intervals, winner",
                parameters=_NAME,
            )
        },
        "/admin/experiments/{name}/units.csv": {
            "get": _op(
                "One CSV row per unit: key hash, variant, requests, metrics", parameters=_NAME
            )
        },
        "/admin/experiments/{name}/stop": {
            "post": _op(
                "End an experiment; with a winner, give it all of the route's traffic",
                parameters=_NAME,
                requestBody=_body(
                    {"type": "object", "properties": {"winner": {"type": ["string", "null"]}}}
                ),
            )
        },
        "/admin/shadows/{route}/samples": {
            "get": _op(
                "The newest stored disagreeing pairs of a route's shadows (redacted)",
                parameters=[
                    *_ROUTE,
                    {"name": "shadow", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
            )
        },
        "/admin/rollouts/{name}": {
            "get": _op(
                "A rollout's step, time left, weights, latest verdicts and history",
                parameters=_NAME,
            )
        },
        "/admin/rollouts/{name}/{command}": {
            "post": _op(
                "abort, promote, resume or retry a rollout; body: {reason}",
                parameters=[*_NAME, _COMMAND],
                requestBody=_body({"type": "object", "properties": {"reason": {"type": "string"}}}),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "turnout admin API", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": "string"},
                                "errors": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "path": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        }
                    },
                },
                "ChangeResult": {
                    "type": "object",
                    "properties": {
                        "version": {"type": "integer"},
                        "changed": {"type": "boolean"},
                        "changes": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Feedback": {
                    "type": "object",
                    "required": ["name", "value"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "key": {"type": "string"},
                        "route": {"type": "string"},
                        "name": {"type": "string"},
                        "value": {"type": ["number", "boolean"]},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
