"""The request pipeline, in one place: parse → route → assign → transform → dispatch.

Every proxied request goes through ``Pipeline.proxy``. It reads the live snapshot
once, so a config swap mid-request never mixes two versions. Errors at any stage
are ``GatewayError``s turned into OpenAI-style responses by one handler.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from random import random
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web

from turnout.exceptions import GatewayError, InvalidRequest, PayloadTooLarge, UpstreamFailed
from turnout.gateway.errors import error_response, stream_error_event
from turnout.gateway.sse import StreamTap
from turnout.gateway.transport import Transport, UpstreamResponse
from turnout.observe.exchange import (
    UPSTREAM_ERROR,
    Exchange,
    error_class_of,
    error_class_of_status,
)
from turnout.observe.observer import Observer
from turnout.routing import RequestView, apply_variant
from turnout.routing.request import as_text
from turnout.snapshot import Snapshot, UpstreamTarget

H_ROUTE = "x-turnout-route"
H_VARIANT = "x-turnout-variant"
H_REQUEST_ID = "x-turnout-request-id"
H_UPSTREAM = "x-turnout-upstream"
H_CONFIG_VERSION = "x-turnout-config-version"
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


def _usage(parsed: Any, x: Exchange) -> None:
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        x.input_tokens = prompt if isinstance(prompt, int) else None
        x.output_tokens = completion if isinstance(completion, int) else None


def _ask_for_stream_usage(body: dict[str, Any], endpoint: str) -> bool:
    """Ask the upstream for usage in the final chunk; True if the client did not ask."""
    if endpoint == "embeddings":
        return False
    options = body.get("stream_options")
    if isinstance(options, dict):
        if options.get("include_usage") is True:
            return False
        body["stream_options"] = {**options, "include_usage": True}
    else:
        body["stream_options"] = {"include_usage": True}
    return True


class Pipeline:
    def __init__(self, snapshot: Snapshot, transport: Transport, observer: Observer) -> None:
        self.snapshot = snapshot  # swapped whole by the control plane, read once per request
        self.transport = transport
        self.observer = observer
        self.ids = RequestIds()

    async def proxy(self, request: web.BaseRequest, endpoint: str) -> web.StreamResponse:
        snap = self.snapshot
        x = Exchange(self.ids.next(), time.time(), perf_counter())
        headers = {H_REQUEST_ID: x.request_id, H_CONFIG_VERSION: snap.version_text}
        try:
            raw = await read_body(request, snap.max_body_bytes)
            body = parse_body(raw)
            # parse → route → assign → transform → dispatch; observe in `finally`.
            view = RequestView(request.path, request.headers, body, request.query_string)
            route = snap.router.match(view)
            x.route = headers[H_ROUTE] = route.name
            decision = snap.router.assign(route, view)
            variant = decision.variant
            headers[H_VARIANT] = variant.name
            apply_variant(decision, body, view)
            target = snap.upstreams[variant.upstream]
            headers[H_UPSTREAM] = target.name
            x.key = decision.key
            x.model = as_text(body.get("model"))
            sampler = snap.body_sampling.get(route.name)
            if sampler is not None and random() < sampler.rate:
                x.request_body = raw
            self.observer.begin(x, variant.name, target.name)
            response = await self._dispatch(request, x, target, endpoint, body, headers)
            x.status = response.status
            return response
        except GatewayError as exc:
            x.status = exc.status
            x.error_class = error_class_of(exc)
            return error_response(exc, headers)
        finally:
            x.end = perf_counter()
            self.observer.finish(x, snap)

    async def _dispatch(
        self,
        request: web.BaseRequest,
        x: Exchange,
        target: UpstreamTarget,
        endpoint: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        x.stream = body.get("stream") is True
        x.operation = endpoint
        strip_usage = x.stream and target.stream_usage and _ask_for_stream_usage(body, endpoint)
        x.sent = perf_counter()
        upstream = await self.transport.send(target, endpoint, orjson.dumps(body))
        if x.stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
            return await self._stream(request, x, upstream, headers, StreamTap(strip_usage))
        raw = await upstream.read()
        x.upstream_done = perf_counter()
        if upstream.status >= 400:
            x.error_class = error_class_of_status(upstream.status)
            status, raw = _relay_error(upstream.status, raw, target.name)
            return web.Response(
                status=status,
                body=raw,
                headers=_passed_on(upstream, headers),
                content_type="application/json",
            )
        try:
            _usage(orjson.loads(raw), x)
        except orjson.JSONDecodeError:
            raise UpstreamFailed(
                f"upstream {target.name!r} answered with a body that is not JSON",
                code="upstream_bad_response",
            ) from None
        if x.request_body is not None:
            x.response_body = raw
        return web.Response(
            status=upstream.status, body=raw, headers=headers, content_type="application/json"
        )

    async def _stream(
        self,
        request: web.BaseRequest,
        x: Exchange,
        upstream: UpstreamResponse,
        headers: dict[str, str],
        tap: StreamTap,
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=200, headers={**headers, **_SSE_HEADERS})
        try:
            await out.prepare(request)
            try:
                async for chunk in upstream.chunks():
                    if x.first_chunk is None:
                        x.first_chunk = perf_counter()
                    passed = tap.feed(chunk)
                    if passed:
                        await out.write(passed)
                rest = tap.flush()
                if rest:
                    await out.write(rest)
                if tap.errored:
                    x.error_class = UPSTREAM_ERROR
            except GatewayError as exc:
                # Headers are gone already: the only honest ending is an error event,
                # never a silently truncated stream.
                x.error_class = error_class_of(exc)
                await out.write(stream_error_event(exc))
            await out.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away; closing the upstream below stops the generation
        finally:
            x.upstream_done = perf_counter()
            x.input_tokens = tap.input_tokens
            x.output_tokens = tap.output_tokens if tap.output_tokens is not None else tap.chunks
            upstream.close()
        return out
