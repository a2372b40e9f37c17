"""Two-proportion comparison: published intervals, scipy references, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from turnout.analysis.proportions import compare_proportions, two_sided_p

# Newcombe (1998), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Statistics in Medicine 17:873-890,
# Table II, method 10 (hybrid score, no continuity correction): (m/m_n) - (n/n_n).
NEWCOMBE_DIFF = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    (10, 10, 0, 10, 0.6075, 1.0000),
]


@pytest.mark.parametrize(("a", "n1", "b", "n2", "lo", "hi"), NEWCOMBE_DIFF)
def test_newcombe_published_intervals(
    a: int, n1: int, b: int, n2: int, lo: float, hi: float
) -> None:
    # The paper's difference is first minus second: the first is the treatment here.
    r = compare_proportions(b, n2, a, n1)
    assert r.difference == pytest.approx(a / n1 - b / n2)
    assert r.low == pytest.approx(lo, abs=5e-5)
    assert r.high == pytest.approx(hi, abs=5e-5)


@pytest.mark.parametrize(
    ("a", "n1", "b", "n2"),
    [(20, 1000, 40, 1000), (3, 50, 9, 60), (100, 2000, 90, 2100), (499, 500, 480, 500)],
)
def test_z_and_p_match_chi_square_without_correction(a: int, n1: int, b: int, n2: int) -> None:
    r = compare_proportions(a, n1, b, n2)
    table = [[a, n1 - a], [b, n2 - b]]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert r.z**2 == pytest.approx(chi2, rel=1e-9)
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert math.copysign(1.0, r.z) == math.copysign(1.0, b / n2 - a / n1)


@pytest.mark.parametrize(
    ("a", "n1", "b", "n2"), [(20, 1000, 40, 1000), (3, 50, 9, 60), (100, 2000, 90, 2100)]
)
def test_relative_interval_matches_scipy_katz(a: int, n1: int, b: int, n2: int) -> None:
    r = compare_proportions(a, n1, b, n2, alpha=0.1)
    ref = stats.contingency.relative_risk(b, n2, a, n1)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert r.relative == pytest.approx(ref.relative_risk - 1.0, rel=1e-12)
    assert r.relative_low == pytest.approx(ci.low - 1.0, rel=1e-9)
    assert r.relative_high == pytest.approx(ci.high - 1.0, rel=1e-9)


def test_zero_cells_use_half_correction() -> None:
    # 0 of 100 vs 5 of 100: the estimate is inf, the lower bound from (0.5/101, 5.5/101).
    r = compare_proportions(0, 100, 5, 100)
    assert r.relative == math.inf
    assert r.relative_high == math.inf
    se = math.sqrt(1 / 0.5 - 1 / 101 + 1 / 5.5 - 1 / 101)
    assert r.relative_low == pytest.approx(math.exp(math.log(11.0) - 1.959963984540054 * se) - 1)
    both_zero = compare_proportions(0, 100, 0, 200)
    assert both_zero.relative == 0.0
    assert both_zero.relative_low < 0.0 < both_zero.relative_high
    assert both_zero.z == 0.0
    assert both_zero.p_value == 1.0
    drop_to_zero = compare_proportions(5, 100, 0, 100)
    assert drop_to_zero.relative == -1.0
    # Widened down to the raw estimate; the corrected upper bound (about +62%) is honest
    # about 5 vs 0 hits out of 100.
    assert drop_to_zero.relative_low == -1.0
    assert 0.0 < drop_to_zero.relative_high < 1.0


def test_all_hits_on_both_sides_is_no_change() -> None:
    r = compare_proportions(50, 50, 80, 80)
    assert (r.difference, r.relative, r.z, r.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert r.relative_low < 0.0 < r.relative_high


def test_doubled_error_rate_is_significant() -> None:
    r = compare_proportions(40, 2000, 80, 2000)
    assert r.p_value < 0.001
    assert r.relative == pytest.approx(1.0)
    assert r.low > 0.0 and r.relative_low > 0.3


def test_two_sided_p() -> None:
    assert two_sided_p(0.0) == 1.0
    assert two_sided_p(1.959963984540054) == pytest.approx(0.05, rel=1e-12)
    assert two_sided_p(-10.0) == pytest.approx(stats.norm.sf(10.0) * 2, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 1, 10), "control_n"),
        ((1, 10, 0, -1), "treatment_n"),
        ((-1, 10, 1, 10), "control_hits"),
        ((1, 10, 11, 10), "treatment_hits"),
    ],
)
def test_rejects_bad_counts(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_proportions(*args)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_proportions(1, 10, 2, 10, alpha=alpha)


@st.composite
def two_counts(draw: st.DrawFn) -> tuple[int, int, int, int]:
    n1 = draw(st.integers(1, 5000))
    n2 = draw(st.integers(1, 5000))
    return (draw(st.integers(0, n1)), n1, draw(st.integers(0, n2)), n2)


alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2])


@given(two_counts(), alphas)
def test_intervals_contain_estimates(counts: tuple[int, int, int, int], alpha: float) -> None:
    r = compare_proportions(*counts, alpha=alpha)
    assert -1.0 <= r.low <= r.difference <= r.high <= 1.0
    assert -1.0 <= r.relative_low <= r.relative <= r.relative_high
    assert 0.0 <= r.p_value <= 1.0
    assert not math.isnan(r.relative)


@given(two_counts(), alphas)
def test_swapping_sides_mirrors_the_difference(
    counts: tuple[int, int, int, int], alpha: float
) -> None:
    a, n1, b, n2 = counts
    r = compare_proportions(a, n1, b, n2, alpha=alpha)
    s = compare_proportions(b, n2, a, n1, alpha=alpha)
    assert s.difference == -r.difference
    assert s.low == pytest.approx(-r.high, abs=1e-12)
    assert s.high == pytest.approx(-r.low, abs=1e-12)
    assert s.z == pytest.approx(-r.z, abs=1e-9)
    assert s.p_value == pytest.approx(r.p_value, abs=1e-12)
    if 0 < a < n1 and 0 < b < n2:  # no correction: the ratio interval inverts exactly
        assert 1.0 + s.relative_low == pytest.approx(1.0 / (1.0 + r.relative_high), rel=1e-9)


@given(two_counts())
def test_wider_confidence_gives_wider_intervals(counts: tuple[int, int, int, int]) -> None:
    narrow = compare_proportions(*counts, alpha=0.1)
    wide = compare_proportions(*counts, alpha=0.01)
    assert wide.low <= narrow.low + 1e-12 and narrow.high <= wide.high + 1e-12
    assert wide.relative_low <= narrow.relative_low + 1e-12
    assert narrow.relative_high <= wide.relative_high


@given(two_counts(), alphas)
def test_difference_interval_agrees_with_the_test_far_from_zero(
    counts: tuple[int, int, int, int], alpha: float
) -> None:
    # Score intervals and the pooled z test are not exact duals, but a p-value far
    # below alpha must come with an interval that excludes 0, and vice versa.
    r = compare_proportions(*counts, alpha=alpha)
    if r.p_value < alpha / 20:
        assert r.low > 0.0 or r.high < 0.0
    if r.p_value > min(0.9, alpha * 5):
        assert r.low < 0.0 < r.high
