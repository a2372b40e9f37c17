"""DDSketch: the accuracy guarantee, exact merges, bounded bins, serialisation."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.observe import SUM_RESOLUTION, DDSketch

QS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
# The bound is exact in real arithmetic; floats at a bin boundary add a few ulps.
SLACK = 1e-9


def sketch_of(values: Sequence[float], **params: float) -> DDSketch:
    sketch = DDSketch(**params)  # type: ignore[arg-type]
    for v in values:
        sketch.add(v)
    return sketch


def exact(sorted_values: Sequence[float], q: float) -> float:
    """The quantile the sketch estimates: rank floor(q * (n - 1)), 0-based."""
    return sorted_values[math.floor(q * (len(sorted_values) - 1))]


def assert_within(sketch: DDSketch, values: Sequence[float], qs: Sequence[float] = QS) -> None:
    ordered = sorted(values)
    for q in qs:
        want = exact(ordered, q)
        got = sketch.quantile(q)
        assert got is not None
        if want <= sketch.min_indexable:
            # The zero bucket: reported as 0 clamped into [min, max].
            assert min(values) <= got <= sketch.min_indexable, (q, want, got)
        else:
            assert abs(got - want) <= (sketch.alpha + SLACK) * want, (q, want, got)


def model_bins(values: Sequence[float], sketch: DDSketch) -> tuple[int, list[int]]:
    """(offset, bins) by the documented rule, computed from scratch."""
    gamma = (1.0 + sketch.alpha) / (1.0 - sketch.alpha)
    multiplier = 1.0 / math.log2(gamma)  # the sketch's exact expression: boundaries agree
    indices = [math.ceil(math.log2(v) * multiplier) for v in values if v > sketch.min_indexable]
    if not indices:
        return 0, []
    top = max(indices)
    lowest = top - sketch.max_bins + 1
    counts = Counter(max(i, lowest) for i in indices)
    lo = min(counts)
    return lo, [counts.get(i, 0) for i in range(lo, top + 1)]


# -- accuracy --------------------------------------------------------------------------

DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "uniform": lambda r: r.uniform(0.001, 10.0),
    "lognormal": lambda r: r.lognormvariate(math.log(0.3), 1.0),
    "bimodal": lambda r: (
        r.lognormvariate(math.log(0.05), 0.2)
        if r.random() < 0.7
        else r.lognormvariate(math.log(8.0), 0.3)
    ),
    "constant": lambda r: 0.25,
    "with_zeros": lambda r: 0.0 if r.random() < 0.3 else r.expovariate(2.0),
    "heavy_tail": lambda r: r.paretovariate(1.2) * 0.01,
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_quantiles_within_alpha(name: str, alpha: float) -> None:
    rng = random.Random(f"{name}-{alpha}")
    values = [DISTRIBUTIONS[name](rng) for _ in range(20_000)]
    sketch = sketch_of(values, alpha=alpha)
    assert_within(sketch, values)
    assert sketch.count == len(values)
    assert sketch.min == min(values)
    assert sketch.max == max(values)
    assert sketch.sum == pytest.approx(math.fsum(values), rel=1e-12, abs=len(values) * 1e-12)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e6)), min_size=1, max_size=300
    ),
    alpha=st.sampled_from([0.001, 0.01, 0.02, 0.1]),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_any_quantile_within_alpha(values: list[float], alpha: float, q: float) -> None:
    # Enough bins for 1e-9..1e6 at the finest alpha: collapsing is tested on its own.
    assert_within(sketch_of(values, alpha=alpha, max_bins=20_000), values, qs=(q,))


def test_zero_bucket_and_extremes_are_exact() -> None:
    sketch = sketch_of([0.0, 0.0, 5e-10, 3.0])
    assert sketch.zero_count == 3
    assert sketch.quantile(0.0) == 0.0
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == 3.0
    single = sketch_of([0.123])
    assert single.quantiles([0.0, 0.5, 1.0]) == [0.123, 0.123, 0.123]


def test_quantiles_batch_matches_single() -> None:
    rng = random.Random(7)
    sketch = sketch_of([rng.lognormvariate(0, 2) for _ in range(5000)])
    assert sketch.quantiles(QS) == [sketch.quantile(q) for q in QS]


# -- bins: the documented rule, bounded -----------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=1e-6, max_value=1e6) | st.just(0.0), min_size=0, max_size=120
    ),
    max_bins=st.sampled_from([1, 2, 8, 50, 2048]),
)
def test_bins_follow_the_collapse_rule(values: list[float], max_bins: int) -> None:
    sketch = sketch_of(values, max_bins=max_bins)
    data = sketch.to_dict()
    assert (data["offset"], data["bins"]) == model_bins(values, sketch)
    assert sketch.bin_count <= max_bins
    assert sum(data["bins"]) + data["zero"] == len(values)


def test_extreme_range_collapses_only_the_lowest_quantiles() -> None:
    rng = random.Random(11)
    values = [10 ** rng.uniform(-9, 9) for _ in range(30_000)]
    sketch = sketch_of(values)
    # 18 decades need ~2070 bins at alpha = 0.01: the lowest ones are folded.
    assert sketch.bin_count == 2048
    assert sketch.used_bin_count == 2048
    assert_within(sketch, values, qs=(0.05, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0))
    ordered = sorted(values)
    low = sketch.quantile(0.001)
    assert low is not None and low > exact(ordered, 0.001) * 1.01
    assert sketch.quantile(0.0) == ordered[0]


def test_bins_stay_bounded_whatever_arrives() -> None:
    sketch = DDSketch(max_bins=64)
    rng = random.Random(3)
    values = []
    for _ in range(20_000):
        values.append(10 ** rng.uniform(-9, 12))
        sketch.add(values[-1])
        assert sketch.bin_count <= 64
    # 64 bins at 1% span a factor of ~3.6: only the top of the data keeps the guarantee.
    assert_within(sketch, values, qs=(0.9999, 1.0))


# -- merge --------------------------------------------------------------------------

value_lists = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=1e9),
        st.floats(min_value=1e-9, max_value=1e-3),
        st.just(0.0),
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(
    values=value_lists,
    k=st.integers(min_value=1, max_value=6),
    max_bins=st.sampled_from([4, 40, 2048]),
    data=st.data(),
)
def test_merged_parts_equal_the_whole(
    values: list[float], k: int, max_bins: int, data: st.DataObject
) -> None:
    owners = data.draw(st.lists(st.integers(0, k - 1), min_size=len(values), max_size=len(values)))
    parts = [DDSketch(max_bins=max_bins) for _ in range(k)]
    for owner, v in zip(owners, values, strict=True):
        parts[owner].add(v)
    order = data.draw(st.permutations(range(k)))
    merged = DDSketch(max_bins=max_bins)
    for i in order:
        merged.merge(parts[i])
    whole = sketch_of(values, max_bins=max_bins)
    assert merged.to_dict() == whole.to_dict()
    # A merge into a sketch that already holds values, not only into an empty one.
    first = parts[order[0]].copy()
    for i in order[1:]:
        first.merge(parts[i])
    assert first.to_dict() == whole.to_dict()


@settings(max_examples=100, deadline=None)
@given(a=value_lists, b=value_lists, c=value_lists, max_bins=st.sampled_from([3, 30, 2048]))
def test_merge_is_commutative_and_associative(
    a: list[float], b: list[float], c: list[float], max_bins: int
) -> None:
    sa, sb, sc = (sketch_of(v, max_bins=max_bins) for v in (a, b, c))

    def merged(*sketches: DDSketch) -> DDSketch:
        out = sketches[0].copy()
        for s in sketches[1:]:
            out.merge(s)
        return out

    assert merged(sa, sb).to_dict() == merged(sb, sa).to_dict()
    ab_c = merged(merged(sa, sb), sc)
    a_bc = merged(sa, merged(sb, sc))
    assert ab_c.to_dict() == a_bc.to_dict() == sketch_of(a + b + c, max_bins=max_bins).to_dict()


@settings(max_examples=60, deadline=None)
@given(values=value_lists, seed=st.integers(0, 2**32))
def test_insertion_order_does_not_matter(values: list[float], seed: int) -> None:
    shuffled = values.copy()
    random.Random(seed).shuffle(shuffled)
    for max_bins in (2, 16):
        assert (
            sketch_of(values, max_bins=max_bins).to_dict()
            == sketch_of(shuffled, max_bins=max_bins).to_dict()
        )


def test_merge_leaves_other_unchanged_and_handles_self() -> None:
    a = sketch_of([1.0, 2.0, 3.0])
    b = sketch_of([10.0, 0.0])
    before = b.to_dict()
    a.merge(b)
    assert b.to_dict() == before
    a.merge(a)
    assert a.to_dict() == sketch_of([1.0, 2.0, 3.0, 10.0, 0.0] * 2).to_dict()
    a.merge(DDSketch())
    assert a.count == 10


def test_merge_refuses_different_parameters() -> None:
    base = DDSketch()
    for other in (DDSketch(alpha=0.02), DDSketch(max_bins=100), DDSketch(min_indexable=1e-6)):
        with pytest.raises(ValueError, match="different parameters"):
            base.merge(other)
    with pytest.raises(TypeError):
        base.merge(object())  # type: ignore[arg-type]


# -- clear, copy, reuse ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(before=value_lists, after=value_lists, max_bins=st.sampled_from([2, 16, 2048]))
def test_cleared_sketch_behaves_as_new(
    before: list[float], after: list[float], max_bins: int
) -> None:
    sketch = sketch_of(before, max_bins=max_bins)
    allocated = sketch.bin_count
    sketch.clear()
    assert sketch.to_dict() == DDSketch(max_bins=max_bins).to_dict()
    assert sketch.bin_count == allocated  # storage kept for reuse
    for v in after:
        sketch.add(v)
    assert sketch.to_dict() == sketch_of(after, max_bins=max_bins).to_dict()
    other = sketch_of(before, max_bins=max_bins)
    other.clear()
    other.merge(sketch_of(after, max_bins=max_bins))
    assert other.to_dict() == sketch.to_dict()


def test_copy_is_independent() -> None:
    a = sketch_of([1.0, 2.0])
    b = a.copy()
    b.add(100.0)
    assert a.count == 2 and b.count == 3
    assert a.to_dict() == sketch_of([1.0, 2.0]).to_dict()


def test_steady_state_inserts_do_not_grow_memory() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(-1.0, 0.8) for _ in range(20_000)]
    sketch = DDSketch()
    for v in values:  # warm up: the bins now cover the distribution
        sketch.add(v)
    bins = sketch.bin_count
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            for v in values:
                sketch.add(v)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sketch.bin_count == bins
    # A count passing 256 leaves CPython's small-int cache and keeps one int object:
    # at most one per bin, however many values arrive.
    assert after - before <= 32 * bins


# -- serialisation ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(values=value_lists, max_bins=st.sampled_from([3, 2048]))
def test_to_dict_round_trips_through_json(values: list[float], max_bins: int) -> None:
    sketch = sketch_of(values, max_bins=max_bins)
    data = sketch.to_dict()
    back = DDSketch.from_dict(json.loads(json.dumps(data, allow_nan=False)))
    assert back.to_dict() == data
    assert back.quantiles(QS) == sketch.quantiles(QS)
    assert (back.count, back.sum, back.min, back.max) == (
        sketch.count,
        sketch.sum,
        sketch.min,
        sketch.max,
    )
    # A rebuilt sketch goes on recording and merging as the original would.
    for s in (back, sketch):
        s.add(123.0)
        s.add(1e-7)
    assert back.to_dict() == sketch.to_dict()


def test_sum_is_exact_across_merges_and_huge_totals() -> None:
    a = sketch_of([0.1] * 1000)
    b = sketch_of([1e9] * 1000)
    a.merge(b)
    data = a.to_dict()
    assert int(data["sum"]) > 2**64  # kept as a string: JSON libraries cap ints at 64 bits
    assert a.sum == pytest.approx(0.1 * 1000 + 1e12, rel=1e-15)
    assert abs(sketch_of([0.1]).sum - 0.1) <= SUM_RESOLUTION


@pytest.mark.parametrize(
    "change",
    [
        {"v": 99},
        {"count": 5},
        {"bins": [1, -1]},
        {"bins": [0, 2]},
        {"sum": 1.5},
        {"min": None},
        {"min": 5.0},
        {"offset": "3"},
        {"alpha": 2.0},
        {"bins": [1] * 5000, "count": 5000},
    ],
)
def test_from_dict_rejects_malformed(change: dict[str, object]) -> None:
    data = sketch_of([1.0, 2.0]).to_dict()
    data.update(change)
    with pytest.raises(ValueError):
        DDSketch.from_dict(data)
    missing = sketch_of([1.0]).to_dict()
    del missing["bins"]
    with pytest.raises(ValueError):
        DDSketch.from_dict(missing)


# -- empty and invalid -------------------------------------------------------------------


def test_empty_sketch() -> None:
    sketch = DDSketch()
    assert sketch.quantile(0.5) is None
    assert sketch.quantiles([0.0, 1.0]) == [None, None]
    assert (sketch.count, sketch.sum, sketch.min, sketch.max, sketch.mean) == (
        0,
        0,
        None,
        None,
        None,
    )
    assert sketch.bin_count == sketch.used_bin_count == 0
    data = sketch.to_dict()
    assert data["bins"] == [] and data["min"] is None
    assert DDSketch.from_dict(json.loads(json.dumps(data))).to_dict() == data
    empty = DDSketch()
    empty.merge(DDSketch())
    assert empty.to_dict() == data


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, 1e300])
def test_add_rejects_bad_values_without_recording(bad: float) -> None:
    sketch = sketch_of([1.0])
    before = sketch.to_dict()
    with pytest.raises(ValueError):
        sketch.add(bad)
    assert sketch.to_dict() == before


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
def test_quantile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError):
        sketch_of([1.0]).quantile(q)


@pytest.mark.parametrize(
    "params",
    [{"alpha": 0.0}, {"alpha": 1.0}, {"max_bins": 0}, {"max_bins": 2.5}, {"min_indexable": 0.0}],
)
def test_constructor_rejects_bad_parameters(params: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DDSketch(**params)  # type: ignore[arg-type]


def test_benchmark_smoke_run() -> None:
    """The comparison in bench/results/sketch.md still runs (a tiny, figure-free run)."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "sketch.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--smoke"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HdrHistogram 2 digits" in out.stdout


