"""The gateway's front: the OpenAI API under /v1 on our HTTP/1.1 server (``http1``).

A dict lookup on (method, path) stands in for a routing framework: the gateway has
a few fixed paths, and every unknown path or method still gets an OpenAI-style
JSON error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from turnout.exceptions import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from turnout.gateway.errors import error_response
from turnout.gateway.feedback import FeedbackService
from turnout.gateway.http1 import HttpServer, Request, Response, StreamResponse
from turnout.gateway.pipeline import Pipeline, parse_body
from turnout.gateway.transport import Transport
from turnout.gateway.upstream_client import H1Transport
from turnout.observe.observer import Observer
from turnout.resilience import HealthBook
from turnout.shadow.mirror import SampleSink
from turnout.snapshot import Snapshot

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response | StreamResponse]]
FEEDBACK_MAX_BYTES = 64 * 1024


class Gateway:
    """One process's gateway: a pipeline, its transport, and the HTTP front."""

    def __init__(
        self,
        snapshot: Snapshot,
        transport: Transport | None = None,
        observer: Observer | None = None,
        feedback: FeedbackService | None = None,
        health: HealthBook | None = None,
        samples: SampleSink | None = None,
    ) -> None:
        self.observer = observer if observer is not None else Observer()
        self.feedback = feedback
        self.pipeline = Pipeline(
            snapshot,
            transport or H1Transport(),
            self.observer,
            health or HealthBook(),
            samples,
        )
        p = self.pipeline
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): lambda r: p.proxy(r, "chat/completions"),
            ("POST", "/v1/completions"): lambda r: p.proxy(r, "completions"),
            ("POST", "/v1/embeddings"): lambda r: p.proxy(r, "embeddings"),
            ("POST", "/v1/feedback"): self._feedback,
            ("GET", "/v1/models"): self._models,
            ("GET", "/healthz"): self._health,
        }
        self._methods: dict[str, str] = {}
        for method, path in self._routes:
            self._methods[path] = ", ".join(filter(None, [self._methods.get(path), method]))

    @property
    def snapshot(self) -> Snapshot:
        return self.pipeline.snapshot

    def swap(self, snapshot: Snapshot) -> None:
        """Serve every request that starts from now on with ``snapshot``."""
        self.pipeline.snapshot = snapshot

    async def handle(self, request: Request) -> Response | StreamResponse:
        """Never raises: a ``GatewayError`` is its JSON error, and so is a bug of ours."""
        try:
            handler = self._routes.get((request.method, request.path))
            if handler is not None:
                return await handler(request)
            allowed = self._methods.get(request.path)
            if allowed:
                wrong = MethodNotAllowed(
                    f"method {request.method} is not allowed on {request.path}"
                )
                return error_response(wrong, {"allow": allowed})
            return error_response(NotFound(f"unknown path {request.path}"), {})
        except GatewayError as exc:
            return error_response(exc, {})
        except Exception:
            # A bug of ours must still answer in the API's own error shape, and be seen.
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return error_response(GatewayError("internal error in the gateway"), {})

    def max_body(self) -> int:
        """The largest request body the server reads, from the live config."""
        return self.pipeline.snapshot.max_body_bytes

    async def _feedback(self, request: Request) -> Response:
        if self.feedback is None:
            raise NotFound("feedback needs the embedded store, which this gateway runs without")
        if len(request.body) > FEEDBACK_MAX_BYTES:
            raise PayloadTooLarge(f"feedback is over the {FEEDBACK_MAX_BYTES}-byte limit")
        recorded = await self.feedback.record(parse_body(request.body))
        return Response(201, orjson.dumps(recorded))

    async def _models(self, request: Request) -> Response:
        return Response(body=self.snapshot.models_body)

    async def _health(self, request: Request) -> Response:
        body = orjson.dumps(
            {"status": "ok", "config_version": self.snapshot.version, "pid": os.getpid()}
        )
        return Response(body=body)

    async def close(self) -> None:
        await self.pipeline.mirror.close()
        await self.pipeline.transport.close()


@dataclass
class RunningServer:
    server: HttpServer
    host: str
    port: int

    async def close(self) -> None:
        await self.server.close()


async def start_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body: Callable[[], int],
    reuse_port: bool = False,
) -> RunningServer:
    """Serve ``handler`` on host:port (0 = a free port); returns the bound port."""
    server = HttpServer(handler, max_body)
    bound = await server.start(host, port, reuse_port=reuse_port)
    return RunningServer(server, host, bound)


async def serve_gateway(
    snapshot: Snapshot,
    *,
    host: str | None = None,
    port: int | None = None,
    reuse_port: bool = False,
    observer: Observer | None = None,
    feedback: FeedbackService | None = None,
    health: HealthBook | None = None,
    samples: SampleSink | None = None,
) -> tuple[Gateway, RunningServer]:
    gateway = Gateway(
        snapshot, observer=observer, feedback=feedback, health=health, samples=samples
    )
    cfg = snapshot.config.gateway
    server = await start_http(
        gateway.handle,
        cfg.host if host is None else host,
        cfg.port if port is None else port,
        max_body=gateway.max_body,
        reuse_port=reuse_port,
    )
    return gateway, server
