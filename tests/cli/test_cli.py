"""The turnout command as a user runs it: a subprocess, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import yaml
from tests.gateway.conftest import split_config
from tests.gateway.test_workers import free_port

TURNOUT = [sys.executable, "-m", "turnout"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TURNOUT, *args], capture_output=True, text=True, timeout=60)


def test_validate_accepts_and_refuses(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(split_config("http://127.0.0.1:9/v1")))
    out = run("validate", str(good))
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout

    broken = split_config("http://127.0.0.1:9/v1")
    broken["routes"][0]["variants"][1]["weight"] = 20
    broken["routes"][0]["variants"][0]["upstream"] = "missing"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken))
    out = run("validate", str(bad))
    assert out.returncode == 2
    assert "routes[0].variants: weights add up to 110" in out.stderr
    assert "routes[0].variants[0].upstream: unknown upstream 'missing'" in out.stderr

    out = run("validate", str(tmp_path / "absent.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_schema_is_json_schema() -> None:
    out = run("schema")
    schema = json.loads(out.stdout)
    assert schema["title"] == "turnout config"
    assert {"upstreams", "routes", "gateway"} <= set(schema["properties"])
    assert "Match" in schema["$defs"]


def test_route_explains_the_decision(tmp_path: Path) -> None:
    config = split_config("http://127.0.0.1:9/v1")
    config["routes"].insert(
        0,
        {
            "name": "gold",
            "match": {"attr": "header:x-tier", "equals": "gold"},
            "variants": [{"name": "only", "upstream": "sim"}],
        },
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run("route", str(path), "-H", "x-user-id: alice", "-d", '{"model": "m"}')
    assert out.returncode == 0, out.stderr
    assert "route 'gold': does not match" in out.stdout
    assert "header:x-tier equals 'gold' (value: absent)" in out.stdout
    assert "hash of header:x-user-id='alice'" in out.stdout
    assert "→ route 'main', variant" in out.stdout
    out = run("route", str(path), "-H", "x-tier: gold")
    assert "→ route 'gold', variant 'only'" in out.stdout


def test_demo_streams_and_stops_cleanly_on_sigint() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*TURNOUT, "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 20
        while True:
            try:
                stream = client.chat.completions.create(
                    model="any",
                    user="alice",
                    stream=True,
                    messages=[{"role": "user", "content": "Hi"}],
                )
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "Hello from sim-model-v" in text
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
    out = proc.stdout.read() if proc.stdout else ""
    assert code == 0
    assert "curl" in out and "from openai import OpenAI" in out


def test_route_exit_status_and_missing_body_file(tmp_path: Path) -> None:
    config = split_config(
        "http://127.0.0.1:9/v1", sticky={"key": "header:k", "on_missing": "reject"}
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run("route", str(path))
    assert out.returncode == 1
    assert "→ error" in out.stdout and "missing" not in out.stderr
    out = run("route", str(path), "-d", f"@{tmp_path / 'nope.json'}")
    assert out.returncode != 0 and "No such file" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_refuses_public_host_without_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_ADMIN_TOKEN")}
    out = subprocess.run(
        [*TURNOUT, "demo", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2
    assert "TURNOUT_ADMIN_TOKEN" in out.stderr


def test_rollout_demo_rolls_back_the_bad_candidate_and_promotes_the_good() -> None:
    out = subprocess.run(
        [*TURNOUT, "demo", "--scenario", "rollout", "--window", "1.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    bad, good = text.split("--- rolling out 'v2' over 'v1'")
    assert "v2-bad: aborted" in bad and "critical metric error_rate failed" in bad
    assert "v2: promoted" in good and "weights:  v1=0, v2-bad=0, v2=100" in good
