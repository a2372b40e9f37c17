"""The config commands against a running `turnout serve`, as an operator uses them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tests.gateway.conftest import split_config
from tests.gateway.test_workers import free_port

from turnout.simulator import RunningSimulator

TURNOUT = [sys.executable, "-m", "turnout"]


def cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TURNOUT, *args, "--admin-url", admin], capture_output=True, text=True, timeout=30
    )


def serve(path: Path, *extra: str) -> subprocess.Popen[str]:
    """`turnout serve` on the config at ``path``, output captured."""
    return subprocess.Popen(
        [*TURNOUT, "serve", "--config", str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def simulate(port: int) -> subprocess.Popen[bytes]:
    """`turnout simulate` in its own process, returned once it accepts connections: a
    synchronous test has no event loop of its own to run a simulator in."""
    sim = subprocess.Popen(
        [*TURNOUT, "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sim
        except OSError:
            assert time.monotonic() < deadline and sim.poll() is None
            time.sleep(0.1)


def wait_up(admin: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while cli(admin, "status").returncode != 0:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_operator_session(sim: RunningSimulator, tmp_path: Path) -> None:
    admin_port = free_port()
    config = split_config(sim.base_url)
    config["gateway"] = {"port": free_port()}
    config["admin"] = {"port": admin_port}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = f"http://127.0.0.1:{admin_port}"
    proc = serve(path)
    try:
        wait_up(admin, proc)
        out = cli(admin, "status")
        assert "live config version 1" in out.stdout
        assert "main: stable=90, canary=10" in out.stdout

        out = cli(admin, "weights", "main", "stable=75", "canary=25", "--reason", "ramp")
        assert out.returncode == 0, out.stderr
        assert "accepted as version 2" in out.stdout

        out = cli(admin, "weights", "main", "stable=75", "canary=20")
        assert out.returncode != 0
        assert "routes[0].variants" in out.stderr and "add up to" in out.stderr

        out = cli(admin, "promote", "main", "canary")
        assert "accepted as version 3" in out.stdout

        out = cli(admin, "history")
        lines = out.stdout.splitlines()
        assert lines[0].split()[:2] == ["3", "(live)"] and len(lines) == 3
        assert "ramp" in lines[1]

        out = cli(admin, "diff", "1", "2")
        assert "routes[main].variants[canary].weight" in out.stdout

        out = cli(admin, "lock", "main", "--reason", "launch day")
        assert out.returncode == 0
        out = cli(admin, "rollback")
        assert out.returncode != 0 and "locked" in out.stderr
        out = cli(admin, "rollback", "--force", "--to", "1")
        assert "accepted as version 4" in out.stdout

        changed = split_config(sim.base_url)
        changed["gateway"], changed["admin"] = config["gateway"], config["admin"]
        changed["routes"][0]["name"] = "main2"
        (tmp_path / "new.yaml").write_text(yaml.safe_dump(changed))
        out = cli(admin, "apply", str(tmp_path / "new.yaml"))
        assert out.returncode != 0 and "locked" in out.stderr  # it removes the locked route
        cli(admin, "lock", "main", "--unlock")
        out = cli(admin, "apply", str(tmp_path / "new.yaml"))
        assert "accepted as version 5" in out.stdout, out.stderr
        assert "main2" in cli(admin, "status").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)

    # Restarted on the same file: back on version 5, not on the file.
    proc = serve(path)
    try:
        wait_up(admin, proc)
        assert "live config version 5" in cli(admin, "status").stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
