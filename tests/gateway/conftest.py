"""Real gateways in front of real simulated upstreams, on free loopback ports."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from turnout.config import config_from_mapping
from turnout.gateway.server import Gateway, serve_gateway
from turnout.simulator import RunningSimulator
from turnout.snapshot import build_snapshot


@dataclass
class Running:
    gateway: Gateway
    url: str  # http://127.0.0.1:PORT
    http: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def openai(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kw)

    async def post(
        self, path: str, body: Any = None, *, data: bytes | None = None, **kw: Any
    ) -> tuple[int, CIMultiDict[str], Any]:
        async with self.http.post(
            f"{self.url}{path}", json=body if data is None else None, data=data, **kw
        ) as resp:
            payload = await resp.read()
            ctype = resp.content_type
            parsed = await resp.json(content_type=None) if ctype == "application/json" else payload
            return resp.status, CIMultiDict(resp.headers), parsed


def split_config(upstream_url: str, **route: Any) -> dict[str, Any]:
    """One catch-all route, 90/10 between two variants on one upstream."""
    base: dict[str, Any] = {
        "upstreams": [{"name": "sim", "base_url": upstream_url}],
        "routes": [
            {
                "name": "main",
                "sticky": {"key": "header:x-user-id", "fallback": ["body:user"]},
                "allow_override": True,
                "variants": [
                    {"name": "stable", "upstream": "sim", "weight": 90, "model": "m-stable"},
                    {"name": "canary", "upstream": "sim", "weight": 10, "model": "m-canary"},
                ],
            }
        ],
    }
    base["routes"][0].update(route)
    return base


@asynccontextmanager
async def gateway_for(config: dict[str, Any]) -> AsyncIterator[Running]:
    snapshot = build_snapshot(config_from_mapping(copy.deepcopy(config)))
    gateway, server = await serve_gateway(snapshot, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Running(gateway, f"http://127.0.0.1:{server.port}", http)
    finally:
        await server.close()
        await gateway.close()


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def gw(sim: RunningSimulator) -> AsyncIterator[Running]:
    async with gateway_for(split_config(sim.base_url)) as running:
        yield running
