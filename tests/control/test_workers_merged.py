"""Several workers: every view (stats JSON, /metrics, the CLI) shows merged numbers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from tests.control.conftest import whole
from tests.gateway.conftest import split_config
from tests.gateway.test_workers import free_port, start_workers, wait_for_workers, wait_ready

from turnout.simulator import RunningSimulator

TURNOUT = [sys.executable, "-m", "turnout"]


async def test_stats_merge_every_worker(sim: RunningSimulator, tmp_path: Path) -> None:
    admin_port = free_port()
    config = split_config(sim.base_url)
    config["admin"] = {"port": admin_port}
    proc, url = start_workers(config, tmp_path)
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        await wait_ready(url, proc)
        await wait_for_workers(url, 2)
        n = 120
        for i in range(n):
            async with (
                aiohttp.ClientSession() as http,  # new connections spread over workers
                http.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"x-user-id": f"user-{i}"},
                ) as resp,
            ):
                assert resp.status == 200
        out = subprocess.run(
            [*TURNOUT, "stats", "--json", "--admin-url", admin, "--window", "cumulative"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["workers"] == 2
        assert sum(v["requests"] for v in doc["routes"][0]["variants"]) == n
        assert doc["upstreams"][0]["requests"] == n

        table = subprocess.run(
            [*TURNOUT, "stats", "--admin-url", admin], capture_output=True, text=True, timeout=30
        )
        assert table.returncode == 0, table.stderr
        assert "stable" in table.stdout and "canary" in table.stdout

        async with aiohttp.ClientSession() as http, http.get(f"{admin}/metrics") as resp:
            text = await resp.text()
        assert "turnout_workers 2" in text.splitlines()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_stats_cli_explains_unreachable_and_bad_token(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run(
        [*TURNOUT, "stats", "--admin-url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "cannot reach the admin API" in out.stderr and "Traceback" not in out.stderr


async def test_stats_cli_explains_a_wrong_token(
    sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", "right")
    async with whole(split_config(sim.base_url), tmp_path) as t:
        proc = await asyncio.create_subprocess_exec(
            *TURNOUT,
            "stats",
            "--admin-url",
            t.admin,
            env={**os.environ, "TURNOUT_ADMIN_TOKEN": "wrong"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert b"refused the token" in err
