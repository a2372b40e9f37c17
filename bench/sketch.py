"""Quantile sketches for latency recording: turnout's DDSketch against an HdrHistogram.

    python3 bench/sketch.py            # the figures in bench/results/sketch.md (~1 min)
    python3 bench/sketch.py --smoke    # a second or two, for CI: no figures worth keeping

Data: lognormal latencies in seconds (median 0.4 s, sigma 0.9), seeded. For each
structure: insert cost (ns per ``add`` over the whole list, loop included; a no-op
method call in the same loop is the floor), quantile-query cost, memory after all the
values, and relative error at p50/p95/p99 against the exact quantile of the sorted
values (rank ``floor(q * (n - 1))``, the rank both structures estimate). Also: the
cost of DDSketch's index mapping variants, of merging, and of a 1-hour window over a
``Windowed`` ring of 361 slots. Timings are the best of several repeats.

The HdrHistogram here is minimal and exists only for this comparison: integer
microseconds, log-linear buckets with 2 (or 3) significant digits, a preallocated
count array for 1 us .. 1 h, the median of a bucket reported, as in the reference
implementation's algorithm (github.com/HdrHistogram).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate
from math import ceil, floor, frexp, log
from typing import Protocol, TypeVar

from turnout.observe import DDSketch, Windowed

QS = (0.5, 0.95, 0.99)


class HdrHistogram:
    """Log-linear buckets: 2**k ranges split into 2**m linear sub-buckets (HdrHistogram)."""

    def __init__(self, highest: float = 3600.0, digits: int = 2, unit: float = 1e-6) -> None:
        self.scale = 1.0 / unit
        self.highest = int(highest * self.scale)
        sub_bucket_count_mag = ceil(math.log2(2 * 10**digits))
        self.half_mag = sub_bucket_count_mag - 1
        self.half = 1 << self.half_mag
        sub_bucket_count = 1 << sub_bucket_count_mag
        self.mask = sub_bucket_count - 1
        smallest_untrackable = sub_bucket_count
        buckets = 1
        while smallest_untrackable <= self.highest:
            smallest_untrackable <<= 1
            buckets += 1
        self.counts = [0] * ((buckets + 1) * self.half)
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        v = floor(value * self.scale)
        if v > self.highest:
            v = self.highest  # the reference raises; clamping keeps the loop comparable
        bucket = (v | self.mask).bit_length() - self.half_mag - 1
        self.counts[((bucket + 1) << self.half_mag) + (v >> bucket) - self.half] += 1
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def value_at(self, index: int) -> float:
        """The middle of the bucket at ``index``, in seconds."""
        bucket = (index >> self.half_mag) - 1
        sub = (index & (self.half - 1)) + self.half
        if bucket < 0:
            sub -= self.half
            bucket = 0
        low = sub << bucket
        return (low + (1 << bucket) / 2) / self.scale

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        cumulative = list(accumulate(self.counts))
        out = []
        for q in qs:
            rank = q * (self.count - 1)
            j = bisect_right(cumulative, rank)
            out.append(min(max(self.value_at(j), self.min), self.max))
        return out

    def quantile(self, q: float) -> float:
        return self.quantiles((q,))[0]

    def merge(self, other: HdrHistogram) -> None:
        self.counts = list(map(int.__add__, self.counts, other.counts))
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "latency: lognormal, median 0.4 s": lambda r: r.lognormvariate(math.log(0.4), 0.9),
    "latency: 70% at 50 ms, 30% at 8 s": lambda r: (
        r.lognormvariate(math.log(0.05), 0.2)
        if r.random() < 0.7
        else r.lognormvariate(math.log(8.0), 0.3)
    ),
    "latency: Pareto(1.1) tail from 0.1 s": lambda r: 0.1 * r.paretovariate(1.1),
    "gateway overhead: median 30 us": lambda r: r.lognormvariate(math.log(30e-6), 0.5),
    "throughput: 5..250 tokens/s": lambda r: r.uniform(5.0, 250.0),
}


class Recorder(Protocol):
    def add(self, value: float) -> None: ...


class Sketch(Recorder, Protocol):
    def quantiles(self, qs: Sequence[float]) -> Sequence[float | None]: ...


S = TypeVar("S", bound=Recorder)


class NoOp:
    def add(self, value: float) -> None:
        pass


def best_ns(fn: Callable[[], object], repeats: int) -> int:
    best = sys.maxsize
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def insert_ns(make: Callable[[], Recorder], values: Sequence[float], repeats: int) -> float:
    def run() -> None:
        add = make().add
        for v in values:
            add(v)

    return best_ns(run, repeats) / len(values)


def fill(sketch: S, values: Sequence[float]) -> S:
    add = sketch.add
    for v in values:
        add(v)
    return sketch


# -- DDSketch index mappings ---------------------------------------------------------


def mapping_costs(
    values: Sequence[float], alpha: float, repeats: int
) -> list[tuple[str, float, int]]:
    """(name, ns per index, distinct bins) for the exact log and two log2 approximations.

    The approximations keep the guarantee only with a finer multiplier: the steepest
    the approximation can be relative to log2 decides the bin width. Linear: 1/ln(2)
    (1.44x the bins); cubic (DDSketch's coefficients): 7/(10 ln 2) (1.01x).
    """
    gamma = (1 + alpha) / (1 - alpha)
    m_log = 1.0 / log(gamma)
    m_lin = 1.0 / log(gamma)  # in log2 units: ln(2)/ln(gamma) * 1/ln(2)
    m_cub = 7.0 / (10.0 * log(2.0)) * log(2.0) / log(gamma)
    a, b, c = 6.0 / 35.0, -3.0 / 5.0, 10.0 / 7.0

    def exact() -> set[int]:
        return {ceil(log(v) * m_log) for v in values}

    def linear() -> set[int]:
        out = set()
        for v in values:
            mant, exp = frexp(v)
            out.add(ceil((exp + 2.0 * mant - 2.0) * m_lin))
        return out

    def cubic() -> set[int]:
        out = set()
        for v in values:
            mant, exp = frexp(v)
            s = 2.0 * mant - 1.0
            out.add(ceil((exp - 1 + ((a * s + b) * s + c) * s) * m_cub))
        return out

    rows = []
    for name, fn in (
        ("exact log (adopted)", exact),
        ("linear log2", linear),
        ("cubic log2", cubic),
    ):
        ns = best_ns(fn, repeats) / len(values)
        rows.append((name, ns, len(fn())))
    return rows


def sum_costs(values: Sequence[float], repeats: int) -> tuple[float, float]:
    """ns per value of the exact integer sum DDSketch keeps, and of a float sum."""
    scale = 2.0**40

    def exact() -> int:
        total = 0
        for v in values:
            total += floor(v * scale)
        return total

    def inexact() -> float:
        total = 0.0
        for v in values:
            total += v
        return total

    return best_ns(exact, repeats) / len(values), best_ns(inexact, repeats) / len(values)


# -- the report --------------------------------------------------------------------------


def rel_errors(estimates: Sequence[float | None], exact: Sequence[float]) -> list[float]:
    return [abs((e or 0.0) - x) / x for e, x in zip(estimates, exact, strict=True)]


def list_bytes(counts: list[int]) -> int:
    """The list plus the int objects outside CPython's small-int cache."""
    return sys.getsizeof(counts) + sum(sys.getsizeof(c) for c in counts if c > 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("-n", type=int, default=None, help="values (default 1,000,000)")
    args = parser.parse_args()
    n = args.n or (20_000 if args.smoke else 1_000_000)
    repeats = 1 if args.smoke else 5

    rng = random.Random(20240611)
    values = [rng.lognormvariate(math.log(0.4), 0.9) for _ in range(n)]
    ordered = sorted(values)
    exact = [ordered[floor(q * (n - 1))] for q in QS]

    print(f"# Quantile sketches, {n:,} lognormal latencies (median 0.4 s, sigma 0.9)\n")
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {repeats}.\n")

    structures: list[tuple[str, Callable[[], DDSketch | HdrHistogram]]] = [
        ("DDSketch alpha=0.01 (turnout)", DDSketch),
        ("DDSketch alpha=0.004", lambda: DDSketch(alpha=0.004)),
        ("HdrHistogram 2 digits", lambda: HdrHistogram(digits=2)),
        ("HdrHistogram 3 digits", lambda: HdrHistogram(digits=3)),
    ]
    floor_ns = insert_ns(NoOp, values, repeats)
    print(
        "| structure | insert ns/op | p50/p95/p99 query us | bins (nonzero) | bytes |"
        " rel err p50 | p95 | p99 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| no-op method call (floor) | {floor_ns:.0f} | | | | | | |")
    for name, make in structures:
        ins = insert_ns(make, values, repeats)
        s = fill(make(), values)
        q_us = best_ns(partial(s.quantiles, QS), repeats * 20) / 1000
        errs = rel_errors(s.quantiles(QS), exact)
        counts = s._counts if isinstance(s, DDSketch) else s.counts
        nonzero = sum(1 for c in counts if c)
        print(
            f"| {name} | {ins:.0f} | {q_us:.1f} | {len(counts)} ({nonzero}) | "
            f"{list_bytes(counts):,} | {errs[0]:.4%} | {errs[1]:.4%} | {errs[2]:.4%} |"
        )

    dd = fill(DDSketch(), values)
    one_q = best_ns(lambda: dd.quantile(0.99), repeats * 20) / 1000
    wire = len(json.dumps(dd.to_dict(), separators=(",", ":")))
    half = fill(DDSketch(), values[: n // 2])
    merge_us = best_ns(lambda: half.copy().merge(dd), repeats * 5) / 1000
    copy_us = best_ns(half.copy, repeats * 5) / 1000
    print(
        f"\nDDSketch alpha=0.01: quantile(0.99) alone {one_q:.1f} us; to_dict as JSON "
        f"{wire:,} bytes; merge of two {n // 2:,}+{n:,}-value sketches "
        f"{merge_us - copy_us:.1f} us (copy excluded)."
    )

    print(f"\n## Accuracy across distributions, {n // 4:,} values each\n")
    print("Largest relative error over p50, p95 and p99. The HdrHistogram keeps its one")
    print("configuration (1 us units, up to 1 h), as one config for every metric would.\n")
    print("| distribution | DDSketch 0.01 | DDSketch 0.004 | HdrHistogram 2 digits |")
    print("|---|---:|---:|---:|")
    for dist, draw in DISTRIBUTIONS.items():
        data = [draw(rng) for _ in range(n // 4)]
        srt = sorted(data)
        want = [srt[floor(q * (len(srt) - 1))] for q in QS]
        cells = []
        for make in (DDSketch, lambda: DDSketch(alpha=0.004), lambda: HdrHistogram(digits=2)):
            cells.append(max(rel_errors(fill(make(), data).quantiles(QS), want)))
        print(f"| {dist} | " + " | ".join(f"{e:.2%}" for e in cells) + " |")

    print("\n## Index mapping, alpha=0.01\n")
    print("| mapping | ns per index (loop included) | bins for the data |")
    print("|---|---:|---:|")
    for name, ns, bins in mapping_costs(values, 0.01, repeats):
        print(f"| {name} | {ns:.0f} | {bins} |")
    exact_sum, float_sum = sum_costs(values, repeats)
    print(
        f"\nThe exact sum: `total += floor(v * 2**40)` {exact_sum:.0f} ns against "
        f"`total += v` {float_sum:.0f} ns (loop included)."
    )

    per_slot = 50 if args.smoke else 1000
    w: Windowed[DDSketch] = Windowed(DDSketch)
    it = iter(values * (1 + 361 * per_slot // n))
    t = 0.0
    for _ in range(361):
        slot = w.current(t)
        for _ in range(per_slot):
            slot.add(next(it))
        t += 10.0
    now = t - 10.0
    win_ms = {s: best_ns(partial(w.window, now, s), repeats) / 1e6 for s in (60, 300, 3600)}
    current_ns = best_ns(lambda: [w.current(now) for _ in range(100_000)], repeats) / 1e5
    ring = [*w._slots, w._closed]  # private: the memory held is the point here
    ring_bins = sum(s.bin_count for s in ring)
    ring_bytes = sum(list_bytes(s._counts) for s in ring)
    print(
        f"\n## Windowed[DDSketch], 361 slots of {per_slot} values (1 h at 10 s)\n\n"
        f"window(60) {win_ms[60]:.2f} ms, window(300) {win_ms[300]:.2f} ms, "
        f"window(3600) {win_ms[3600]:.2f} ms; current(now) on the fast path "
        f"{current_ns:.0f} ns (list-comprehension loop included). The ring holds "
        f"{ring_bins:,} bins in all, {ring_bytes / 1024:,.0f} KiB of bin storage."
    )


if __name__ == "__main__":
    main()
