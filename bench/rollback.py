"""Rollback latency: `POST /admin/rollouts/NAME/abort` until the gateway serves the
config that gives stable all the traffic back (single process, one admin call).

    python3 bench/rollback.py            # 20 runs, prints p50 and max
    python3 bench/rollback.py --smoke    # 2 runs, no figures worth keeping
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from turnout.config import config_from_mapping
from turnout.serve import Addresses, start_one
from turnout.simulator import ModelProfile, start_simulator


def config(url: str) -> dict[str, Any]:
    variants = [
        {"name": "stable", "upstream": "sim", "weight": 100},
        {"name": "canary", "upstream": "sim", "weight": 0},
    ]
    rollout = {
        "name": "r",
        "route": "chat",
        "stable": "stable",
        "candidate": "canary",
        "steps": [{"weight": 40}, {"pause": {}}],
    }
    return {
        "upstreams": [{"name": "sim", "base_url": url}],
        "routes": [{"name": "chat", "variants": variants}],
        "controller": {"interval": 0.05},
        "rollouts": [rollout],
    }


async def one(url: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        at = Addresses("127.0.0.1", 0, "127.0.0.1", 0)
        running = await start_one(config_from_mapping(config(url)), Path(d), at)
        try:
            while running.gateway.snapshot.config.routes[0].variants[1].weight != 40:
                await asyncio.sleep(0.01)
            admin = f"http://127.0.0.1:{running.admin_port}/admin/rollouts/r/abort"
            async with aiohttp.ClientSession() as http:
                started = time.perf_counter()
                async with http.post(admin, json={"reason": "bench"}) as resp:
                    await resp.read()
                took = (time.perf_counter() - started) * 1000.0
            assert resp.status == 200
            assert running.gateway.snapshot.config.routes[0].variants[1].weight == 0
            return took
        finally:
            await running.close()


async def main(runs: int) -> None:
    async with await start_simulator(default=ModelProfile()) as sim:
        times = [await one(sim.base_url) for _ in range(runs)]
    print(f"abort -> live: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms"
          f" over {runs} runs")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    asyncio.run(main(2 if ap.parse_args().smoke else 20))
