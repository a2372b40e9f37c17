"""How turnout runs: one process, or a supervisor with worker processes.

One process (``--workers 1``) serves traffic and the admin API itself. With N
workers, the parent is the control plane: it serves the admin API and asks the
workers for their numbers over a Unix socket (``control.channel``); each worker
serves traffic on the shared port (SO_REUSEPORT). The assignment hash has no
per-process state, so a key gets the same variant from whichever worker answers.
Every process opens the same SQLite store; writes go through its own writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.config import Config, config_from_mapping, load_config
from turnout.control.admin import AdminContext, LocalStats, admin_app, process_export
from turnout.control.auth import admin_token, require_token_beyond_loopback
from turnout.control.channel import Hub, serve_supervisor
from turnout.exceptions import ConfigError
from turnout.gateway.feedback import FeedbackService
from turnout.gateway.server import serve_gateway
from turnout.observe.metrics import Registry
from turnout.observe.observer import Observer
from turnout.snapshot import Snapshot, build_snapshot
from turnout.store.feedback import FeedbackStore
from turnout.store.requestlog import RequestLog


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
class Plane:
    """What one serving process owns besides its sockets."""

    observer: Observer
    log: RequestLog | None
    feedback: FeedbackService

    @classmethod
    def open(cls, config: Config, base_dir: Path, snapshot: Callable[[], Snapshot]) -> Plane:
        path = store_path(config, base_dir)
        log = None
        if config.request_log.enabled:
            settings = config.request_log
            log = RequestLog(
                path,
                queue_limit=settings.queue_limit,
                max_age_seconds=settings.max_age_hours * 3600,
                max_rows=settings.max_rows,
            )
            log.start()
        feedback = FeedbackService(FeedbackStore(path), log, snapshot)
        return cls(Observer(Registry(), log, config.metrics.enabled), log, feedback)

    def log_counters(self) -> dict[str, int]:
        return self.log.counters() if self.log is not None else {}

    async def close(self) -> None:
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)
        await self.feedback.close()


async def start_admin(ctx: AdminContext, host: str, port: int) -> Any:
    from aiohttp import web  # noqa: PLC0415

    runner = web.AppRunner(admin_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


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
    plane: Plane

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def admin_port(self) -> int:
        return int(self.admin.addresses[0][1])

    async def close(self) -> None:
        await self.admin.cleanup()
        await self.server.close()
        await self.gateway.close()
        await self.plane.close()


async def start_one(snapshot: Snapshot, base_dir: Path, at: Addresses) -> OneProcess:
    plane = Plane.open(snapshot.config, base_dir, lambda: gateway.snapshot)
    gateway, server = await serve_gateway(
        snapshot, host=at.host, port=at.port, observer=plane.observer, feedback=plane.feedback
    )
    ctx = AdminContext(
        snapshot=lambda: gateway.snapshot,
        stats=LocalStats(plane.observer.registry, plane.log_counters),
        token=admin_token(),
        feedback_summaries=plane.feedback.summaries,
        record_feedback=plane.feedback.record,
    )
    admin = await start_admin(ctx, at.admin_host, at.admin_port)
    return OneProcess(gateway, server, admin, plane)


async def serve_one(
    snapshot: Snapshot,
    base_dir: Path,
    at: Addresses,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Gateway and admin API in this one process, until SIGINT or SIGTERM."""
    running = await start_one(snapshot, base_dir, at)
    if on_ready is not None:
        on_ready(running.port)
    else:
        print(
            f"turnout gateway on http://{at.host}:{running.port}/v1, admin on"
            f" http://{at.admin_host}:{at.admin_port} (pid {os.getpid()})",
            flush=True,
        )
    try:
        await wait_for_stop_signal()
    finally:
        await running.close()


