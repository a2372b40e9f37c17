"""Memory of the observation layer stays flat: RSS after 100k and after 1M requests.

    python3 bench/observe_memory.py            # 1M synthetic requests, ~1 minute
    python3 bench/observe_memory.py --smoke    # 20k, a few seconds, no claims

Synthetic finished requests (4 variant series, 2 upstream series, lognormal
latencies, streams with TTFT and tokens) go through the real Observer: metrics
registry and SQLite request log. The synthetic clock spreads them over two hours,
so every ring of slots has wrapped around several times before the last reading.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from turnout.config import config_from_mapping
from turnout.observe.exchange import Exchange
from turnout.observe.metrics import Registry
from turnout.observe.observer import Observer
from turnout.snapshot import build_snapshot
from turnout.store.requestlog import RequestLog

CONFIG = {
    "upstreams": [
        {"name": "a", "base_url": "http://a/v1"},
        {"name": "b", "base_url": "http://b/v1"},
    ],
    "routes": [
        {
            "name": f"r{i}",
            "match": {"attr": "header:x-r", "equals": str(i)},
            "variants": [
                {"name": "stable", "upstream": "a", "weight": 90, "model": "m1"},
                {"name": "canary", "upstream": "b", "weight": 10, "model": "m2"},
            ],
        }
        for i in range(2)
    ],
    "prices": {"m1": {"input": 1, "output": 2}, "m2": {"input": 3, "output": 4}},
}


def rss_mb() -> float:
    # ru_maxrss is the peak; the current size is what flatness is about.
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    total = 20_000 if args.smoke else 1_000_000
    checkpoints = {total // 10, total}
    snap = build_snapshot(config_from_mapping(CONFIG))
    rng = random.Random(1)
    span = 7200.0  # simulated seconds the requests are spread over
    readings: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log = RequestLog(Path(tmp) / "bench.db", queue_limit=100_000)
        log.start()
        observer = Observer(Registry(), log)
        started = time.perf_counter()
        for i in range(1, total + 1):
            t = i * span / total
            stream = i % 3 == 0
            x = Exchange(f"req{i}", 1.8e9 + t, t, route=f"r{i % 2}", key=f"user-{i % 5000}")
            latency = rng.lognormvariate(-1.0, 0.5)
            x.stream = stream
            x.model = "m1" if i % 10 else "m2"
            x.status = 200 if i % 50 else 500
            x.error_class = None if i % 50 else "upstream_5xx"
            x.sent = t + 0.0002
            x.first_chunk = t + latency / 3 if stream else None
            x.upstream_done = t + latency - 0.0001
            x.end = t + latency
            x.input_tokens, x.output_tokens = 50, 200
            observer.begin(x, "stable" if i % 10 else "canary", "a" if i % 10 else "b")
            observer.finish(x, snap)
            if i in checkpoints:
                log.flush(60)
                gc.collect()
                readings[i] = rss_mb()
        elapsed = time.perf_counter() - started
        log.close()
    first, last = sorted(readings)
    result = {
        "requests": total,
        "rss_mb_at": {str(k): round(v, 1) for k, v in readings.items()},
        "growth_mb": round(readings[last] - readings[first], 1),
        "observe_us_per_request": round(elapsed / total * 1e6, 2),
        "smoke": args.smoke,
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        out = Path(__file__).parent / "results" / "observe_memory.json"
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
