"""``turnout serve --workers N``: the parent is the control plane, the workers serve.

The parent owns the config store and the admin API. Workers share the gateway
port (SO_REUSEPORT) and hold a link to the parent (``channel``): the parent pushes
every accepted config version to all of them at once and asks them for their
numbers when the admin API needs them. A worker that (re)connects is handed the
live version first, so a replaced worker never serves an old config. A worker
ignores a version older than the one it has, so pushes may race harmlessly.
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
from pathlib import Path
from typing import Any

from turnout.config import Config, config_from_mapping
from turnout.control.admin import AdminContext, process_export
from turnout.control.auth import admin_token
from turnout.control.channel import Hub, WorkerLink, serve_supervisor
from turnout.control.plane import ControlPlane
from turnout.gateway.feedback import FeedbackService
from turnout.gateway.server import serve_gateway
from turnout.serve import (
    Addresses,
    ServingState,
    run,
    settle_heap,
    start_admin,
    start_rollouts,
    store_path,
    wait_for_stop_signal,
    watch_file,
)
from turnout.snapshot import Snapshot, build_snapshot
from turnout.store.configs import ConfigStore
from turnout.store.feedback import FeedbackStore

PUSH_WAIT = 2.0  # seconds a config push waits for every worker's acknowledgement


async def _serve_worker(
    snapshot: Snapshot, base_dir: Path, host: str, port: int, hub_path: str
) -> None:
    state = ServingState.open(snapshot.config, base_dir, lambda: gateway.snapshot)
    gateway, server = await serve_gateway(
        snapshot,
        host=host,
        port=port,
        reuse_port=True,
        observer=state.observer,
        feedback=state.feedback,
        health=state.health,
        samples=state.samples,
    )

    async def answer(msg: dict[str, Any]) -> Any:
        op = msg.get("op")
        if op == "stats":
            return process_export(
                state.observer.registry, msg["window"], state.log_counters(), state.health
            )
        if op == "config":
            version = int(msg["version"])
            if version > gateway.snapshot.version:
                config = config_from_mapping(msg["document"])
                gateway.swap(build_snapshot(config, version=version, base_dir=base_dir))
            return {"version": gateway.snapshot.version, "pid": os.getpid()}
        return {"error": f"unknown op {op!r}"}

    link = asyncio.create_task(serve_supervisor(hub_path, answer))
    settle_heap()
    print(f"turnout worker on http://{host}:{server.port}/v1 (pid {os.getpid()})", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        await server.close()
        await gateway.close()
        await state.close()


def _worker(document: dict[str, Any], version: int, base_dir: str, at: tuple[Any, ...]) -> None:
    # Start on the document the parent validated; the file is never read again here.
    snapshot = build_snapshot(
        config_from_mapping(document), version=version, base_dir=Path(base_dir)
    )
    host, port, hub = at
    run(_serve_worker(snapshot, Path(base_dir), host, port, hub))


RESTART_LIMIT = 5  # consecutive early deaths of one worker before giving up
EARLY_DEATH_SECONDS = 10.0


class _Workers:
    """Keeps N worker processes alive; a worker that dies is replaced."""

    def __init__(self, plane: ControlPlane, base_dir: Path, at: tuple[Any, ...], n: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._plane = plane
        self._base_dir = str(base_dir)
        self._at = at
        self._procs = [self._start() for _ in range(n)]
        self._early_deaths = [0] * n

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, float]:
        args = (self._plane.document, self._plane.snapshot.version, self._base_dir, self._at)
        proc = self._ctx.Process(target=_worker, args=args)
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


async def serve_many(
    config: Config,
    base_dir: Path,
    at: Addresses,
    workers: int,
    *,
    source: str,
    prefer_file: bool,
    watch: Path | None = None,
) -> None:
    """The supervisor: control plane, admin API and workers, until SIGINT or SIGTERM."""

    async def push(snapshot: Snapshot) -> None:
        await hub.ask_all(
            "config", wait=PUSH_WAIT, version=snapshot.version, document=plane_document(snapshot)
        )

    def plane_document(snapshot: Snapshot) -> dict[str, Any]:
        return snapshot.config.model_dump(mode="json", by_alias=True, exclude_none=True)

    async def hand_live_config(link: WorkerLink) -> None:
        live = plane.snapshot
        await link.ask("config", PUSH_WAIT, version=live.version, document=plane.document)

    plane = ControlPlane(ConfigStore(store_path(config, base_dir)), base_dir, publish=push)
    snapshot = await plane.bootstrap(config, source=source, prefer_file=prefer_file)
    with tempfile.TemporaryDirectory(prefix="turnout-") as tmp:
        hub = Hub(str(Path(tmp) / "hub.sock"), on_connect=hand_live_config)
        await hub.start()
        procs = _Workers(plane, base_dir, (at.host, at.port, hub.path), workers)
        feedback = FeedbackService(
            FeedbackStore(store_path(config, base_dir)), None, lambda: plane.snapshot
        )
        ctx = AdminContext(
            snapshot=lambda: plane.snapshot,
            stats=HubStats(hub),
            token=admin_token(),
            feedback_summaries=feedback.summaries,
        )
        rollouts = await start_rollouts(plane, snapshot.config, base_dir)
        admin = await start_admin(ctx, at.admin_host, at.admin_port, plane, rollouts)
        print(
            f"turnout admin on http://{at.admin_host}:{at.admin_port}, {workers} workers,"
            f" config version {snapshot.version}",
            flush=True,
        )
        tasks = {asyncio.create_task(procs.watch()), asyncio.create_task(wait_for_stop_signal())}
        if watch is not None:
            tasks.add(asyncio.create_task(watch_file(watch, plane)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a watcher that gave up raises SystemExit here
        finally:
            for task in tasks:
                task.cancel()
            await rollouts.close()
            await procs.stop()
            await admin.cleanup()
            await hub.close()
            await feedback.close()
            await plane.close()
