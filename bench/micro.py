"""Microbenchmarks of the pure parts: routing decisions, bucketing, and the work
the resilience layer adds to a request that succeeds at once.

    python3 bench/micro.py            # prints a table, writes bench/results/micro.json
    python3 bench/micro.py --smoke    # a quick run, no figures worth keeping

The config has 20 routes, each matching on a header, a body field and metadata
(mixed operators), with the request matching the 20th, the worst case for
first-match-wins. Figures are per call, best of several repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import timeit
from pathlib import Path
from typing import Any

from turnout.config import config_from_mapping
from turnout.gateway.dispatch import Dispatcher
from turnout.routing import RequestView, Router, apply_variant, bucket
from turnout.snapshot import build_snapshot

RESULTS = Path(__file__).parent / "results"


def twenty_routes() -> dict[str, Any]:
    routes = []
    for i in range(19):
        routes.append(
            {
                "name": f"r{i}",
                "match": {
                    "all": [
                        {"attr": "header:x-app", "equals": f"app-{i}"},
                        {"attr": "body:model", "in": [f"model-{i}", f"model-{i}-mini"]},
                        {"not": {"attr": "body:metadata.tier", "prefix": "free"}},
                    ]
                },
                "variants": [
                    {"name": "a", "upstream": "u", "weight": 95},
                    {"name": "b", "upstream": "u", "weight": 5, "params": {"temperature": 0}},
                ],
            }
        )
    routes.append(
        {
            "name": "last",
            "match": {
                "any": [
                    {"attr": "body:max_tokens", "gte": 100},
                    {"attr": "header:x-region", "regex": "^eu-"},
                ]
            },
            "sticky": {"key": "header:x-user-id", "fallback": ["body:user"]},
            "variants": [
                {"name": "stable", "upstream": "u", "weight": 90},
                {
                    "name": "canary",
                    "upstream": "u",
                    "weight": 10,
                    "model": "m2",
                    "system_prompt": {"mode": "prepend", "template": "For {{header:x-app}}."},
                },
            ],
        }
    )
    return {"upstreams": [{"name": "u", "base_url": "http://127.0.0.1:9/v1"}], "routes": routes}


def resilience_happy_path(config: dict[str, Any]) -> Any:
    """What dispatch does for a request whose first attempt succeeds, beyond the call
    itself: pick the chain, deposit in the retry budget, ask the upstream's health,
    record the success."""
    snap = build_snapshot(config_from_mapping(config))
    policy = snap.policies["last"]
    chain = policy.chains["stable"]
    dispatcher = Dispatcher(None, None)  # type: ignore[arg-type]  # no I/O here
    now = 1000.0

    def happy() -> None:
        steps = chain.steps(None)
        dispatcher._budget("last", policy).deposit(now)
        target = steps[max(dispatcher._next_available(steps, 0, now), 0)].target
        dispatcher.health.of(target.name).success(target.ejection, now)

    return happy


def per_call_us(fn: Any, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    number, repeat = (2_000, 2) if args.smoke else (100_000, 5)

    config = twenty_routes()
    router = Router(config_from_mapping(config))
    headers = {"x-app": "web", "x-user-id": "user-12345", "x-region": "us-east"}
    body = {"model": "gpt", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]}
    view = RequestView("/v1/chat/completions", headers, body)
    decision = router.decide(view)
    assert decision.route.name == "last"

    results = {
        "decide_20_routes_us": per_call_us(lambda: router.decide(view), number, repeat),
        "match_20_routes_us": per_call_us(lambda: router.match(view), number, repeat),
        "bucket_us": per_call_us(lambda: bucket("last", "user-12345"), number, repeat),
        "apply_variant_us": per_call_us(
            lambda: apply_variant(decision, dict(body), view), number, repeat
        ),
        "resilience_happy_path_us": per_call_us(resilience_happy_path(config), number, repeat),
    }
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "smoke": args.smoke}
    for name, value in results.items():
        print(f"{name:24} {value:8.2f} µs")
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "micro.json").write_text(json.dumps({**meta, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
