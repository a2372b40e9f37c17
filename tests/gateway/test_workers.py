"""`turnout serve --workers N`: several processes on one port, one assignment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from tests.gateway.conftest import split_config

from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router
from turnout.simulator import RunningSimulator

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError("gateway did not become ready")


def start_workers(
    config: dict[str, Any], tmp_path: Path, workers: int = 2
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config["gateway"] = {"port": port}
    config.setdefault("admin", {"port": free_port()})  # not 8081: tests run in parallel
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnout", "serve", "--config", str(path), "-w", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


async def pids_answering(url: str, attempts: int = 40) -> set[int]:
    pids: set[int] = set()
    for _ in range(attempts):
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            pids.add((await resp.json())["pid"])
    return pids


async def wait_for_workers(url: str, n: int, gone: int | None = None) -> set[int]:
    """Until n distinct workers answer (none of them ``gone``); workers start one by one."""
    deadline = time.monotonic() + 20
    while True:
        try:
            pids = await pids_answering(url, attempts=20)
        except aiohttp.ClientError:
            pids = set()
        if len(pids) == n and gone not in pids:
            return pids
        assert time.monotonic() < deadline, f"expected {n} workers, saw {pids}"
        await asyncio.sleep(0.2)


async def test_workers_share_port_and_assign_alike(sim: RunningSimulator, tmp_path: Path) -> None:
    config = split_config(sim.base_url)
    proc, url = start_workers(config, tmp_path)
    try:
        await wait_ready(url, proc)
        router = Router(config_from_mapping(config))
        mismatches = []
        for i in range(200):
            # A new connection each time so the kernel may pick either worker.
            async with aiohttp.ClientSession() as http:
                key = f"user-{i}"
                async with http.post(
                    f"{url}/v1/chat/completions", json=CHAT, headers={"x-user-id": key}
                ) as resp:
                    assert resp.status == 200
                    got = resp.headers["x-turnout-variant"]
                want = router.decide(RequestView("/", {"x-user-id": key}, {})).variant.name
                if got != want:
                    mismatches.append((key, got, want))
        assert not mismatches
        await wait_for_workers(url, 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


async def test_a_dead_worker_is_replaced(sim: RunningSimulator, tmp_path: Path) -> None:
    proc, url = start_workers(split_config(sim.base_url), tmp_path)
    try:
        await wait_ready(url, proc)
        victim = (await wait_for_workers(url, 2)).pop()
        os.kill(victim, signal.SIGKILL)
        await wait_for_workers(url, 2, gone=victim)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
