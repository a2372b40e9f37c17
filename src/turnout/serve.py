"""How turnout runs: one process, or a supervisor with worker processes.

One process (``--workers 1``) serves traffic and the admin API itself. With N
workers, the parent is the control plane: it serves the admin API and asks the
workers for their numbers over a Unix socket (``control.channel``); each worker
serves traffic on the shared port (SO_REUSEPORT). The assignment hash has no
per-process state, so a key gets the same variant from whichever worker answers.
Every process opens the same SQLite store; its request log is written by a writer
process of its own (``store.requestlog``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnout.config import Config, load_config
from turnout.control.admin import AdminContext, LocalStats, admin_app
from turnout.control.auth import admin_token, require_token_beyond_loopback
from turnout.control.plane import ControlPlane, document_of
from turnout.exceptions import ConfigError, GatewayError
from turnout.experiment.service import Experiments
from turnout.gateway.feedback import FeedbackService
from turnout.gateway.server import Gateway, serve_gateway
from turnout.observe.metrics import Registry
from turnout.observe.observer import Observer
from turnout.observe.tracing import open_spans
from turnout.resilience import HealthBook
from turnout.rollout.controller import RolloutController
from turnout.snapshot import Snapshot, build_snapshot
from turnout.store.configs import ConfigStore
from turnout.store.feedback import FeedbackStore
from turnout.store.requestlog import RequestLog
from turnout.store.shadow_samples import ShadowSampleStore


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (measured faster, bench/stack), else the default loop."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def run(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)


def settle_heap() -> None:
    """Call once a serving process has started: what exists now (modules, config,
    pools) lives as long as the process, so it is collected once and frozen out of
    the cyclic GC. Otherwise every full collection walks it again, and the
    request log's queued entries, which live long enough to reach the oldest
    generation, trigger those often: with streams, that cost ~5% of throughput
    and doubled p99 (bench/README.md)."""
    gc.collect()
    gc.freeze()


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def store_path(config: Config, base_dir: Path) -> Path:
    return base_dir / config.store.path


@dataclass
class ServingState:
    """What one serving process owns besides its sockets: metrics, log, feedback."""

    observer: Observer
    log: RequestLog | None
    feedback: FeedbackService
    samples: ShadowSampleStore  # disagreeing shadow pairs
    health: HealthBook = field(default_factory=HealthBook)  # upstream ejection, this process

    @classmethod
    def open(cls, config: Config, base_dir: Path, snapshot: Callable[[], Snapshot]) -> ServingState:
        path = store_path(config, base_dir)
        log = None
        if config.request_log.enabled:
            settings = config.request_log
            log = RequestLog(
                path,
                queue_limit=settings.queue_limit,
                max_age_seconds=settings.max_age_hours * 3600,
                max_rows=settings.max_rows,
                # Short transactions: a commit is a stretch of CPU the writer process
                # cannot yield in, and it may share a core with this event loop.
                # A longer interval: fewer commits when traffic is light.
                batch_size=256,
                flush_interval=0.25,
            )
            log.start()
        feedback = FeedbackService(FeedbackStore(path), log, snapshot)
        spans = open_spans(config.tracing)
        observer = Observer(Registry(), log, config.metrics.enabled, spans)
        return cls(observer, log, feedback, ShadowSampleStore(path))

    def log_counters(self) -> dict[str, int]:
        return self.log.counters() if self.log is not None else {}

    async def close(self) -> None:
        if self.observer.spans is not None:
            self.observer.spans.close()
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)
        await self.feedback.close()
        await asyncio.get_running_loop().run_in_executor(None, self.samples.close)


async def start_admin(
    ctx: AdminContext,
    host: str,
    port: int,
    plane: ControlPlane | None = None,
    rollouts: RolloutController | None = None,
) -> Any:
    from aiohttp import web  # noqa: PLC0415

    experiments = samples = None
    if plane is not None:
        path = store_path(plane.snapshot.config, plane.base_dir)
        experiments = Experiments(plane, path)
        samples = ShadowSampleStore(path)
    app = admin_app(ctx, plane, rollouts, experiments, samples)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def start_rollouts(plane: ControlPlane, config: Config, base_dir: Path) -> RolloutController:
    """The rollout controller, beside the control plane it changes the config through."""
    settings = config.controller
    controller = RolloutController(
        plane,
        store_path(config, base_dir),
        base_dir,
        interval=settings.interval,
        lease_ttl=settings.lease_ttl,
    )
    await controller.start()
    return controller


@dataclass
class Addresses:
    host: str
    port: int
    admin_host: str
    admin_port: int


@dataclass
class OneProcess:
    """A running single-process turnout: gateway, admin API, store."""

    gateway: Any
    server: Any
    admin: Any
    state: ServingState
    plane: ControlPlane
    rollouts: RolloutController

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def admin_port(self) -> int:
        return int(self.admin.addresses[0][1])

    async def close(self) -> None:
        await self.rollouts.close()
        await self.admin.cleanup()
        await self.server.close()
        await self.gateway.close()
        await self.state.close()
        await self.plane.close()


async def start_one(
    config: Config,
    base_dir: Path,
    at: Addresses,
    *,
    source: str = "config",
    prefer_file: bool = False,
) -> OneProcess:
    """Control plane, gateway and admin API in this process; the store in base_dir."""
    plane = ControlPlane(
        ConfigStore(store_path(config, base_dir)), base_dir, publish=lambda s: _swap(gateway, s)
    )
    snapshot = await plane.bootstrap(config, source=source, prefer_file=prefer_file)
    state = ServingState.open(snapshot.config, base_dir, lambda: gateway.snapshot)
    gateway, server = await serve_gateway(
        snapshot,
        host=at.host,
        port=at.port,
        observer=state.observer,
        feedback=state.feedback,
        health=state.health,
        samples=state.samples,
    )
    ctx = AdminContext(
        snapshot=lambda: gateway.snapshot,
        stats=LocalStats(state.observer.registry, state.log_counters, state.health),
        token=admin_token(),
        feedback_summaries=state.feedback.summaries,
        record_feedback=state.feedback.record,
    )
    rollouts = await start_rollouts(plane, snapshot.config, base_dir)
    admin = await start_admin(ctx, at.admin_host, at.admin_port, plane, rollouts)
    return OneProcess(gateway, server, admin, state, plane, rollouts)


async def _swap(gateway: Gateway, snapshot: Snapshot) -> None:
    gateway.swap(snapshot)


async def watch_file(path: Path, plane: ControlPlane, every: float = 1.0) -> None:
    """Apply the file whenever it changes, through the same validation and versioning."""

    def stamp() -> tuple[float, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    seen = stamp()
    while True:
        await asyncio.sleep(every)
        now = stamp()
        if now is None or now == seen:
            continue
        seen = now
        try:
            outcome = await plane.apply(
                document_of(load_config(path)),
                author="file-watch",
                reason=f"{path.name} changed",
                source="file-watch",
            )
        except (ConfigError, GatewayError) as exc:
            print(f"turnout: {path} not applied: {exc}", file=sys.stderr, flush=True)
            continue
        if outcome.changed:
            print(f"turnout: {path} applied as version {outcome.version}", flush=True)


async def serve_one(
    config: Config,
    base_dir: Path,
    at: Addresses,
    *,
    source: str = "config",
    prefer_file: bool = False,
    watch: Path | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Everything in this one process, until SIGINT or SIGTERM."""
    running = await start_one(config, base_dir, at, source=source, prefer_file=prefer_file)
    watcher = asyncio.create_task(watch_file(watch, running.plane)) if watch else None
    settle_heap()
    if on_ready is not None:
        on_ready(running.port)
    else:
        print(
            f"turnout gateway on http://{at.host}:{running.port}/v1, admin on"
            f" http://{at.admin_host}:{running.admin_port}, config version"
            f" {running.plane.snapshot.version} (pid {os.getpid()})",
            flush=True,
        )
    try:
        await wait_for_stop_signal()
    finally:
        if watcher is not None:
            watcher.cancel()
        await running.close()


def serve(
    config_path: str,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    workers: int = 1,
    from_file: bool = False,
    watch: bool = False,
) -> None:
    """Validate the file first, so a bad one fails before anything starts.

    turnout comes back on the last accepted version in its store; ``from_file``
    makes the file the live config instead (stored as a new version).
    """
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    build_snapshot(config, base_dir=base_dir)
    at = Addresses(
        host=config.gateway.host if host is None else host,
        port=config.gateway.port if port is None else port,
        admin_host=config.admin.host,
        admin_port=config.admin.port if admin_port is None else admin_port,
    )
    require_token_beyond_loopback(at.host)
    require_token_beyond_loopback(at.admin_host, "admin.host")
    watched = Path(config_path) if watch else None
    if workers <= 1:
        run(
            serve_one(
                config, base_dir, at, source=config_path, prefer_file=from_file, watch=watched
            )
        )
        return
    if at.port == 0:
        raise ConfigError.single("gateway.port", "several workers need a fixed port, not 0")
    from turnout.control.supervisor import serve_many  # noqa: PLC0415

    run(
        serve_many(
            config, base_dir, at, workers, source=config_path, prefer_file=from_file, watch=watched
        )
    )
