"""The request pipeline, in one place: parse → route → assign → transform → dispatch.

Every proxied request goes through ``Pipeline.proxy``. It reads the live snapshot
once, so a config swap mid-request never mixes two versions. Errors at any stage
are ``GatewayError``s turned into OpenAI-style responses by one handler.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import orjson
from aiohttp import web

from turnout.exceptions import GatewayError, InvalidRequest, PayloadTooLarge, UpstreamFailed
from turnout.gateway.errors import error_response, stream_error_event
from turnout.gateway.transport import Transport, UpstreamResponse
from turnout.routing import RequestView, apply_variant
from turnout.routing.router import Decision
from turnout.snapshot import Snapshot

H_ROUTE = "x-turnout-route"
H_VARIANT = "x-turnout-variant"
H_REQUEST_ID = "x-turnout-request-id"
H_UPSTREAM = "x-turnout-upstream"
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class RequestIds:
    """Unique across processes and hosts without coordination: random prefix + counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes is over the {limit}-byte limit")
        if length == 0:
            return b""
        # Read from the stream directly: request.read() would apply aiohttp's own
        # 1 MiB client_max_size instead of the configured limit.
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise InvalidRequest("the request body ended early", code="invalid_body") from None
    # Chunked upload: count as we go so an endless body cannot exhaust memory.
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
        parts.append(chunk)
    return b"".join(parts)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"the request body is not valid JSON: {exc}"
        raise InvalidRequest(msg, code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return body


def _passed_on(upstream: UpstreamResponse, headers: dict[str, str]) -> dict[str, str]:
    """Rate-limit hints the client backs off by (Retry-After, x-ratelimit-*)."""
    for name, value in upstream.headers.items():
        if name.lower().startswith(("retry-after", "x-ratelimit-")):
            headers[name] = value
    return headers


def _relay_error(status: int, raw: bytes, upstream: str) -> tuple[int, bytes]:
    """An upstream's own error is passed on if it is an OpenAI-style error body."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict | str):
        return status, raw
    raise UpstreamFailed(
        f"upstream {upstream!r} answered HTTP {status} without an OpenAI-style error body",
        code="upstream_bad_response",
    )


class Pipeline:
    def __init__(self, snapshot: Snapshot, transport: Transport) -> None:
        self.snapshot = snapshot  # swapped whole by the control plane, read once per request
        self.transport = transport
        self.ids = RequestIds()

    async def proxy(self, request: web.BaseRequest, endpoint: str) -> web.StreamResponse:
        snap = self.snapshot
        headers = {H_REQUEST_ID: self.ids.next()}
        try:
            body = parse_body(await read_body(request, snap.max_body_bytes))
            view = RequestView(request.path, request.headers, body, request.query_string)
            route = snap.router.match(view)
            headers[H_ROUTE] = route.name
            decision = snap.router.assign(route, view)
            headers[H_VARIANT] = decision.variant.name
            apply_variant(decision, body, view)
            return await self._dispatch(request, snap, decision, endpoint, body, headers)
        except GatewayError as exc:
            return error_response(exc, headers)

    async def _dispatch(
        self,
        request: web.BaseRequest,
        snap: Snapshot,
        decision: Decision,
        endpoint: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        target = snap.upstreams[decision.variant.upstream]
        headers[H_UPSTREAM] = target.name
        upstream = await self.transport.send(target, endpoint, orjson.dumps(body))
        if (
            body.get("stream") is True
            and upstream.status == 200
            and upstream.content_type == "text/event-stream"
        ):
            return await self._stream(request, upstream, headers)
        raw = await upstream.read()
        if upstream.status >= 400:
            status, raw = _relay_error(upstream.status, raw, target.name)
            return web.Response(
                status=status,
                body=raw,
                headers=_passed_on(upstream, headers),
                content_type="application/json",
            )
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailed(
                f"upstream {target.name!r} answered with a body that is not JSON",
                code="upstream_bad_response",
            ) from None
        return web.Response(
            status=upstream.status, body=raw, headers=headers, content_type="application/json"
        )

    async def _stream(
        self, request: web.BaseRequest, upstream: UpstreamResponse, headers: dict[str, str]
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=200, headers={**headers, **_SSE_HEADERS})
        try:
            await out.prepare(request)
            try:
                async for chunk in upstream.chunks():
                    await out.write(chunk)
            except GatewayError as exc:
                # Headers are gone already: the only honest ending is an error event,
                # never a silently truncated stream.
                await out.write(stream_error_event(exc))
            await out.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away; closing the upstream below stops the generation
        finally:
            upstream.close()
        return out
