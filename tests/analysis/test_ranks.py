"""Mann-Whitney U and Hodges-Lehmann: scipy, brute force over all pairs, properties."""

from __future__ import annotations

import math
import random
import statistics
from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from turnout.analysis.ranks import hodges_lehmann, kth_pairwise_difference, mann_whitney

# Small integers give many ties, which is where rank statistics are easy to get wrong.
tied = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=40)
spread = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=40
)
wide = st.lists(st.floats(-1e300, 1e300), min_size=1, max_size=30)
samples = st.one_of(tied, spread, wide)
positive = st.lists(st.floats(1e-3, 1e4), min_size=1, max_size=40)
alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2])


def all_differences(control: list[float], treatment: list[float]) -> list[float]:
    return sorted(y - x for x in control for y in treatment)


def moses_rank(n: int, m: int, alpha: float) -> int:
    z = stats.norm.ppf(1 - alpha / 2)
    return math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))


# -- U and its p-value -----------------------------------------------------------------


@given(samples, samples)
def test_u_and_p_match_scipy(control: list[float], treatment: list[float]) -> None:
    r = mann_whitney(control, treatment)
    ref = stats.mannwhitneyu(
        treatment, control, method="asymptotic", use_continuity=True, alternative="two-sided"
    )
    assert r.u == pytest.approx(float(ref.statistic), abs=1e-9)
    if not math.isnan(ref.pvalue):  # scipy gives nan when every value is tied
        assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)
    assert r.superiority == pytest.approx(r.u / (len(control) * len(treatment)))
    assert 0.0 <= r.p_value <= 1.0


def test_u_matches_scipy_on_seeded_ties() -> None:
    rng = random.Random(11)
    for _ in range(30):
        control = [float(rng.randint(0, 30)) for _ in range(rng.randint(50, 400))]
        treatment = [float(rng.randint(2, 32)) for _ in range(rng.randint(50, 400))]
        r = mann_whitney(control, treatment)
        ref = stats.mannwhitneyu(treatment, control, method="asymptotic")
        assert r.u == float(ref.statistic)
        assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)
        assert r.z > 0.0


def test_all_values_equal_is_no_evidence() -> None:
    r = mann_whitney([3.0] * 10, [3.0] * 12)
    assert (r.u, r.z, r.p_value, r.superiority) == (60.0, 0.0, 1.0, 0.5)
    assert r.shift == 0.0


# -- Hodges-Lehmann and the Moses interval against all pairs ----------------------------


@given(samples, samples, alphas)
def test_shift_and_interval_match_brute_force(
    control: list[float], treatment: list[float], alpha: float
) -> None:
    r = mann_whitney(control, treatment, alpha)
    diffs = all_differences(control, treatment)
    assert r.shift == statistics.median(diffs)
    c = moses_rank(len(control), len(treatment), alpha)
    if c < 1:
        assert (r.low, r.high) == (-math.inf, math.inf)
    else:
        assert (r.low, r.high) == (diffs[c - 1], diffs[-c])
        assert r.low <= r.shift <= r.high


@given(positive, positive, alphas)
def test_relative_shift_is_the_median_log_ratio(
    control: list[float], treatment: list[float], alpha: float
) -> None:
    r = mann_whitney(control, treatment, alpha, relative=True)
    logs = all_differences([math.log(v) for v in control], [math.log(v) for v in treatment])
    assert r.relative
    assert r.shift == math.expm1(statistics.median(logs))
    assert -1.0 <= r.low <= r.shift <= r.high
    assert hodges_lehmann(control, treatment, alpha, relative=True) == (r.shift, r.low, r.high)


@settings(max_examples=50)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12), st.data())
def test_every_order_statistic_small(xs: list[int], data: st.DataObject) -> None:
    ys = data.draw(st.lists(st.integers(-3, 3), min_size=1, max_size=12))
    x, y = sorted(map(float, xs)), sorted(map(float, ys))
    diffs = all_differences(x, y)
    for k in range(1, len(diffs) + 1):
        assert kth_pairwise_difference(x, y, k) == diffs[k - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_selection_rounds_match_brute_force(seed: int) -> None:
    # 600 x 500 = 300,000 pairs: well past the size sorted outright, so the sampling
    # rounds run; integer data puts many pairs on the same value as the pivots.
    rng = random.Random(seed)
    awkward = [0.0, 1e-300, 0.1, 0.3, 1.0, 3.3, 1e16, 1e16 + 2.0, -2.5, 5e-324]
    gens = (
        lambda: rng.gauss(0.0, 1.0),
        lambda: float(rng.randint(0, 40)),
        # Magnitudes far apart: x + (y - x) rounds away from y, the case the row cuts
        # must correct for.
        lambda: rng.choice(awkward) * rng.choice([1.0, -1.0, 1.0 + 2**-52]),
    )
    for gen in gens:
        x = sorted(gen() for _ in range(600))
        y = sorted(gen() + 0.5 for _ in range(500))
        diffs = all_differences(x, y)
        for k in (1, 2, 3_750, 149_999, 150_000, 150_001, 296_250, 299_999, 300_000):
            assert kth_pairwise_difference(x, y, k, seed=seed) == diffs[k - 1]


def _count_at_or_below(n: int, t: int) -> int:
    """Pairs (i, j) of 0..n-1 with j - i <= t."""
    if t >= 0:
        s = n - 1 - t  # pairs with j - i > t number s(s+1)/2
        return n * n - max(s, 0) * (max(s, 0) + 1) // 2
    s = n + t  # pairs with j - i <= t < 0: i - j >= -t
    return max(s, 0) * (max(s, 0) + 1) // 2


def _kth_closed_form(n: int, k: int) -> int:
    lo, hi = -(n - 1), n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _count_at_or_below(n, mid) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def test_twenty_thousand_a_side_without_all_pairs() -> None:
    # 4e8 pairs: an implementation that builds them all runs out of memory or time here.
    # The treatment is the control shuffled and moved by 7, so the differences are
    # 7 + (j - i) over 0..n-1 and every order statistic has a closed form.
    n = 20_000
    rng = random.Random(5)
    control = [float(v) for v in range(n)]
    rng.shuffle(control)
    treatment = [v + 7.0 for v in control]
    rng.shuffle(treatment)
    r = mann_whitney(control, treatment)
    assert r.shift == 7.0
    c = moses_rank(n, n, 0.05)
    assert r.low == 7.0 + _kth_closed_form(n, c)
    assert r.high == 7.0 + _kth_closed_form(n, n * n + 1 - c)
    assert r.low < 7.0 < r.high
    ref = stats.mannwhitneyu(treatment, control, method="asymptotic")
    assert r.u == float(ref.statistic)
    assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)