async def _serve_worker(
    snapshot: Snapshot, base_dir: Path, host: str, port: int, hub_path: str
) -> None:
    plane = Plane.open(snapshot.config, base_dir, lambda: gateway.snapshot)
    gateway, server = await serve_gateway(
        snapshot,
        host=host,
        port=port,
        reuse_port=True,
        observer=plane.observer,
        feedback=plane.feedback,
    )

    async def answer(msg: dict[str, Any]) -> Any:
        if msg.get("op") == "stats":
            return process_export(plane.observer.registry, msg["window"], plane.log_counters())
        return {"error": f"unknown op {msg.get('op')!r}"}

    link = asyncio.create_task(serve_supervisor(hub_path, answer))
    print(f"turnout worker on http://{host}:{server.port}/v1 (pid {os.getpid()})", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        await server.close()
        await gateway.close()
        await plane.close()


def _worker(document: dict[str, Any], base_dir: str, host: str, port: int, hub: str) -> None:
    # The parent validated this very document; a worker never re-reads the file,
    # which may have changed since.
    snapshot = build_snapshot(config_from_mapping(document), base_dir=Path(base_dir))
    run(_serve_worker(snapshot, Path(base_dir), host, port, hub))


RESTART_LIMIT = 5  # consecutive early deaths of one worker before giving up
EARLY_DEATH_SECONDS = 10.0


class _Workers:
    """Keeps N worker processes alive; a worker that dies is replaced."""

    def __init__(self, args: tuple[Any, ...], n: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._args = args
        self._procs = [self._start() for _ in range(n)]
        self._early_deaths = [0] * n

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, float]:
        proc = self._ctx.Process(target=_worker, args=self._args)
        proc.start()
        return proc, time.monotonic()

    async def watch(self) -> None:
        while True:
            for i, (proc, started) in enumerate(self._procs):
                if proc.is_alive():
                    continue
                early = time.monotonic() - started < EARLY_DEATH_SECONDS
                self._early_deaths[i] = self._early_deaths[i] + 1 if early else 0
                if self._early_deaths[i] >= RESTART_LIMIT:
                    raise SystemExit(
                        f"turnout: a worker keeps dying at start (exit {proc.exitcode})"
                    )
                print(
                    f"turnout: worker pid {proc.pid} exited ({proc.exitcode}); starting another",
                    file=sys.stderr,
                    flush=True,
                )
                self._procs[i] = self._start()
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for proc, _ in self._procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc, _ in self._procs:
            await asyncio.get_running_loop().run_in_executor(None, proc.join)


class HubStats:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def exports(self, window: str) -> list[dict[str, Any]]:
        answers = await self.hub.ask_all("stats", window=window)
        return [a for a in answers if isinstance(a, dict) and "variants" in a]


async def serve_many(snapshot: Snapshot, base_dir: Path, at: Addresses, workers: int) -> None:
    """The supervisor: admin API and worker processes, until SIGINT or SIGTERM."""
    config = snapshot.config
    with tempfile.TemporaryDirectory(prefix="turnout-") as tmp:
        hub = Hub(str(Path(tmp) / "hub.sock"))
        await hub.start()
        document = config.model_dump(mode="json", by_alias=True, exclude_none=True)
        procs = _Workers((document, str(base_dir), at.host, at.port, hub.path), workers)
        feedback = FeedbackService(
            FeedbackStore(store_path(config, base_dir)), None, lambda: snapshot
        )
        ctx = AdminContext(
            snapshot=lambda: snapshot,
            stats=HubStats(hub),
            token=admin_token(),
            feedback_summaries=feedback.summaries,
        )
        admin = await start_admin(ctx, at.admin_host, at.admin_port)
        print(
            f"turnout admin on http://{at.admin_host}:{at.admin_port}, {workers} workers",
            flush=True,
        )
        watcher = asyncio.create_task(procs.watch())
        stopper = asyncio.create_task(wait_for_stop_signal())
        try:
            done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a watcher that gave up raises SystemExit here
        finally:
            watcher.cancel()
            stopper.cancel()
            await procs.stop()
            await admin.cleanup()
            await hub.close()
            await feedback.close()


def serve(
    config_path: str,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    workers: int = 1,
) -> None:
    """Validate the config here first, so a bad one fails before anything starts."""
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    snapshot = build_snapshot(config, base_dir=base_dir)
    at = Addresses(
        host=config.gateway.host if host is None else host,
        port=config.gateway.port if port is None else port,
        admin_host=config.admin.host,
        admin_port=config.admin.port if admin_port is None else admin_port,
    )
    require_token_beyond_loopback(at.host)
    require_token_beyond_loopback(at.admin_host, "admin.host")
    if workers <= 1:
        run(serve_one(snapshot, base_dir, at))
        return
    if at.port == 0:
        raise ConfigError.single("gateway.port", "several workers need a fixed port, not 0")
    run(serve_many(snapshot, base_dir, at, workers))
