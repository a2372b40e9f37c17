"""The request pipeline, in one place: parse → route → assign → transform → dispatch.

Requests a route mirrors are also offered to its shadows (``shadow.mirror``), which
never hold the request up.

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

from turnout.exceptions import GatewayError, InvalidRequest
from turnout.gateway.dispatch import Dispatcher
from turnout.gateway.errors import error_response
from turnout.gateway.http1 import Request, Response, StreamResponse
from turnout.gateway.transport import Transport
from turnout.observe.exchange import (
    Exchange,
    error_class_of,
)
from turnout.observe.observer import Observer
from turnout.resilience import HealthBook
from turnout.routing import RequestView, apply_variant
from turnout.routing.request import as_text
from turnout.routing.transform import Usage, stream_usage
from turnout.shadow.mirror import Live, Mirror, SampleSink
from turnout.snapshot import Snapshot

H_ROUTE = "x-turnout-route"
H_VARIANT = "x-turnout-variant"
H_REQUEST_ID = "x-turnout-request-id"
H_CONFIG_VERSION = "x-turnout-config-version"


class RequestIds:
    """Unique across processes and hosts without coordination: random prefix + counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"the request body is not valid JSON: {exc}"
        raise InvalidRequest(msg, code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return body


class Pipeline:
    def __init__(
        self,
        snapshot: Snapshot,
        transport: Transport,
        observer: Observer,
        health: HealthBook,
        samples: SampleSink | None = None,
    ) -> None:
        self.snapshot = snapshot  # swapped whole by the control plane, read once per request
        self.transport = transport
        self.observer = observer
        self.dispatcher = Dispatcher(transport, observer, health)
        self.mirror = Mirror(transport, observer.registry, samples)
        self.ids = RequestIds()

    async def proxy(self, request: Request, endpoint: str) -> Response | StreamResponse:
        snap = self.snapshot
        x = Exchange(self.ids.next(), time.time(), perf_counter())
        headers = {H_REQUEST_ID: x.request_id, H_CONFIG_VERSION: snap.version_text}
        live: Live | None = None
        try:
            raw = request.body  # read whole, within the live limit, by the server
            body = parse_body(raw)
            # parse → route → assign → transform → dispatch; observe in `finally`.
            view = RequestView(request.path, request.headers, body, request.query_string)
            route = snap.router.match(view)
            x.route = headers[H_ROUTE] = route.name
            decision = snap.router.assign(route, view)
            variant = decision.variant
            headers[H_VARIANT] = variant.name
            x.key = decision.key
            shadows = snap.shadows.get(route.name)
            if shadows is not None:
                # Before the variant's changes: a shadow's match sees the client's request.
                live = self.mirror.offer(shadows, snap, x, raw, view, endpoint, variant.name)
            apply_variant(decision, body, view)
            policy = snap.policies[route.name]
            chain = policy.chains[variant.name]
            region = policy.region(view) if policy.region is not None else None
            steps = chain.steps(region if isinstance(region, str) else None)
            x.model = as_text(body.get("model"))
            sampler = snap.body_sampling.get(route.name)
            if sampler is not None and random() < sampler.rate:
                x.request_body = raw
            self.observer.begin(x, variant.name, steps[0].target.name)
            x.stream = body.get("stream") is True
            x.operation = endpoint
            usage = (
                stream_usage(body, endpoint, steps[0].target.stream_usage)
                if x.stream
                else Usage.NOT_ASKED
            )
            response = await self.dispatcher.run(
                request, x, policy, chain, steps, body, headers, usage
            )
            x.status = response.status
            return response
        except GatewayError as exc:
            x.status = exc.status
            x.error_class = error_class_of(exc)
            return error_response(exc, headers)
        except asyncio.CancelledError:
            x.client_gone = True  # the server cancels the handler of a client that left
            raise
        finally:
            x.end = perf_counter()
            self.observer.finish(x, snap)
            if live is not None:
                self.mirror.settle(live, x)
