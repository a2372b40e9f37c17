"""The gateway's HTTP server: the OpenAI API under /v1, dispatched to the pipeline.

aiohttp's low-level server is used with a dict lookup on (method, path) instead
of the routing application: the gateway has five fixed paths, and every
unknown path or method still gets an OpenAI-style JSON error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from turnout.exceptions import GatewayError, MethodNotAllowed, NotFound
from turnout.gateway.errors import error_response
from turnout.gateway.feedback import FeedbackService
from turnout.gateway.pipeline import Pipeline, parse_body, read_body
from turnout.gateway.transport import AiohttpTransport, Transport
from turnout.observe.observer import Observer
from turnout.resilience import HealthBook
from turnout.shadow.mirror import SampleSink
from turnout.snapshot import Snapshot

log = logging.getLogger(__name__)
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
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
            transport or AiohttpTransport(),
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        allowed = self._methods.get(request.path)
        if allowed:
            wrong = MethodNotAllowed(f"method {request.method} is not allowed on {request.path}")
            return error_response(wrong, {"allow": allowed})
        return error_response(NotFound(f"unknown path {request.path}"), {})

    async def _feedback(self, request: web.BaseRequest) -> web.Response:
        if self.feedback is None:
            raise NotFound("feedback needs the embedded store, which this gateway runs without")
        payload = parse_body(await read_body(request, FEEDBACK_MAX_BYTES))
        recorded = await self.feedback.record(payload)
        return web.Response(
            status=201, body=orjson.dumps(recorded), content_type="application/json"
        )

    async def _models(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=self.snapshot.models_body, content_type="application/json")

    async def _health(self, request: web.BaseRequest) -> web.Response:
        body = orjson.dumps(
            {"status": "ok", "config_version": self.snapshot.version, "pid": os.getpid()}
        )
        return web.Response(body=body, content_type="application/json")

    async def close(self) -> None:
        await self.pipeline.mirror.close()
        await self.pipeline.transport.close()


@dataclass
class RunningServer:
    runner: web.ServerRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_http(
    handler: Handler, host: str, port: int, *, reuse_port: bool = False
) -> RunningServer:
    """Serve ``handler`` on host:port (0 = a free port); returns the bound port."""

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return error_response(exc, {})
        except Exception:
            # A bug of ours must still answer in the API's own error shape, and be seen.
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return error_response(GatewayError("internal error in the gateway"), {})

    server = web.Server(guarded, handler_cancellation=True)
    runner = web.ServerRunner(server, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    bound = port
    for sock in runner.addresses:
        bound = int(sock[1])
    return RunningServer(runner, host, bound)


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
        reuse_port=reuse_port,
    )
    return gateway, server
