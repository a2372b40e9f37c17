"""Weights flipped 1,000 times under load on several workers: nothing fails, nothing mixes.

Every response names the config version it was served by; its variant must be what
that version's split gives its key, and that version must have been live at some
moment while the request ran.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
from tests.gateway.conftest import split_config
from tests.gateway.test_workers import free_port, start_workers, wait_for_workers, wait_ready

from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router
from turnout.simulator import RunningSimulator

FLIPS = 1000
WEIGHTS = ({"stable": 90, "canary": 10}, {"stable": 10, "canary": 90})


async def test_flipping_weights_under_load(sim: RunningSimulator, tmp_path: Path) -> None:
    admin_port = free_port()
    config = split_config(sim.base_url)
    config["admin"] = {"port": admin_port}
    proc, url = start_workers(config, tmp_path, workers=2)
    admin = f"http://127.0.0.1:{admin_port}"
    routers = []
    for weights in WEIGHTS:
        c = split_config(sim.base_url)
        for v in c["routes"][0]["variants"]:
            v["weight"] = weights[v["name"]]
        routers.append(Router(config_from_mapping(c)))
    # version -> (weights index, monotonic time its PUT started, time it returned)
    versions: dict[int, tuple[int, float, float]] = {1: (0, 0.0, 0.0)}
    results: list[tuple[str, int, str, float, float]] = []
    failures: list[str] = []
    done = asyncio.Event()
    try:
        await wait_ready(url, proc)
        await wait_for_workers(url, 2)

        async def client(n: int, stream: bool) -> None:
            i = 0
            async with aiohttp.ClientSession() as http:
                while not done.is_set():
                    key = f"user-{n}-{i}"
                    i += 1
                    body = {
                        "model": "x",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                    start = time.monotonic()
                    try:
                        async with http.post(
                            f"{url}/v1/chat/completions", json=body, headers={"x-user-id": key}
                        ) as resp:
                            payload = await resp.read()
                            if resp.status != 200 or (stream and b"[DONE]" not in payload):
                                failures.append(f"{resp.status} {payload[:200]!r}")
                                continue
                            version = int(resp.headers["x-turnout-config-version"])
                            variant = resp.headers["x-turnout-variant"]
                    except aiohttp.ClientError as exc:
                        failures.append(repr(exc))
                        continue
                    results.append((key, version, variant, start, time.monotonic()))

        clients = [asyncio.create_task(client(n, stream=n % 2 == 1)) for n in range(6)]
        async with aiohttp.ClientSession() as http:
            for flip in range(FLIPS):
                index = (flip + 1) % 2
                started = time.monotonic()
                async with http.put(
                    f"{admin}/admin/routes/main/weights", json={"weights": WEIGHTS[index]}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    version = (await resp.json())["version"]
                versions[version] = (index, started, time.monotonic())
        done.set()
        await asyncio.gather(*clients)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    assert not failures, failures[:5]
    assert len(versions) == FLIPS + 1
    assert len(results) > 500
    served_versions = set()
    for key, version, variant, start, end in results:
        index, put_started, _ = versions[version]
        expected = routers[index].decide(RequestView("/", {"x-user-id": key}, {})).variant.name
        assert variant == expected, (key, version)
        # Live while the request ran: not before its change was asked for, and not
        # after the next change had been acknowledged by every worker.
        assert put_started <= end
        following = versions.get(version + 1)
        assert following is None or following[2] >= start
        served_versions.add(version)
    assert len(served_versions) > 50  # requests really did run across many versions
