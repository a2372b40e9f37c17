"""The admin API of a running turnout: stats, Prometheus, feedback, auth."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.control.conftest import whole
from tests.gateway.conftest import split_config

from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router
from turnout.simulator import RunningSimulator


async def test_stats_and_metrics_after_traffic(sim: RunningSimulator, tmp_path: Path) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        statuses = await asyncio.gather(*(t.chat(f"user-{i}") for i in range(200)))
        assert all(s == 200 for s, _, _ in statuses)
        canary = sum(1 for _, h, _ in statuses if h["x-turnout-variant"] == "canary")
        status, doc = await t.get("/admin/stats", params={"window": "1m"})
        assert status == 200
        assert doc["window"] == "60s" and doc["workers"] == 1
        route = doc["routes"][0]
        assert route["route"] == "main" and route["baseline"] == "stable"
        by_name = {v["variant"]: v for v in route["variants"]}
        assert by_name["canary"]["requests"] == canary
        assert by_name["stable"]["requests"] == 200 - canary
        assert set(by_name["stable"]["latency_ms"]) >= {"p50", "p95", "p99"}

        status, text = await t.get("/metrics")
        assert status == 200
        line = f'turnout_requests_total{{route="main",variant="canary"}} {canary}'
        assert line in text.splitlines()
        assert "# TYPE turnout_request_duration_seconds summary" in text

        status, body = await t.get("/admin/stats", params={"window": "2d"})
        assert status == 400 and "unknown window" in body["error"]["message"]


async def test_request_log_rows_have_hashed_keys(sim: RunningSimulator, tmp_path: Path) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        _, headers, _ = await t.chat("alice-the-user")
        request_id = headers["x-turnout-request-id"]
        log = t.running.state.log
        assert log is not None and log.flush(5)
        row = log.find(request_id)
        assert row is not None
        assert row["variant"] == headers["x-turnout-variant"] and row["status"] == 200
        assert row["key_hash"] and "alice" not in row["key_hash"]
        _, doc = await t.get("/admin/stats")
        assert doc["request_log"]["written"] >= 1
    assert b"alice-the-user" not in t.store.read_bytes()


async def test_feedback_by_request_id_and_by_key(sim: RunningSimulator, tmp_path: Path) -> None:
    config = split_config(sim.base_url)
    async with whole(config, tmp_path) as t:
        ids = {}
        for i in range(40):
            _, headers, _ = await t.chat(f"u{i}")
            ids[headers["x-turnout-request-id"]] = headers["x-turnout-variant"]
        # Stable users give a thumbs up, canary users a thumbs down.
        for request_id, variant in ids.items():
            status, body = await t.post(
                f"{t.url}/v1/feedback",
                {"request_id": request_id, "name": "thumbs_up", "value": variant == "stable"},
            )
            assert status == 201, body
            assert body["variant"] == variant
        router = Router(config_from_mapping(config))
        expected = router.decide(RequestView("/", {"x-user-id": "buyer-7"}, {})).variant.name
        status, body = await t.post(
            f"{t.admin}/admin/feedback",
            {"key": "buyer-7", "route": "main", "name": "converted", "value": 1},
        )
        assert status == 201 and body["variant"] == expected

        _, doc = await t.get("/admin/stats")
        by_name = {v["variant"]: v for v in doc["routes"][0]["variants"]}
        stable_fb = by_name["stable"]["feedback"]["thumbs_up"]
        assert stable_fb["mean"] == 1.0 and stable_fb["is_rate"]
        assert stable_fb["count"] == sum(1 for v in ids.values() if v == "stable")
        if "thumbs_up" in by_name["canary"]["feedback"]:
            assert by_name["canary"]["feedback"]["thumbs_up"]["mean"] == 0.0
        assert by_name[expected]["feedback"]["converted"]["count"] == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"request_id": "nope", "name": "x", "value": 1}, 404, "unknown_request_id"),
        ({"key": "k", "route": "nope", "name": "x", "value": 1}, 404, "unknown_route"),
        ({"key": "k", "route": "main", "name": "bad name!", "value": 1}, 400, None),
        ({"key": "k", "route": "main", "name": "x", "value": "high"}, 400, None),
        ({"name": "x", "value": 1}, 400, None),
        ([1, 2], 400, None),
    ],
)
async def test_bad_feedback_is_refused(
    sim: RunningSimulator, tmp_path: Path, payload: object, status: int, code: str | None
) -> None:
    async with whole(split_config(sim.base_url), tmp_path) as t:
        got, body = await t.post(f"{t.url}/v1/feedback", payload)
        assert got == status, body
        if code:
            assert body["error"]["code"] == code


async def test_admin_token_is_required_when_set(
    sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", "s3cret-token")
    async with whole(split_config(sim.base_url), tmp_path) as t:
        status, body = await t.get("/admin/stats")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, _ = await t.get("/metrics", headers={"authorization": "Bearer wrong"})
        assert status == 401
        status, _ = await t.get("/admin/stats", headers={"authorization": "Bearer s3cret-token"})
        assert status == 200
        status, _ = await t.get("/healthz")
        assert status == 200
