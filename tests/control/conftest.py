"""A whole single-process turnout (gateway, admin API, store) on free ports."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from turnout.config import config_from_mapping
from turnout.serve import Addresses, OneProcess, start_one


@dataclass
class Whole:
    running: OneProcess
    http: aiohttp.ClientSession
    store: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.running.admin_port}"

    async def chat(self, user: str, **extra: Any) -> tuple[int, Any, Any]:
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], **extra}
        async with self.http.post(
            f"{self.url}/v1/chat/completions", json=body, headers={"x-user-id": user}
        ) as resp:
            return resp.status, resp.headers, await resp.json()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(f"{self.admin}{path}", **kw) as resp:
            ctype = resp.content_type
            body = await resp.json() if ctype == "application/json" else await resp.text()
            return resp.status, body

    async def post(self, url: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(url, json=body) as resp:
            return resp.status, await resp.json()


@asynccontextmanager
async def whole(config: dict[str, Any], tmp_path: Path) -> AsyncIterator[Whole]:
    config = copy.deepcopy(config)
    config.setdefault("store", {"path": "turnout.db"})
    running = await start_one(
        config_from_mapping(config), tmp_path, Addresses("127.0.0.1", 0, "127.0.0.1", 0)
    )
    try:
        async with aiohttp.ClientSession() as http:
            yield Whole(running, http, tmp_path / config["store"]["path"])
    finally:
        await running.close()
