"""Running the gateway as a process, or as several processes sharing one port.

Workers are separate processes bound with SO_REUSEPORT, so the kernel spreads
connections across them. Each builds its own snapshot from the same config; the
assignment hash has no per-process state, so a key gets the same variant from
whichever worker answers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from turnout.config import config_from_mapping, load_config
from turnout.control.auth import require_token_beyond_loopback
from turnout.exceptions import ConfigError
from turnout.gateway.server import serve_gateway
from turnout.snapshot import Snapshot, build_snapshot


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


async def _serve(snapshot: Snapshot, host: str, port: int, reuse_port: bool, quiet: bool) -> None:
    gateway, server = await serve_gateway(snapshot, host=host, port=port, reuse_port=reuse_port)
    if not quiet:
        print(f"turnout gateway on http://{host}:{server.port}/v1 (pid {os.getpid()})", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await server.close()
        await gateway.close()


def _worker(document: dict[str, Any], base_dir: str, host: str, port: int) -> None:
    # The parent validated this very document; a worker never re-reads the file,
    # which may have changed since.
    snapshot = build_snapshot(config_from_mapping(document), base_dir=Path(base_dir))
    run(_serve(snapshot, host, port, reuse_port=True, quiet=False))


RESTART_LIMIT = 5  # consecutive early deaths of one worker before giving up
EARLY_DEATH_SECONDS = 10.0


class _Supervisor:
    """Keeps N worker processes alive; a worker that dies is replaced."""

    def __init__(self, args: tuple[Any, ...], workers: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._args = args
        self._procs = [self._start() for _ in range(workers)]
        self._early_deaths = [0] * workers
        self._stopping = False

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, float]:
        proc = self._ctx.Process(target=_worker, args=self._args)
        proc.start()
        return proc, time.monotonic()

    def stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        self._stopping = True
        for proc, _ in self._procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def run(self) -> None:
        while not self._stopping:
            for i, (proc, started) in enumerate(self._procs):
                if proc.is_alive() or self._stopping:
                    continue
                early = time.monotonic() - started < EARLY_DEATH_SECONDS
                self._early_deaths[i] = self._early_deaths[i] + 1 if early else 0
                if self._early_deaths[i] >= RESTART_LIMIT:
                    self.stop()
                    sys.exit(f"turnout: a worker keeps dying at start (exit {proc.exitcode})")
                print(
                    f"turnout: worker pid {proc.pid} exited ({proc.exitcode}); starting another",
                    file=sys.stderr,
                    flush=True,
                )
                self._procs[i] = self._start()
            time.sleep(0.2)
        for proc, _ in self._procs:
            proc.join()


def serve(config_path: str, *, host: str | None, port: int | None, workers: int) -> None:
    """Validate the config here first, so a bad one fails before any worker starts."""
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    snapshot = build_snapshot(config, base_dir=base_dir)
    host = snapshot.config.gateway.host if host is None else host
    port = snapshot.config.gateway.port if port is None else port
    require_token_beyond_loopback(host)
    if workers <= 1:
        run(_serve(snapshot, host, port, reuse_port=False, quiet=False))
        return
    if port == 0:
        raise ConfigError.single("gateway.port", "several workers need a fixed port, not 0")
    document = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    supervisor = _Supervisor((document, str(base_dir), host, port), workers)
    signal.signal(signal.SIGINT, supervisor.stop)
    signal.signal(signal.SIGTERM, supervisor.stop)
    supervisor.run()