@settings(max_examples=80, deadline=None)
@given(values=value_lists, cut=st.integers(0, 200), max_bins=st.sampled_from([2, 16, 2048]))
def test_add_many_is_add_one_by_one(values: list[float], cut: int, max_bins: int) -> None:
    # Two batches, so that the second one starts from a store the first one grew.
    batched = DDSketch(max_bins=max_bins)
    batched.add_many(values[:cut])
    batched.add_many(iter(values[cut:]))
    assert batched.to_dict() == sketch_of(values, max_bins=max_bins).to_dict()


@pytest.mark.parametrize("zero", [True, False])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 1e300])
def test_add_many_stops_at_a_bad_value_with_the_ones_before_recorded(
    bad: float, zero: bool
) -> None:
    # With and without a zero (the zero bucket's branch) before the bad value.
    before = [2.0, 0.0, 1e-3] if zero else [2.0, 1e-3]
    sketch = sketch_of([1.0])
    with pytest.raises(ValueError):
        sketch.add_many([*before, bad, 5.0, 1e-4])
    assert sketch.to_dict() == sketch_of([1.0, *before]).to_dict()


@settings(max_examples=80, deadline=None)
@given(
    first=st.lists(st.floats(min_value=1e-6, max_value=100.0), min_size=1, max_size=40),
    second=st.lists(st.floats(min_value=1e-6, max_value=100.0), max_size=40),
)
def test_add_many_whole_batches_are_add_one_by_one(first: list[float], second: list[float]) -> None:
    # Batches that add_many bins whole, with no per-value checks (above min_indexable,
    # a total below 4096, in allocated bins: the second batch, mostly), as in live use.
    batched = DDSketch()
    batched.add_many(first)
    batched.add_many(second)
    assert batched.to_dict() == sketch_of(first + second).to_dict()


