"""``turnout demo --scenario rollout``: canaries judged and moved in accelerated time.

Two candidates are rolled out over a stable model, with live traffic from a
built-in load generator: first a bad one (more errors, slower first token),
which the judge rolls back by itself, then a good one, which it promotes. The
verdicts are printed as they happen. Analysis windows are seconds, not hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from turnout.cli.rollout import render_status
from turnout.config import config_from_mapping
from turnout.rollout.controller import RolloutController
from turnout.serve import Addresses, start_one
from turnout.simulator import profiles_from_mapping, start_simulator

PROFILES: dict[str, Any] = {
    "models": {
        "model-v1": {"ttft": {"lognormal": {"median": 40, "sigma": 0.3}}, "output_tokens": 12},
        "model-v2-bad": {
            "ttft": {"lognormal": {"median": 70, "sigma": 0.3}},
            "output_tokens": 12,
            "error_rate": 0.15,
        },
        "model-v2": {"ttft": {"lognormal": {"median": 38, "sigma": 0.3}}, "output_tokens": 12},
    }
}


def scenario_config(url: str, host: str, port: int) -> dict[str, Any]:
    variant = {"upstream": "sim", "weight": 0}
    return {
        "gateway": {"host": host, "port": port},
        "upstreams": [{"name": "sim", "base_url": url}],
        "controller": {"interval": 0.2},
        "routes": [
            {
                "name": "chat",
                "retry": {"max_retries": 0},  # let the candidate's errors show
                "variants": [
                    {"name": "v1", "upstream": "sim", "weight": 100, "model": "model-v1"},
                    {"name": "v2-bad", **variant, "model": "model-v2-bad"},
                    {"name": "v2", **variant, "model": "model-v2"},
                ],
            }
        ],
    }


def rollout(name: str, stable: str, candidate: str, window: float) -> dict[str, Any]:
    return {
        "name": name,
        "route": "chat",
        "stable": stable,
        "candidate": candidate,
        "steps": [{"weight": 10}, {"analysis": {}}, {"weight": 50}, {"analysis": {}}],
        "analysis": {
            "window": window,
            "metrics": [
                {"metric": "error_rate", "critical": True, "min_samples": 20},
                {"metric": "ttft_ms", "tolerance": 0.2, "min_samples": 20},
                {"metric": "latency_ms", "tolerance": 0.2, "min_samples": 20},
            ],
        },
    }


async def _load(url: str, stop: asyncio.Event, concurrency: int = 16) -> None:
    body = {"model": "any", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    rng = random.Random(1)

    async def user(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            headers = {"x-user-id": f"user-{rng.randrange(100_000)}"}
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(user(http) for _ in range(concurrency)))


def _line(started: float, name: str, kind: str, message: str, detail: Any) -> str:
    out = f"[{time.monotonic() - started:5.1f}s] {name}: {kind:9} {message}"
    if kind in ("analysis", "marginal", "extended") and isinstance(detail, dict):
        for m in detail.get("metrics", []):
            out += f"\n{'':12}{m['name']:12} {m['status']:8} {m['reason']}"
    return out


async def _follow(controller: RolloutController, name: str, started: float) -> str:
    """Print the rollout's events as they happen; its final phase when it ends."""
    seen = 0
    while True:
        # The state first: its events were written with it, so reading them after
        # it sees every event up to that state.
        stored = await asyncio.to_thread(controller.store.get, name)
        events = await asyncio.to_thread(controller.store.events, name, 1000)
        for e in events[seen:]:
            print(_line(started, name, e.kind, e.message, e.detail), flush=True)
        seen = len(events)
        if stored is not None and stored.state["phase"] in ("aborted", "completed"):
            return str(stored.state["phase"])
        await asyncio.sleep(0.1)


async def run_rollout_demo(host: str, port: int, admin_port: int, window: float) -> bool:
    """Run the scenario; True if the bad candidate was rolled back and the good promoted."""
    profiles = profiles_from_mapping(PROFILES)
    async with await start_simulator(profiles, seed=3) as sim:
        with tempfile.TemporaryDirectory(prefix="turnout-demo-") as store_dir:
            config = config_from_mapping(scenario_config(sim.base_url, host, port))
            running = await start_one(
                config, Path(store_dir), Addresses(host, port, "127.0.0.1", admin_port)
            )
            stop = asyncio.Event()
            load = asyncio.create_task(_load(f"http://{host}:{running.port}", stop))
            started = time.monotonic()
            print(
                f"turnout demo (rollouts): gateway on http://{host}:{running.port}/v1, admin on"
                f" http://127.0.0.1:{running.admin_port}; 16 simulated users streaming;"
                f" analysis windows of {window:g}s\n",
                flush=True,
            )
            try:
                plan = [("v2-bad", "v1", "v2-bad", "aborted"), ("v2", "v1", "v2", "completed")]
                ok = True
                for name, stable, candidate, expected in plan:
                    print(f"--- rolling out {candidate!r} over {stable!r}", flush=True)
                    await running.rollouts.start_rollout(
                        rollout(name, stable, candidate, window), "demo"
                    )
                    final = await _follow(running.rollouts, name, started)
                    print(render_status(await running.rollouts.status(name)) + "\n", flush=True)
                    ok = ok and final == expected
                return ok
            finally:
                stop.set()
                load.cancel()
                await asyncio.gather(load, return_exceptions=True)
                await running.close()
