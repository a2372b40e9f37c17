"""Live reconfiguration through the admin API: versions, validation, locks, rollback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml
from tests.control.conftest import Whole, whole
from tests.gateway.conftest import split_config

from turnout.config import config_from_mapping
from turnout.control.plane import ControlPlane, document_of
from turnout.serve import watch_file
from turnout.simulator import RunningSimulator


async def call(t: Whole, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with t.http.request(method, f"{t.admin}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def variants_for(t: Whole, users: range) -> tuple[set[str], dict[str, str]]:
    versions, seen = set(), {}
    for i in users:
        _, headers, _ = await t.chat(f"u{i}")
        versions.add(headers["x-turnout-config-version"])
        seen[f"u{i}"] = headers["x-turnout-variant"]
    return versions, seen


async def test_weights_promote_rollback_history_diff(sim: RunningSimulator, tmp_path: Path) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        status, live = await call(t, "GET", "/admin/config")
        assert status == 200 and live["version"] == 1

        status, result = await call(
            t,
            "PUT",
            "/admin/routes/main/weights",
            {"weights": {"stable": 0, "canary": 100}, "reason": "all in", "author": "ana"},
        )
        assert status == 200 and result == {**result, "version": 2, "changed": True}
        assert result["propagation_ms"] >= 0
        versions, seen = await variants_for(t, range(30))
        assert versions == {"2"} and set(seen.values()) == {"canary"}

        status, result = await call(t, "POST", "/admin/routes/main/promote", {"variant": "stable"})
        assert status == 200 and result["version"] == 3
        _, seen = await variants_for(t, range(30))
        assert set(seen.values()) == {"stable"}

        status, result = await call(t, "POST", "/admin/rollback", {"reason": "oops"})
        assert status == 200 and result["version"] == 4
        _, seen = await variants_for(t, range(30))
        assert set(seen.values()) == {"canary"}  # version 4 is version 2 again

        status, result = await call(t, "POST", "/admin/rollback", {"to": 1})
        assert result["version"] == 5
        _, v1 = await call(t, "GET", "/admin/versions/1")
        _, now = await call(t, "GET", "/admin/config")
        assert now["config"] == v1["config"]

        status, history = await call(t, "GET", "/admin/versions")
        assert [v["version"] for v in history["versions"]] == [5, 4, 3, 2, 1]
        assert history["live"] == 5
        second = history["versions"][3]
        assert (second["author"], second["reason"], second["source"]) == ("ana", "all in", "api")

        status, d = await call(t, "GET", "/admin/diff?a=1&b=2")
        assert status == 200
        assert {c["path"] for c in d["changes"]} >= {
            "routes[main].variants[stable].weight",
            "routes[main].variants[canary].weight",
        }
        assert "canary" in d["text"]

        # Applying the live config again changes nothing and makes no version.
        status, result = await call(t, "PUT", "/admin/config", {"config": now["config"]})
        assert result == {"version": 5, "changed": False, "changes": [], "propagation_ms": None}


async def test_invalid_changes_leave_the_live_config(sim: RunningSimulator, tmp_path: Path) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        _, before = await call(t, "GET", "/admin/config")
        broken = split_config(sim.base_url)
        broken["routes"][0]["variants"][0]["weight"] = 50  # 50 + 10
        broken["upstreams"][0]["base_url"] = "ftp://nope"
        status, body = await call(t, "PUT", "/admin/config", {"config": broken})
        assert status == 422
        paths = {e["path"] for e in body["error"]["errors"]}
        assert "upstreams[0].base_url" in paths
        status, body = await call(
            t, "PUT", "/admin/routes/main/weights", {"weights": {"canary": 20}}
        )
        assert status == 422 and body["error"]["errors"][0]["path"] == "routes[0].variants"
        status, body = await call(t, "PUT", "/admin/routes/main/weights", {"weights": {"x": 1}})
        assert status == 400 and body["error"]["code"] == "unknown_variant"
        status, body = await call(t, "POST", "/admin/routes/nope/promote", {"variant": "x"})
        assert status == 404
        status, body = await call(t, "POST", "/admin/rollback", {"to": 99})
        assert status == 404 and body["error"]["code"] == "unknown_version"
        _, after = await call(t, "GET", "/admin/config")
        assert after == before
        versions, _ = await variants_for(t, range(5))
        assert versions == {"1"}


async def test_locks_refuse_changes_and_survive_restart(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    config = split_config(sim.base_url)
    async with whole(config, tmp_path) as t:
        await call(
            t, "PUT", "/admin/routes/main/weights", {"weights": {"stable": 80, "canary": 20}}
        )
        status, _ = await call(t, "POST", "/admin/routes/main/lock", {"reason": "freeze"})
        assert status == 200
        status, body = await call(
            t, "PUT", "/admin/routes/main/weights", {"weights": {"stable": 100, "canary": 0}}
        )
        assert status == 409 and body["error"]["code"] == "route_locked"
        status, _ = await call(t, "POST", "/admin/rollback", {})
        assert status == 409
    # A restart comes back on the last accepted version (2), with the lock, not on the file.
    async with whole(config, tmp_path) as t:
        _, live = await call(t, "GET", "/admin/config")
        assert live["version"] == 2
        assert live["locks"]["main"]["reason"] == "freeze"
        weights = {v["name"]: v["weight"] for v in live["config"]["routes"][0]["variants"]}
        assert weights == {"stable": 80, "canary": 20}
        status, result = await call(t, "POST", "/admin/rollback", {"force": True})
        assert status == 200 and result["version"] == 3
        status, _ = await call(t, "DELETE", "/admin/routes/main/lock")
        assert status == 200
        status, _ = await call(
            t, "PUT", "/admin/routes/main/weights", {"weights": {"stable": 95, "canary": 5}}
        )
        assert status == 200
        _, history = await call(t, "GET", "/admin/versions")
        assert [v["version"] for v in history["versions"]] == [4, 3, 2, 1]


async def test_openapi_documents_every_admin_route(sim: RunningSimulator, tmp_path: Path) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        status, spec = await call(t, "GET", "/admin/openapi.json")
        assert status == 200 and spec["openapi"].startswith("3.")
        app = t.running.admin.app
        routes = {
            (r.method.lower(), r.resource.canonical)
            for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }
        documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
        assert routes == documented


async def test_file_watch_applies_valid_edits_only(sim: RunningSimulator, tmp_path: Path) -> None:
    config = split_config(sim.base_url)
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    async with whole(config, tmp_path) as t:
        plane: ControlPlane = t.running.plane
        task = asyncio.create_task(watch_file(path, plane, every=0.05))
        await asyncio.sleep(0.2)  # the watcher notes the file as it is now
        try:
            config["routes"][0]["variants"][0]["weight"] = 70
            config["routes"][0]["variants"][1]["weight"] = 30
            path.write_text(yaml.safe_dump(config))
            await wait_for(lambda: plane.snapshot.version == 2)
            config["routes"][0]["variants"][0]["weight"] = 1  # no longer adds up
            path.write_text(yaml.safe_dump(config) + "\n# broken\n")
            await asyncio.sleep(0.4)
            assert plane.snapshot.version == 2
            assert document_of(config_from_mapping(plane.document)) == plane.document
        finally:
            task.cancel()
        _, history = await call(t, "GET", "/admin/versions")
        assert history["versions"][0]["source"] == "file-watch"


async def wait_for(cond: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
