"""Property: whatever is sent to the apply endpoint, the live config changes only when
the new config is valid, and the server never answers 5xx."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.config.test_properties import ENV, VALID, apply, mutation, values

from turnout.config import config_from_mapping
from turnout.exceptions import ConfigError
from turnout.serve import Addresses, start_one


class Server:
    """A turnout running on its own event loop in a thread, for blocking clients."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = config_from_mapping(copy.deepcopy(VALID) | {"store": {"path": "t.db"}})
        at = Addresses("127.0.0.1", 0, "127.0.0.1", 0)
        self.running = asyncio.run_coroutine_threadsafe(
            start_one(config, tmp, at), self.loop
        ).result(30)
        self.admin = f"http://127.0.0.1:{self.running.admin_port}"

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"{self.admin}{path}", data=body, method=method)
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    s = Server(tmp_path_factory.mktemp("apply"))
    try:
        yield s
    finally:
        s.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def valid(document: Any) -> bool:
    try:
        config_from_mapping(copy.deepcopy(document))
    except ConfigError:
        return False
    return True


def check(server: Server, payload: bytes, document: Any) -> None:
    _, before = server.call("GET", "/admin/config")
    status, body = server.call("PUT", "/admin/config", payload)
    assert status < 500, body
    _, after = server.call("GET", "/admin/config")
    if status != 200:
        assert after == before
        assert body["error"]["message"]
        return
    assert valid(document)
    if body["changed"]:
        assert after["version"] == before["version"] + 1
    else:
        assert after == before


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=3))
def test_mutated_configs(server: Server, mutations: list[tuple[Any, ...]]) -> None:
    document = copy.deepcopy(VALID)
    for m in mutations:
        try:
            apply(document, m)
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    try:
        payload = json.dumps({"config": document, "reason": "property"}).encode()
    except (TypeError, ValueError):
        return
    check(server, payload, document)


@SETTINGS
@given(values)
def test_random_documents(server: Server, document: Any) -> None:
    payload = json.dumps({"config": document}, allow_nan=True).encode()
    check(server, payload, document)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(server: Server, payload: bytes) -> None:
    status, body = server.call("PUT", "/admin/config", payload)
    assert 400 <= status < 500, body