def test_sum_rounds_each_value_to_the_nearest_unit_ties_to_even() -> None:
    unit = SUM_RESOLUTION
    # 1.0 + k/2 units: ties at 0.5 and 2.5 go down to even, 1.5 up to even.
    values = [1.0 + 0.5 * unit, 1.0 + 1.5 * unit, 1.0 + 2.5 * unit, 5000.5, 0.3 * unit]
    expected = 3 * 2**40 + 0 + 2 + 2 + int(5000.5 * 2**40) + 0
    one_by_one = sketch_of(values)
    whole = DDSketch()
    whole.add_many(values[:3])  # allocates the bins
    whole.add_many(values[:3])  # binned whole
    whole.add_many(values[3:])
    assert one_by_one.to_dict()["sum"] == str(expected)
    assert whole.to_dict()["sum"] == str(expected + 3 * 2**40 + 4)


@pytest.mark.parametrize("total", [4095.0, 4097.0, 9000.0, 5e5])
def test_add_many_sum_stays_exact_around_the_whole_batch_limit(total: float) -> None:
    # Float sums of values in 2**-40 units are exact below 8192 only: a batch near or
    # past the limit must still sum as the values one by one do.
    rnd = random.Random(int(total))
    small = [rnd.uniform(1e-6, 1e-3) for _ in range(500)]
    # The large values first, so that the small ones are added to a sum past the limit.
    values = [(total - sum(small)) / 3 + rnd.uniform(-1.0, 1.0) for _ in range(3)] + small
    batched = DDSketch()
    batched.add_many(values)
    batched.add_many(values)
    assert batched.to_dict() == sketch_of(values + values).to_dict()
