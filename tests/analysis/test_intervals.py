"""Intervals and quantiles: published values, the stdlib's inverse normal, properties."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout.analysis import mean_interval, normal_quantile, t_quantile, wilson_interval

STD = NormalDist()

# Student's t quantiles, as printed in standard tables (9 decimals).
T_TABLE = [
    (0.975, 1, 12.706204736),
    (0.975, 2, 4.302652730),
    (0.975, 3, 3.182446305),
    (0.975, 4, 2.776445105),
    (0.975, 5, 2.570581836),
    (0.975, 10, 2.228138852),
    (0.975, 20, 2.085963447),
    (0.975, 30, 2.042272456),
    (0.975, 100, 1.983971519),
    (0.995, 1, 63.656741163),
    (0.995, 5, 4.032142984),
    (0.95, 1, 6.313751515),
    (0.95, 10, 1.812461123),
]

# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score, no correction).
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]

probabilities = st.floats(min_value=1e-300, max_value=1 - 1e-16, exclude_min=True)
central = st.floats(min_value=1e-6, max_value=1 - 1e-6)
confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99, 0.999])


# -- normal quantile ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "x"),
    [
        (0.5, 0.0),
        (0.975, 1.959963984540054),
        (0.995, 2.5758293035489004),
        (0.95, 1.6448536269514722),
        (0.9, 1.2815515655446004),
        (0.025, -1.959963984540054),
        (1e-10, -6.361340902404056),
    ],
)
def test_normal_quantile_known_values(p: float, x: float) -> None:
    assert normal_quantile(p) == pytest.approx(x, abs=1e-12)


@given(probabilities)
def test_normal_quantile_matches_the_stdlib_to_1e9(p: float) -> None:
    expected = STD.inv_cdf(p)
    assert abs(normal_quantile(p) - expected) <= 1e-9 * max(1.0, abs(expected))


@given(central)
def test_normal_quantile_is_antisymmetric_and_inverts_the_cdf(p: float) -> None:
    x = normal_quantile(p)
    assert normal_quantile(1 - p) == pytest.approx(-x, abs=1e-9)
    assert STD.cdf(x) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_normal_quantile_refuses_probabilities_outside_0_1(p: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        normal_quantile(p)


# -- t quantile -----------------------------------------------------------------------


@pytest.mark.parametrize(("p", "df", "t"), T_TABLE)
def test_t_quantile_matches_published_tables(p: float, df: int, t: float) -> None:
    assert t_quantile(p, df) == pytest.approx(t, abs=2e-9)
    assert t_quantile(1 - p, df) == pytest.approx(-t, abs=2e-9)


@given(central, st.floats(min_value=0.5, max_value=5000))
def test_t_quantile_is_wider_than_normal_and_monotone(p: float, df: float) -> None:
    t, z = t_quantile(p, df), normal_quantile(p)
    assert abs(t) >= abs(z) - 1e-9  # heavier tails than the normal
    assert t_quantile(min(p + 1e-3, 1 - 1e-9), df) >= t


@given(st.floats(min_value=0.001, max_value=0.999))
def test_t_quantile_large_df_branch_joins_the_exact_one(p: float) -> None:
    # From 1000 degrees of freedom on, the Cornish-Fisher expansion takes over.
    assert t_quantile(p, 1000) == pytest.approx(t_quantile(p, 999.999), abs=1e-8)
    assert t_quantile(p, 1e9) == pytest.approx(normal_quantile(p), abs=1e-8)


# -- mean interval --------------------------------------------------------------------


def sums(values: list[float]) -> tuple[int, float, float]:
    return len(values), math.fsum(values), math.fsum(v * v for v in values)


def test_mean_interval_textbook_example() -> None:
    # 1..5: mean 3, sample variance 2.5, t(0.975, 4) = 2.776445105.
    lo, hi = mean_interval(*sums([1, 2, 3, 4, 5]))
    half = 2.776445105 * math.sqrt(2.5 / 5)
    assert lo == pytest.approx(3 - half, abs=1e-8)
    assert hi == pytest.approx(3 + half, abs=1e-8)


def test_mean_interval_edges() -> None:
    assert mean_interval(1, 4.0, 16.0) == (-math.inf, math.inf)
    assert mean_interval(3, 6.0, 12.0) == (2.0, 2.0)  # no spread at all
    with pytest.raises(ValueError):
        mean_interval(0, 0.0, 0.0)
    with pytest.raises(ValueError):
        mean_interval(3, 1.0, 1.0, confidence=1.0)


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=2, max_size=60),
    confidences,
)
def test_mean_interval_contains_the_mean_symmetrically(values: list[float], conf: float) -> None:
    n, total, total_sq = sums(values)
    lo, hi = mean_interval(n, total, total_sq, conf)
    mean = total / n
    assert lo <= mean <= hi
    assert mean - lo == pytest.approx(hi - mean, rel=1e-9, abs=1e-6)


@given(
    st.floats(min_value=-100, max_value=100),
    st.floats(min_value=0.01, max_value=100),
    st.integers(min_value=2, max_value=10_000),
)
def test_mean_interval_shrinks_with_n(mean: float, sd: float, n: int) -> None:
    def width(k: int) -> float:
        total = k * mean
        total_sq = (k - 1) * sd * sd + k * mean * mean
        lo, hi = mean_interval(k, total, total_sq)
        return hi - lo

    assert width(n + 1) < width(n)


@given(st.integers(min_value=2, max_value=200), st.floats(min_value=0.01, max_value=10))
def test_mean_interval_widens_with_confidence(n: int, sd: float) -> None:
    total_sq = (n - 1) * sd * sd
    widths = [mean_interval(n, 0.0, total_sq, c)[1] for c in (0.8, 0.9, 0.95, 0.99)]
    assert widths == sorted(widths)


# -- Wilson interval ------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n", "lo", "hi"), NEWCOMBE)
def test_wilson_matches_newcombe_1998(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5)
    assert got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2365931), pytest.approx(0.7634069))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=1, max_value=1_000_000))
    return draw(st.integers(min_value=0, max_value=n)), n


@given(counts(), confidences)
def test_wilson_is_within_0_1_and_contains_the_rate(kn: tuple[int, int], conf: float) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n, conf)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (lo == 0.0) == (k == 0)
    assert (hi == 1.0) == (k == n)


@given(counts(), confidences)
def test_wilson_is_symmetric_in_successes_and_failures(kn: tuple[int, int], conf: float) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n, conf)
    lo_f, hi_f = wilson_interval(n - k, n, conf)
    assert lo == pytest.approx(1 - hi_f, abs=1e-12)
    assert hi == pytest.approx(1 - lo_f, abs=1e-12)


@given(counts())
def test_wilson_shrinks_with_n(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(2 * k, 2 * n)
    assert hi2 - lo2 < hi - lo
