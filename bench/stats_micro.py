"""Microbenchmarks of the statistics: the canary judge and the experiment analyses on
sample sizes a user has.

    python3 bench/stats_micro.py            # prints a table, writes bench/results/stats_micro.json
    python3 bench/stats_micro.py --smoke    # a quick run, no figures worth keeping

Judge: three metrics (latency, TTFT: Mann-Whitney U with the Hodges-Lehmann interval;
error rate: two proportions) at 500, 5,000 and 20,000 samples per side (20,000 is
the evidence cap per metric). Experiments work on sufficient statistics, so their
cost does not grow with the sample: one mSPRT look, one Welch test, one SRM check,
one Bayesian comparison of rates. Figures are per call, best of several repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import timeit
from pathlib import Path
from typing import Any

from turnout.analysis.bayes import bayes_rates
from turnout.analysis.fixed import MeanStats, welch
from turnout.analysis.judge import Counts, MetricKind, MetricSpec, Samples, judge
from turnout.analysis.sequential import msprt
from turnout.analysis.srm import sample_ratio_mismatch

RESULTS = Path(__file__).parent / "results"

SPECS = [
    MetricSpec("latency_ms", MetricKind.CONTINUOUS),
    MetricSpec("ttft_ms", MetricKind.CONTINUOUS),
    MetricSpec("error_rate", MetricKind.RATE, critical=True),
]


def observations(n: int, rng: random.Random) -> dict[str, Any]:
    def lat(scale: float) -> list[float]:
        return [rng.lognormvariate(0, 0.5) * scale for _ in range(n)]

    return {
        "latency_ms": Samples(lat(400.0), lat(440.0)),
        "ttft_ms": Samples(lat(120.0), lat(121.0)),
        "error_rate": Counts(n // 50, n, n // 40, n),
    }


def per_call_ms(fn: Any, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    rng = random.Random(7)
    sizes = (500,) if args.smoke else (500, 5_000, 20_000)
    results: dict[str, float] = {}
    for n in sizes:
        obs = observations(n, rng)
        number = 1 if args.smoke or n >= 20_000 else 5
        results[f"judge_3_metrics_{n}_per_side_ms"] = per_call_ms(
            lambda obs=obs: judge(SPECS, obs), number, 1 if args.smoke else 3
        )
    a = MeanStats(20_000, 20_000 * 1.0, 20_000 * 2.0)
    b = MeanStats(20_100, 20_100 * 1.02, 20_100 * 2.1)
    number, repeat = (100, 1) if args.smoke else (10_000, 5)
    results |= {
        "msprt_look_ms": per_call_ms(lambda: msprt(a, b), number, repeat),
        "welch_ms": per_call_ms(lambda: welch(a, b), number, repeat),
        "srm_3_arms_ms": per_call_ms(
            lambda: sample_ratio_mismatch({"a": 5000, "b": 5100, "c": 4950}, {"a": 1, "b": 1, "c": 1}),
            number,
            repeat,
        ),
        "bayes_rates_ms": per_call_ms(lambda: bayes_rates(500, 5000, 560, 5000), number, repeat),
    }
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "smoke": args.smoke}
    for name, value in results.items():
        print(f"{name:36} {value:10.4f} ms")
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "stats_micro.json").write_text(json.dumps({**meta, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
