"""`turnout experiment ...` against a running `turnout serve`, as an analyst uses it."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import yaml
from tests.cli.test_control_cli import cli, serve, simulate, wait_up
from tests.experiment.test_experiment import experiment_config
from tests.gateway.test_workers import free_port


def test_analyst_reads_exports_and_stops_an_experiment(tmp_path: Path) -> None:
    admin_port, port, sim_port = free_port(), free_port(), free_port()
    sim = simulate(sim_port)
    config = experiment_config(f"http://127.0.0.1:{sim_port}/v1")
    config["gateway"], config["admin"] = {"port": port}, {"port": admin_port}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = f"http://127.0.0.1:{admin_port}"
    proc = serve(path)
    try:
        wait_up(admin, proc)
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        for i in range(40):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                data=body.encode(),
                headers={"content-type": "application/json", "x-user-id": f"u{i}"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        out_file = tmp_path / "units.csv"
        deadline = time.monotonic() + 10
        while True:  # the request log is written in batches
            out = cli(admin, "experiment", "export", "prompt-test", "-o", str(out_file))
            assert out.returncode == 0, out.stderr
            if "wrote 40 units" in out.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "wrote 40 units" in out.stdout
        assert out_file.read_text().startswith("key_hash,variant,requests,feedback:converted")

        out = cli(admin, "experiment", "report", "prompt-test")
        assert out.returncode == 0, out.stderr
        assert "units: 40 analysed" in out.stdout and "SRM: ok" in out.stdout
        assert "winner: none yet" in out.stdout  # no feedback at all: nothing to call

        out = cli(admin, "experiment", "stop", "prompt-test", "--winner", "concise")
        assert out.returncode == 0 and "concise now has all" in out.stdout
        assert "chat: control=0, concise=100" in cli(admin, "status").stdout
        out = cli(admin, "experiment", "report", "nope")
        assert out.returncode != 0 and "no experiment 'nope'" in out.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        sim.terminate()
        sim.wait(timeout=20)