def test_twenty_thousand_lognormal_ranks_by_counting() -> None:
    n = 20_000
    rng = random.Random(9)
    control = [rng.lognormvariate(6.0, 0.5) for _ in range(n)]
    treatment = [1.2 * rng.lognormvariate(6.0, 0.5) for _ in range(n)]
    r = mann_whitney(control, treatment, relative=True)
    # Check the rank of the estimate by counting pairs, O(n log n), not listing them.
    lx = sorted(math.log(v) for v in control)
    ly = sorted(math.log(v) for v in treatment)
    total = n * n
    shift = math.log1p(r.shift)
    below = sum(bisect_right(ly, x + shift - 1e-12) for x in lx)
    at_or_below = sum(bisect_right(ly, x + shift + 1e-12) for x in lx)
    assert below <= total // 2 <= at_or_below
    assert 0.17 < r.shift < 0.23 and r.low < r.shift < r.high
    assert r.low > 0.15 and r.high < 0.26
    assert r.p_value < 1e-50


# -- properties ------------------------------------------------------------------------


@given(samples, samples, alphas)
def test_swapping_sides_negates_the_shift(
    control: list[float], treatment: list[float], alpha: float
) -> None:
    r = mann_whitney(control, treatment, alpha)
    s = mann_whitney(treatment, control, alpha)
    assert s.u == len(control) * len(treatment) - r.u
    assert s.p_value == pytest.approx(r.p_value, abs=1e-12)
    # x - y is exactly -(y - x) in floating point, so this holds exactly.
    assert (s.shift, s.low, s.high) == (-r.shift, -r.high, -r.low)


@given(tied, tied, st.integers(-100, 100))
def test_moving_the_treatment_moves_the_shift(
    control: list[float], treatment: list[float], offset: int
) -> None:
    r = mann_whitney(control, treatment)
    moved = mann_whitney(control, [v + offset for v in treatment])
    assert moved.shift == r.shift + offset
    assert moved.low == r.low + offset and moved.high == r.high + offset


def test_interval_covers_the_true_shift() -> None:
    rng = random.Random(3)
    covered = 0
    for _ in range(400):
        control = [rng.gauss(0.0, 1.0) for _ in range(25)]
        treatment = [rng.gauss(1.0, 1.0) for _ in range(25)]
        r = mann_whitney(control, treatment)
        covered += r.low <= 1.0 <= r.high
    # Nominal 95%; this seed covers 383/400 (95.8%). Moses' floor leans wide, not narrow.
    assert 372 <= covered <= 394


def test_tiny_samples_have_an_unbounded_interval() -> None:
    r = mann_whitney([1.0, 2.0], [3.0, 5.0])
    assert r.shift == 2.5
    assert (r.low, r.high) == (-math.inf, math.inf)
    rel = mann_whitney([1.0], [2.0], relative=True)
    assert rel.shift == pytest.approx(1.0)
    assert (rel.low, rel.high) == (-1.0, math.inf)


def test_scaling_both_sides_keeps_the_relative_shift() -> None:
    rng = random.Random(4)
    control = [rng.lognormvariate(0.0, 0.7) for _ in range(300)]
    treatment = [1.3 * rng.lognormvariate(0.0, 0.7) for _ in range(300)]
    r = mann_whitney(control, treatment, relative=True)
    scaled = mann_whitney([v * 1000 for v in control], [v * 1000 for v in treatment], relative=True)
    assert scaled.shift == pytest.approx(r.shift, rel=1e-9)
    assert scaled.low == pytest.approx(r.low, rel=1e-9)
    assert r.low > 0.0


@pytest.mark.parametrize(
    ("control", "treatment", "relative", "message"),
    [
        ([], [1.0], False, "control has no values"),
        ([1.0], [], False, "treatment has no values"),
        ([1.0, math.nan], [1.0], False, "finite"),
        ([1.0], [math.inf], False, "finite"),
        ([1.0, 0.0], [1.0], True, "positive"),
        ([1.0], [-2.0], True, "positive"),
    ],
)
def test_rejects_bad_samples(
    control: list[float], treatment: list[float], relative: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mann_whitney(control, treatment, relative=relative)


@pytest.mark.parametrize("alpha", [0.0, 1.0, math.nan])
def test_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        mann_whitney([1.0], [2.0], alpha)


def test_rejects_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match="k must be"):
        kth_pairwise_difference([1.0, 2.0], [3.0], 3)
