"""`turnout rollout ...` against a running `turnout serve --workers 2`, as an operator
uses it: the controller lives in the supervisor, traffic on the workers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml
from tests.cli.test_control_cli import cli, serve, wait_up
from tests.gateway.test_workers import free_port
from tests.rollout.conftest import canary, rollout_config

from turnout.simulator import RunningSimulator


def test_operator_steers_a_rollout(sim: RunningSimulator, tmp_path: Path) -> None:
    admin_port = free_port()
    gated = canary({"weight": 10}, {"pause": {}}, {"weight": 50}, {"pause": {}})
    config = rollout_config(sim.base_url, "m-canary", gated, interval=0.1)
    config["gateway"] = {"port": free_port()}
    config["admin"] = {"port": admin_port}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = f"http://127.0.0.1:{admin_port}"
    proc = serve(path, "--workers", "2")
    try:
        wait_up(admin, proc)
        deadline = time.monotonic() + 20
        while "canary-1" not in (out := cli(admin, "rollout", "list")).stdout:
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.2)
        assert "progressing" in out.stdout and "canary at 10%" in out.stdout

        out = cli(admin, "rollout", "status", "canary-1")
        assert out.returncode == 0, out.stderr
        assert "PROGRESSING" in out.stdout and "stable=90, canary=10" in out.stdout
        assert "▶ pause until resumed" in out.stdout

        out = cli(admin, "rollout", "resume", "canary-1", "--reason", "10% looks fine")
        assert out.returncode == 0, out.stderr
        assert "stable=50, canary=50" in out.stdout and "10% looks fine" in out.stdout
        assert "chat: stable=50, canary=50" in cli(admin, "status").stdout

        out = cli(admin, "rollout", "abort", "canary-1", "--reason", "pager went off")
        assert "ABORTED" in out.stdout and "stable=100, canary=0" in out.stdout

        out = cli(admin, "rollout", "resume", "canary-1")
        assert out.returncode != 0 and "not paused" in out.stderr

        out = cli(admin, "rollout", "retry", "canary-1")
        assert out.returncode == 0 and "stable=90, canary=10" in out.stdout

        spec = tmp_path / "bad.yaml"
        spec.write_text(yaml.safe_dump({**canary({"weight": 5}), "name": "second", "stable": "x"}))
        out = cli(admin, "rollout", "start", str(spec))
        assert out.returncode != 0 and "stable" in out.stderr and "no variant 'x'" in out.stderr

        out = cli(admin, "rollout", "status", "nope")
        assert out.returncode != 0 and "no rollout 'nope'" in out.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
