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


async def test_workers_share_port_and_assign_alike(sim: RunningSimulator, tmp_path: Path) -> None:
    port = free_port()
    config = split_config(sim.base_url)
    config["gateway"] = {"port": port}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnout", "serve", "--config", str(path), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        router = Router(config_from_mapping(config))
        pids: set[int] = set()
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
                async with http.get(f"{url}/healthz") as resp:
                    pids.add((await resp.json())["pid"])
        assert not mismatches
        assert len(pids) == 2, "both workers should have answered"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
