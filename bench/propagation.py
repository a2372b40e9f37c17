"""How fast a config change reaches every worker: p50/p99 over 100 changes.

    python3 bench/propagation.py            # 1 and 2 workers, 100 changes each
    python3 bench/propagation.py --smoke    # 10 changes, no claims

turnout runs as a real `turnout serve` (subprocess) against a simulated upstream.
Each change is a weights flip through the admin API. Two figures per change:
- propagation: from the accepted (stored) change until every serving process has
  swapped to it and said so (measured by the control plane, `propagation_ms`);
- round trip: the admin call as the client sees it (validation, store, push).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from turnout.simulator import start_simulator

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(workers: int, changes: int, upstream: str) -> dict[str, Any]:
    port, admin_port = free_port(), free_port()
    config = {
        "gateway": {"port": port},
        "admin": {"port": admin_port},
        "upstreams": [{"name": "sim", "base_url": upstream}],
        "request_log": {"enabled": False},
        "routes": [
            {
                "name": "main",
                "variants": [
                    {"name": "stable", "upstream": "sim", "weight": 90},
                    {"name": "canary", "upstream": "sim", "weight": 10},
                ],
            }
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "turnout.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "turnout", "serve", "-c", str(path), "-w", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        admin = f"http://127.0.0.1:{admin_port}"
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        async with http.get(f"{admin}/admin/stats") as resp:
                            if resp.status == 200 and (await resp.json())["workers"] == workers:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("turnout did not start")
                    await asyncio.sleep(0.2)
                propagation, round_trip = [], []
                for i in range(changes):
                    weights = (
                        {"stable": 10, "canary": 90} if i % 2 == 0 else {"stable": 90, "canary": 10}
                    )
                    started = time.perf_counter()
                    async with http.put(
                        f"{admin}/admin/routes/main/weights", json={"weights": weights}
                    ) as resp:
                        body = await resp.json()
                    round_trip.append((time.perf_counter() - started) * 1000)
                    propagation.append(body["propagation_ms"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return {
        "workers": workers,
        "changes": changes,
        "propagation_ms": {
            "p50": pct(propagation, 0.5),
            "p99": pct(propagation, 0.99),
            "max": max(propagation),
            "mean": statistics.fmean(propagation),
        },
        "round_trip_ms": {
            "p50": pct(round_trip, 0.5),
            "p99": pct(round_trip, 0.99),
            "max": max(round_trip),
        },
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = ap.parse_args()
    changes = 10 if args.smoke else 100
    async with await start_simulator({}) as sim:
        results = [await measure(w, changes, sim.base_url) for w in args.workers]
    for r in results:
        p, t = r["propagation_ms"], r["round_trip_ms"]
        print(
            f"{r['workers']} worker(s): propagation p50 {p['p50']:.3f} ms p99 {p['p99']:.3f} ms;"
            f" admin round trip p50 {t['p50']:.2f} ms p99 {t['p99']:.2f} ms"
        )
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        out = {"python": sys.version.split()[0], "results": results}
        (RESULTS / "propagation.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
