"""Shadows seen from the terminal, against `turnout serve --workers 2`: stats merged
across workers, /metrics, and `turnout shadow diff`."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from tests.cli.test_control_cli import cli, serve, simulate, wait_up
from tests.gateway.test_workers import free_port

from turnout.shadow.evaluators import Similarity

N = 30


def shadow_config(sim_url: str) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "sim", "base_url": sim_url}],
        "routes": [
            {
                "name": "main",
                "variants": [{"name": "live", "upstream": "sim", "model": "m-live"}],
                "shadows": [
                    {
                        "name": "next",
                        "upstream": "sim",
                        "model": "m-next",
                        # The simulator's answers differ only in the model name:
                        # a similarity of about 0.8, a disagreement below 0.9.
                        "samples": {"keep": 5, "below": 0.9},
                    }
                ],
            }
        ],
    }


def post(port: int, user: str) -> None:
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body.encode(),
        headers={"content-type": "application/json", "x-user-id": user},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["x-turnout-variant"] == "live"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        data: bytes = resp.read()
        return data


def test_shadow_numbers_from_two_workers(tmp_path: Path) -> None:
    admin_port, port, sim_port = free_port(), free_port(), free_port()
    sim = simulate(sim_port)
    config = shadow_config(f"http://127.0.0.1:{sim_port}/v1")
    config["gateway"], config["admin"] = {"port": port}, {"port": admin_port}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = f"http://127.0.0.1:{admin_port}"
    proc = serve(path, "--workers", "2")
    try:
        wait_up(admin, proc)
        deadline = time.monotonic() + 20  # the admin API is up before the workers bind
        while json.loads(get(f"{admin}/admin/stats")).get("workers") != 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        for i in range(N):
            post(port, f"u{i}")
        deadline = time.monotonic() + 20
        while True:
            doc = json.loads(get(f"{admin}/admin/stats?window=cumulative"))
            (shadow,) = doc["routes"][0]["shadows"]
            if shadow["mirror"]["pairs"] == N or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert doc["workers"] == 2
        route = doc["routes"][0]
        assert route["variants"][0]["requests"] == N  # shadow calls are not live requests
        assert shadow["requests"] == N and shadow["mirror"]["pairs"] == N
        assert shadow["mirror"]["disagreements"] == N
        assert shadow["mirror"]["agreement"]["exact"]["mean"] == 0.0
        similarity = shadow["mirror"]["agreement"]["similarity"]["mean"]

        metrics = get(f"{admin}/metrics").decode()
        assert 'turnout_shadow_mirror_total{route="main",shadow="next",outcome="sent"} 30' in (
            metrics
        )
        assert 'turnout_shadow_requests_total{route="main",shadow="next"} 30' in metrics
        assert 'turnout_requests_total{route="main",variant="live"} 30' in metrics

        out = cli(admin, "stats", "--window", "cumulative", "--no-color")
        assert out.returncode == 0, out.stderr
        assert "next (shadow)" in out.stdout and "agree: similarity" in out.stdout

        deadline = time.monotonic() + 10
        while True:  # samples are stored off the request path
            out = cli(admin, "shadow", "diff", "main", "--json")
            assert out.returncode == 0, out.stderr
            samples = json.loads(out.stdout)["samples"]
            if len(samples) == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(samples) == 5  # keep: 5, from both workers' writes
        assert all(s["shadow"] == "next" and s["variant"] == "live" for s in samples)
        # Every pair is alike, so the mean is the score of any one of them.
        expected = Similarity().compare({}, samples[0]["live"], samples[0]["shadow_text"])
        assert expected.value is not None and 0.5 < expected.value < 0.9
        assert abs(similarity - expected.value) < 1e-9
        out = cli(admin, "shadow", "diff", "main", "--limit", "2")
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("live live vs shadow next") == 2
        assert "m-next" in out.stdout and f"similarity {similarity:.2f}" in out.stdout
        out = cli(admin, "shadow", "diff", "main", "--shadow", "nope")
        assert out.returncode != 0 and "has no shadow 'nope'" in out.stderr
        out = cli(admin, "shadow", "diff", "main", "--limit", "0")
        assert out.returncode != 0 and "limit must be" in out.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        sim.terminate()
        sim.wait(timeout=20)
