"""Rollouts end to end: real sockets, simulated upstreams, live traffic, the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.control.conftest import whole
from tests.rollout.conftest import canary, rollout_config, traffic, until

from turnout.config import config_from_mapping
from turnout.control.plane import ControlPlane
from turnout.rollout.controller import RolloutController
from turnout.rollout.machine import Phase
from turnout.rollout.webhooks import verify
from turnout.serve import Addresses, start_one
from turnout.simulator import RunningSimulator
from turnout.store.configs import ConfigStore
from turnout.store.rollouts import RolloutStore


def weights(plane: ControlPlane) -> dict[str, float]:
    route = plane.document["routes"][0]
    return {v["name"]: v["weight"] for v in route["variants"]}


def phase(controller: RolloutController, name: str = "canary-1") -> str | None:
    stored = controller.store.get(name)
    return None if stored is None else str(stored.state["phase"])


async def test_a_degrading_candidate_is_rolled_back_within_its_analysis_window(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    window = 2.0
    spec = canary(
        {"weight": 50},
        {"analysis": {}},
        {"weight": 100},
        analysis={"window": window, "failure_limit": 1},
    )
    async with whole(rollout_config(upstream.base_url, "m-bad", spec), tmp_path) as t:
        controller = t.running.rollouts
        async with traffic(t.url) as seen:
            await until(lambda: phase(controller) is not None)
            stored = controller.store.get("canary-1")
            assert stored is not None
            started = stored.state["step_started"]
            assert weights(t.running.plane) == {"stable": 50.0, "canary": 50.0}
            await until(lambda: phase(controller) == "aborted", timeout=window * 5)
            # The state is stored first, then the config changes (see the controller).
            await until(lambda: weights(t.running.plane)["canary"] == 0.0, timeout=1.0)
            stored = controller.store.get("canary-1")
            assert stored is not None
            state = stored.state
            # Judged once the window was over, and at the first round after it.
            assert window <= state["finished_at"] - started <= window + 1.0
            assert weights(t.running.plane) == {"stable": 100.0, "canary": 0.0}
            evidence = {m["name"]: m for m in state["last"]["metrics"]}
            assert evidence["error_rate"]["status"] == "fail"
            assert "error_rate" in state["reason"]
            await asyncio.sleep(0.2)  # requests assigned before the abort finish
            before = dict(seen)
            await asyncio.sleep(0.5)
            assert seen.get("canary", 0) == before.get("canary", 0)  # none since the abort
            assert seen["stable"] > before["stable"]
            assert seen["canary"] > 0
        status, view = await t.get("/admin/rollouts/canary-1")
        assert status == 200 and view["phase"] == "aborted"
        kinds = [e["kind"] for e in view["events"]]
        assert kinds[0] == "created" and "aborted" in kinds


async def test_a_healthy_candidate_is_promoted(upstream: RunningSimulator, tmp_path: Path) -> None:
    lenient = [
        {"metric": "error_rate", "critical": True, "tolerance": 0.5},
        {"metric": "ttft_ms", "tolerance": 0.5},
    ]
    spec = canary(
        {"weight": 25},
        {"analysis": {}},
        {"weight": 75},
        {"analysis": {}},
        analysis={"window": 1.0, "metrics": lenient},
    )
    async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
        controller = t.running.rollouts
        async with traffic(t.url):
            await until(lambda: phase(controller) == "completed", timeout=15)
            await until(lambda: weights(t.running.plane)["canary"] == 100.0, timeout=1.0)
        assert weights(t.running.plane) == {"stable": 0.0, "canary": 100.0}
        status, view = await t.get("/admin/rollouts/canary-1")
        assert status == 200
        kinds = [e["kind"] for e in view["events"]]
        assert kinds.count("analysis") == 2 and kinds[-2:] == ["promoted", "completed"]
        assert all(m["status"] == "pass" for m in view["analysis"]["metrics"])
        _, history = await t.get("/admin/versions")
        # start, 25%, 75%, 100%: one config version per weight change, no more.
        assert [v["source"] for v in history["versions"]][:3] == ["rollout"] * 3
        assert len(history["versions"]) == 4


async def test_a_restart_resumes_the_same_step_with_the_same_clock(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    spec = canary({"weight": 30}, {"pause": {"duration": 3600}}, {"weight": 60})
    config = config_from_mapping({**rollout_config(upstream.base_url, "m-good", spec)})
    at = Addresses("127.0.0.1", 0, "127.0.0.1", 0)
    first = await start_one(config, tmp_path, at)
    try:
        await until(lambda: phase(first.rollouts) == "progressing")
        await asyncio.sleep(0.3)  # a few rounds at the pause
        before = first.rollouts.store.get("canary-1")
        versions = len(ConfigStore(tmp_path / "turnout.db").versions(100))
    finally:
        await first.close()
    assert before is not None and before.state["step"] == 1
    second = await start_one(config, tmp_path, at)
    try:
        await asyncio.sleep(0.5)  # several rounds of the new controller
        after = second.rollouts.store.get("canary-1")
        assert after is not None
        assert after.state["step"] == 1
        assert after.state["step_started"] == before.state["step_started"]
        assert after.state["generation"] == before.state["generation"]
        assert weights(second.plane) == {"stable": 70.0, "canary": 30.0}
        # Nothing was applied twice: no config version since the first process.
        assert len(ConfigStore(tmp_path / "turnout.db").versions(100)) == versions
    finally:
        await second.close()


async def test_a_manual_gate_waits_and_abort_works_during_it(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    spec = canary({"weight": 40}, {"pause": {}}, {"weight": 100})
    async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
        controller = t.running.rollouts
        await until(lambda: phase(controller) == "progressing")
        await asyncio.sleep(0.5)
        stored = controller.store.get("canary-1")
        assert stored is not None and stored.state["step"] == 1
        _, view = await t.get("/admin/rollouts/canary-1")
        assert view["current_step"] == "pause until resumed" and view["time_left_s"] is None
        started = time.perf_counter()
        status, view = await t.post(
            f"{t.admin}/admin/rollouts/canary-1/abort", {"reason": "not today"}
        )
        took = time.perf_counter() - started
        assert status == 200, view
        assert view["phase"] == "aborted" and view["reason"] == "not today"
        assert view["weights"] == {"stable": 100.0, "canary": 0.0}
        assert took < 1.0  # the abort is live when the call returns
        for _ in range(20):
            _, headers, _ = await t.chat(f"user-{_}")
            assert headers["x-turnout-variant"] == "stable"
        status, body = await t.post(f"{t.admin}/admin/rollouts/canary-1/resume", {})
        assert status == 409 and body["error"]["code"] == "rollout_not_paused"


async def test_resume_passes_a_manual_gate(upstream: RunningSimulator, tmp_path: Path) -> None:
    spec = canary({"weight": 40}, {"pause": {}}, {"weight": 60}, {"pause": {"duration": 60}})
    async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
        await until(lambda: phase(t.running.rollouts) == "progressing")
        status, view = await t.post(f"{t.admin}/admin/rollouts/canary-1/resume", {})
        assert status == 200, view
        assert view["step"] == 3 and view["weights"] == {"stable": 40.0, "canary": 60.0}
        assert 59 <= view["time_left_s"] <= 60


async def test_start_from_the_api_validates_the_spec(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    async with whole(rollout_config(upstream.base_url, "m-good"), tmp_path) as t:
        url = f"{t.admin}/admin/rollouts"
        status, body = await t.post(url, {"rollout": {**canary({"weight": 500})}})
        assert status == 422
        assert any(e["path"].startswith("steps[0]") for e in body["error"]["errors"])
        status, body = await t.post(url, {"rollout": {**canary({"weight": 5}), "route": "nope"}})
        assert status == 422 and "nope" in body["error"]["message"]
        status, body = await t.post(url, {"rollout": {**canary({"weight": 5}), "stable": "x"}})
        assert status == 422 and body["error"]["errors"][0]["path"] == "stable"
        assert weights(t.running.plane) == {"stable": 100.0, "canary": 0.0}
        status, view = await t.post(url, {"rollout": canary({"weight": 5}, {"pause": {}})})
        assert status == 201 and view["weights"] == {"stable": 95.0, "canary": 5.0}
        status, body = await t.post(url, {"rollout": canary({"weight": 5})})
        assert status == 409 and body["error"]["code"] == "rollout_exists"
        status, listing = await t.get("/admin/rollouts")
        assert [r["name"] for r in listing["rollouts"]] == ["canary-1"]
        status, body = await t.get("/admin/rollouts/unknown")
        assert status == 404


async def test_only_the_lease_holder_acts(upstream: RunningSimulator, tmp_path: Path) -> None:
    spec = canary({"weight": 10}, {"pause": {}})
    async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
        first = t.running.rollouts
        await until(lambda: first.leader)
        second = RolloutController(t.running.plane, t.store, tmp_path, interval=0.05, lease_ttl=0.5)
        await second.step()
        assert not second.leader
        await first.close()  # releases the lease
        await second.step()
        assert second.leader
        await second.close()


async def test_a_locked_route_blocks_steps_but_never_an_abort(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    async with whole(rollout_config(upstream.base_url, "m-good"), tmp_path) as t:
        await t.running.plane.lock("chat", author="ops", reason="freeze")
        url = f"{t.admin}/admin/rollouts"
        status, view = await t.post(url, {"rollout": canary({"weight": 20}, {"pause": {}})})
        assert status == 201
        assert "locked" in (view["blocked"] or "")
        assert weights(t.running.plane) == {"stable": 100.0, "canary": 0.0}
        await t.running.plane.unlock("chat", author="ops")
        await until(lambda: weights(t.running.plane)["canary"] == 20.0)
        await t.running.plane.lock("chat", author="ops", reason="freeze again")
        status, view = await t.post(f"{url}/canary-1/abort", {})
        assert status == 200 and view["weights"] == {"stable": 100.0, "canary": 0.0}


def test_rollout_store_saves_by_compare_and_set(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "t.db")
    assert store.create("r", {"s": 1}, {"phase": "progressing"}, 1, 0.0)
    assert not store.create("r", {"s": 2}, {"phase": "progressing"}, 1, 0.0)
    assert store.save("r", {"phase": "aborted"}, 2, 1, 1.0, [("aborted", "x", None)])
    assert not store.save("r", {"phase": "progressing"}, 3, 1, 2.0)  # stale generation
    got = store.get("r")
    assert got is not None and got.state == {"phase": "aborted"} and got.generation == 2
    # A finished rollout of the same name may be started again.
    assert store.create(
        "r", {"s": 3}, {"phase": "progressing"}, 1, 3.0, replace_if=frozenset({"aborted"})
    )
    assert [e.kind for e in store.events("r")] == ["aborted"]
    assert Phase.ABORTED.value == "aborted"


async def test_blue_green_preview_then_switch_with_a_rollback_window(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    spec = canary(
        {"preview": {"attr": "header:x-preview", "equals": "1"}},
        {"pause": {}},
        {"weight": 100},
        rollback_window="1h",
    )
    async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
        await until(lambda: phase(t.running.rollouts) == "progressing")
        # Only the segment reaches green while blue keeps every other request.
        for i in range(10):
            _, headers, _ = await t.chat(f"user-{i}")
            assert headers["x-turnout-variant"] == "stable"
        async with t.http.post(
            f"{t.url}/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-preview": "1", "x-user-id": "u1"},
        ) as resp:
            assert resp.headers["x-turnout-variant"] == "canary"
        status, view = await t.post(f"{t.admin}/admin/rollouts/canary-1/resume", {})
        assert view["phase"] == "promoted" and view["weights"] == {"stable": 0.0, "canary": 100.0}
        assert not t.running.plane.document["routes"][0].get("segments")
        assert 3590 < view["time_left_s"] <= 3600
        # Within the window, abort is the instant switch back to blue.
        status, view = await t.post(f"{t.admin}/admin/rollouts/canary-1/abort", {})
        assert status == 200 and view["weights"] == {"stable": 100.0, "canary": 0.0}


async def test_every_transition_is_sent_to_the_webhook_signed(
    upstream: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[tuple[dict[str, Any], bool]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(
            b"s3cret",
            body,
            request.headers.get("x-turnout-timestamp"),
            request.headers.get("x-turnout-signature"),
            time.time(),
        )
        got.append((await request.json(), ok))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    hook = {"url": f"http://127.0.0.1:{port}/hook", "secret_env": "HOOK_SECRET"}
    spec = canary({"weight": 10}, {"pause": {}}, webhooks=[hook])
    try:
        async with whole(rollout_config(upstream.base_url, "m-good", spec), tmp_path) as t:
            await until(lambda: len(got) >= 3)
            await t.post(f"{t.admin}/admin/rollouts/canary-1/abort", {"reason": "test"})
            await until(lambda: any(e["event"] == "aborted" for e, _ in got))
        events = sorted((e for e, _ in got), key=lambda e: e["seq"])
        assert [e["event"] for e in events] == ["started", "step", "waiting", "aborted"]
        assert all(ok for _, ok in got)
        assert events[-1]["message"].endswith("test") and events[-1]["weight"] == 0.0
    finally:
        await runner.cleanup()


async def test_one_route_takes_one_rollout_at_a_time(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    async with whole(rollout_config(upstream.base_url, "m-good"), tmp_path) as t:
        url = f"{t.admin}/admin/rollouts"
        status, _ = await t.post(url, {"rollout": canary({"weight": 5}, {"pause": {}})})
        assert status == 201
        second = {**canary({"weight": 50}), "name": "canary-2"}
        status, body = await t.post(url, {"rollout": second})
        assert status == 409 and body["error"]["code"] == "route_in_rollout"
        assert weights(t.running.plane) == {"stable": 95.0, "canary": 5.0}


async def test_a_bad_declared_rollout_does_not_stall_the_others(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    hook = {"url": "http://127.0.0.1:9/hook", "secret_env": "TURNOUT_TEST_UNSET_SECRET"}
    broken = {**canary({"weight": 50}), "name": "broken", "webhooks": [hook]}
    config = rollout_config(upstream.base_url, "m-good", broken)
    config["routes"].append(
        {**config["routes"][0], "name": "other", "match": {"attr": "header:x-o", "exists": True}}
    )
    config["routes"].reverse()  # the catch-all last
    fine = {**canary({"weight": 30}, {"pause": {}}), "name": "fine", "route": "other"}
    config["rollouts"].append(fine)
    async with whole(config, tmp_path) as t:
        controller = t.running.rollouts
        await until(lambda: phase(controller, "fine") == "progressing")
        assert phase(controller, "broken") is None
        assert "TURNOUT_TEST_UNSET_SECRET" in controller._failing["broken"]


async def test_a_blocked_rollout_does_not_advance(
    upstream: RunningSimulator, tmp_path: Path
) -> None:
    async with whole(rollout_config(upstream.base_url, "m-good"), tmp_path) as t:
        await t.running.plane.lock("chat", author="ops", reason="freeze")
        spec = canary({"weight": 20}, {"pause": {"duration": 0.2}}, {"weight": 60})
        status, _ = await t.post(f"{t.admin}/admin/rollouts", {"rollout": spec})
        assert status == 201
        await asyncio.sleep(0.8)  # the pause would be long over
        stored = t.running.rollouts.store.get("canary-1")
        assert stored is not None and stored.state["step"] == 1
        assert weights(t.running.plane) == {"stable": 100.0, "canary": 0.0}
