"""OpenAI-style error bodies: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from turnout.exceptions import GatewayError
from turnout.gateway.http1 import Response


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "code": code, "param": param}}
    )


def error_response(exc: GatewayError, headers: Mapping[str, str]) -> Response:
    """The error as the client gets it. ``x-should-retry: false`` because the gateway
    has done whatever retrying the route allows (docs/resilience.md)."""
    return Response(
        exc.status,
        error_body(exc.message, exc.type, exc.code, exc.param),
        {**headers, "x-should-retry": "false"},
    )


def stream_error_event(exc: GatewayError) -> bytes:
    """An SSE event the ``openai`` client raises as an APIError mid-stream."""
    return b"data: " + error_body(exc.message, exc.type, exc.code) + b"\n\n"
