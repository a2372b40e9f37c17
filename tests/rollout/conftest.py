"""A whole turnout with a rollout controller, simulated upstreams, and live traffic."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from turnout.simulator import Delay, ModelProfile, RunningSimulator, start_simulator

GOOD = ModelProfile(ttft=Delay.uniform(4, 8), output_tokens=10)
# Worse in the ways that matter: a third of requests fail, first tokens come 5x later.
BAD = ModelProfile(ttft=Delay.uniform(25, 35), output_tokens=10, error_rate=0.3)


@pytest.fixture
async def upstream() -> AsyncIterator[RunningSimulator]:
    profiles = {"m-stable": GOOD, "m-good": GOOD, "m-bad": BAD}
    async with await start_simulator(profiles, seed=11) as s:
        yield s


def rollout_config(
    base_url: str, candidate_model: str, *rollouts: dict[str, Any], interval: float = 0.1
) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "sim", "base_url": base_url}],
        "routes": [
            {
                "name": "chat",
                "retry": {"max_retries": 0},  # judge what the upstream did, unretried
                "variants": [
                    {"name": "stable", "upstream": "sim", "model": "m-stable", "weight": 100},
                    {"name": "canary", "upstream": "sim", "model": candidate_model, "weight": 0},
                ],
            }
        ],
        "controller": {"interval": interval},
        "rollouts": list(rollouts),
    }


def canary(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "canary-1",
        "route": "chat",
        "stable": "stable",
        "candidate": "canary",
        "steps": list(steps),
        **extra,
    }


@contextlib.asynccontextmanager
async def traffic(url: str, concurrency: int = 6) -> AsyncIterator[dict[str, int]]:
    """Streamed chat requests from random users until the block ends; counts by variant."""
    seen: dict[str, int] = {}
    body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    rng = random.Random(5)

    async def one(http: aiohttp.ClientSession) -> None:
        while True:
            headers = {"x-user-id": f"u{rng.randrange(1_000_000)}"}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                v = r.headers.get("x-turnout-variant", "?")
                seen[v] = seen.get(v, 0) + 1

    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(concurrency)]
        try:
            yield seen
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def until(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(every)
