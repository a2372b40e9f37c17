"""Fixed-horizon analysis: Welch against scipy, rates, sample sizes and their power."""

from __future__ import annotations

import math
import random
import statistics
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from turnout.analysis.fixed import (
    MeanComparison,
    MeanStats,
    compare_rates,
    sample_size_per_arm,
    welch,
)
from turnout.analysis.proportions import compare_proportions

Z = NormalDist()

# -- MeanStats ------------------------------------------------------------------------


def test_mean_stats_agree_with_statistics_module() -> None:
    values = [3.5, 1.25, 8.0, -2.0, 4.75, 6.5]
    s = MeanStats.from_values(values)
    assert (s.n, s.total) == (6, sum(values))
    assert s.total_sq == pytest.approx(sum(v * v for v in values))
    assert s.mean == pytest.approx(statistics.fmean(values), rel=1e-15)
    assert s.variance == pytest.approx(statistics.variance(values), rel=1e-13)


def test_mean_stats_merge_and_rates() -> None:
    a, b = MeanStats.from_values([1.0, 2.0]), MeanStats.from_values([3.0, 4.0, 5.0])
    assert a + b == MeanStats.from_values([1.0, 2.0, 3.0, 4.0, 5.0])
    r = MeanStats.from_rate(30, 100)
    assert r == MeanStats(100, 30.0, 30.0)
    assert r.variance == pytest.approx(0.3 * 0.7 * 100 / 99)
    assert MeanStats(3, 6.0, 12.0).variance == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0.0, 0.0), "non-negative int"),
        ((2.0, 0.0, 0.0), "non-negative int"),
        ((2, math.inf, 0.0), "finite"),
        ((2, 1.0, -1.0), "sum of squares"),
    ],
)
def test_mean_stats_reject_bad_input(args: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MeanStats(*args)


def test_mean_stats_need_enough_values() -> None:
    with pytest.raises(ValueError, match="n = 0"):
        _ = MeanStats(0, 0.0, 0.0).mean
    with pytest.raises(ValueError, match="n >= 2"):
        _ = MeanStats(1, 1.0, 1.0).variance
    with pytest.raises(ValueError, match="hits <= n"):
        MeanStats.from_rate(5, 4)


# -- Welch ----------------------------------------------------------------------------


def test_welch_matches_scipy_on_random_inputs() -> None:
    rng = random.Random(99)
    for _ in range(200):
        nc, nt = rng.randint(2, 400), rng.randint(2, 400)
        control = [rng.gauss(10.0, rng.uniform(0.5, 5.0)) for _ in range(nc)]
        treatment = [rng.gauss(rng.uniform(9.0, 11.0), rng.uniform(0.5, 5.0)) for _ in range(nt)]
        alpha = rng.choice([0.01, 0.05, 0.1])
        res = welch(MeanStats.from_values(control), MeanStats.from_values(treatment), alpha)
        ref = stats.ttest_ind(treatment, control, equal_var=False)
        ci = ref.confidence_interval(1 - alpha)
        assert res.statistic == pytest.approx(ref.statistic, rel=1e-8)
        assert res.df == pytest.approx(ref.df, rel=1e-8)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        assert res.low == pytest.approx(ci.low, rel=1e-8)
        assert res.high == pytest.approx(ci.high, rel=1e-8)
        assert res.difference == pytest.approx(np.mean(treatment) - np.mean(control), rel=1e-9)
        assert res.significant == (res.p_value < alpha)
        assert (res.metric, res.alpha) == ("mean", alpha)


def test_welch_large_arms_match_scipy() -> None:
    # Welch df in the hundreds of thousands: the large-df branch of the t tail.
    c = MeanStats(400_000, 400_000 * 2.0, 399_999 * 9.0 + 400_000 * 4.0)
    t = MeanStats(300_000, 300_000 * 2.02, 299_999 * 16.0 + 300_000 * 2.02**2)
    res = welch(c, t)
    se = math.sqrt(9.0 / 400_000 + 16.0 / 300_000)
    df = se**4 / ((9.0 / 400_000) ** 2 / 399_999 + (16.0 / 300_000) ** 2 / 299_999)
    assert res.df == pytest.approx(df, rel=1e-9)
    assert res.statistic == pytest.approx(0.02 / se, rel=1e-9)
    assert res.p_value == pytest.approx(2 * stats.t.sf(0.02 / se, df), rel=1e-8)


def test_welch_relative_interval_is_the_delta_method() -> None:
    c, t = MeanStats.from_values([10.0, 12.0, 11.0, 9.0]), MeanStats.from_values([13.0, 12.0, 14.0])
    res = welch(c, t, alpha=0.1)
    ratio = t.mean / c.mean
    se = math.sqrt(t.variance / t.n + ratio**2 * c.variance / c.n) / c.mean
    z = Z.inv_cdf(0.95)
    assert res.relative == pytest.approx(ratio - 1)
    assert res.relative_low == pytest.approx(ratio - 1 - z * se, rel=1e-12)
    assert res.relative_high == pytest.approx(ratio - 1 + z * se, rel=1e-12)


def test_welch_relative_interval_covers_at_about_its_level() -> None:
    # 2,000 seeded experiments with 200 per arm, true relative change +5 %: the 95 %
    # delta-method interval covers it 94-96 % of the time (sd of the rate 0.5 %).
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(2_000):
        c, t = rng.normal(20.0, 6.0, 200), rng.normal(21.0, 6.0, 200)
        res = welch(MeanStats.from_values(c.tolist()), MeanStats.from_values(t.tolist()))
        covered += res.relative_low <= 0.05 <= res.relative_high
    assert 0.93 <= covered / 2_000 <= 0.97


def test_welch_edges() -> None:
    same = welch(MeanStats(3, 6.0, 12.0), MeanStats(4, 8.0, 16.0))
    assert (same.statistic, same.p_value, same.low, same.high) == (0.0, 1.0, 0.0, 0.0)
    apart = welch(MeanStats(3, 6.0, 12.0), MeanStats(3, 9.0, 27.0))
    assert (apart.statistic, apart.p_value, apart.significant) == (math.inf, 0.0, True)
    zero = welch(MeanStats.from_values([-1.0, 1.0]), MeanStats.from_values([1.0, 2.0]))
    assert math.isnan(zero.relative)
    assert math.isnan(zero.relative_low)


def test_welch_rejects_bad_input() -> None:
    two = MeanStats.from_values([1.0, 2.0])
    with pytest.raises(ValueError, match="n >= 2"):
        welch(MeanStats.from_values([1.0]), two)
    with pytest.raises(ValueError, match="treatment has 1"):
        welch(two, MeanStats.from_values([1.0]))
    with pytest.raises(ValueError, match="alpha"):
        welch(two, two, alpha=1.0)


@given(
    st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=30),
    st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=30),
)
def test_welch_swapping_arms_negates(control: list[float], treatment: list[float]) -> None:
    a = welch(MeanStats.from_values(control), MeanStats.from_values(treatment))
    b = welch(MeanStats.from_values(treatment), MeanStats.from_values(control))
    assert b.difference == pytest.approx(-a.difference, abs=1e-9)
    assert b.p_value == pytest.approx(a.p_value, rel=1e-9, abs=1e-12)
    assert a.low <= a.difference <= a.high
    assert 0.0 <= a.p_value <= 1.0


# -- rates ----------------------------------------------------------------------------


def test_compare_rates_is_compare_proportions_in_the_common_shape() -> None:
    res = compare_rates(120, 1_000, 150, 1_050, alpha=0.1)
    ref = compare_proportions(120, 1_000, 150, 1_050, alpha=0.1)
    assert isinstance(res, MeanComparison)
    assert (res.metric, res.df, res.alpha) == ("rate", math.inf, 0.1)
    assert (res.control, res.treatment, res.difference) == (
        ref.control_rate,
        ref.treatment_rate,
        ref.difference,
    )
    assert (res.low, res.high, res.statistic, res.p_value) == (
        ref.low,
        ref.high,
        ref.z,
        ref.p_value,
    )
    assert (res.relative, res.relative_low, res.relative_high) == (
        ref.relative,
        ref.relative_low,
        ref.relative_high,
    )
    assert res.significant == (ref.p_value < 0.1)


# -- sample size ----------------------------------------------------------------------


def _fleiss(p1: float, p2: float, alpha: float, power: float) -> float:
    za, zb = Z.inv_cdf(1 - alpha / 2), Z.inv_cdf(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num**2 / (p2 - p1) ** 2


def test_rate_sample_size_textbook_case() -> None:
    # Baseline 10 %, +10 % relative (to 11 %), alpha 0.05, power 0.8. By hand:
    # (1.959964 * sqrt(2 * .105 * .895) + 0.841621 * sqrt(.09 + .0979))^2 / .01^2
    # = (0.849707 + 0.364822)^2 / 1e-4 = 14,750.8 -> 14,751 per arm.
    hand = (1.959964 * math.sqrt(2 * 0.105 * 0.895) + 0.841621 * math.sqrt(0.09 + 0.0979)) ** 2
    assert hand / 1e-4 == pytest.approx(14_750.8, abs=0.5)
    assert sample_size_per_arm(0.10, 0.10, kind="rate") == 14_751
    assert sample_size_per_arm(0.10, 0.01, kind="rate", relative=False) == 14_751
    # The same effect downwards needs a little less (smaller variance at 9 %).
    assert sample_size_per_arm(0.10, -0.10, kind="rate") == math.ceil(_fleiss(0.1, 0.09, 0.05, 0.8))


@pytest.mark.parametrize(
    ("p1", "mde", "alpha", "power"),
    [
        (0.02, 0.2, 0.05, 0.8),
        (0.5, 0.02, 0.01, 0.9),
        (0.3, -0.1, 0.1, 0.8),
        (0.9, 0.05, 0.05, 0.95),
    ],
)
def test_rate_sample_size_follows_fleiss(p1: float, mde: float, alpha: float, power: float) -> None:
    expected = math.ceil(_fleiss(p1, p1 * (1 + mde), alpha, power))
    assert sample_size_per_arm(p1, mde, alpha, power, kind="rate") == expected


def test_mean_sample_size_textbook_case() -> None:
    # Cohen's d = 0.5 at alpha 0.05, power 0.8: 2 * (1.96 + 0.8416)^2 / 0.25 = 62.8 -> 63
    # (the t-based answer is 64; the normal plan states its n < 30 caveat).
    assert sample_size_per_arm(0.0, 0.5, kind="mean", sd=1.0, relative=False) == 63
    # Relative: baseline 10, +5 % = 0.5 absolute, sd 4 -> d = 0.125 -> 1,005.
    assert sample_size_per_arm(10.0, 0.05, kind="mean", sd=4.0) == 1_005
    assert sample_size_per_arm(-10.0, 0.05, kind="mean", sd=4.0) == 1_005


def test_rate_plan_has_its_power() -> None:
    # 10,000 seeded experiments at the planned 14,751 per arm with the true effect
    # 10 % -> 11 %: the pooled z test (compare_rates) detects it (p < 0.05, right
    # direction) in 80 % +/- 2 % of them (binomial sd 0.4 %). The seed gives 79.9 %.
    n = sample_size_per_arm(0.10, 0.10, kind="rate")
    rng = np.random.default_rng(11)
    control, treatment = rng.binomial(n, 0.10, 10_000), rng.binomial(n, 0.11, 10_000)
    detected = 0
    for c, t in zip(control.tolist(), treatment.tolist(), strict=True):
        res = compare_rates(c, n, t, n)
        detected += res.p_value < 0.05 and res.difference > 0
    assert detected / 10_000 == pytest.approx(0.80, abs=0.02)


def test_mean_plan_has_its_power() -> None:
    # 10,000 seeded experiments at the planned 1,005 per arm, mean 10 vs 10.5, sd 4.
    # Each arm's sufficient statistics are drawn from their exact distributions
    # (mean ~ N(mu, sd^2/n), (n-1) s^2 / sd^2 ~ chi2(n-1)). Welch detects the effect in
    # 80 % +/- 2 % of them (binomial sd 0.4 %).
    n = sample_size_per_arm(10.0, 0.05, kind="mean", sd=4.0)
    rng = np.random.default_rng(12)

    def arms(mu: float) -> list[MeanStats]:
        means = rng.normal(mu, 4.0 / math.sqrt(n), 10_000)
        variances = 16.0 * rng.chisquare(n - 1, 10_000) / (n - 1)
        return [
            MeanStats(n, n * m, (n - 1) * v + n * m * m)
            for m, v in zip(means.tolist(), variances.tolist(), strict=True)
        ]

    detected = 0
    for c, t in zip(arms(10.0), arms(10.5), strict=True):
        res = welch(c, t)
        detected += res.p_value < 0.05 and res.difference > 0
    assert detected / 10_000 == pytest.approx(0.80, abs=0.02)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.1, 0.1), {"kind": "rate", "sd": 1.0}, "sd is for means"),
        ((0.1, 10.0), {"kind": "rate"}, "rates in"),
        ((0.0, 0.01), {"kind": "rate", "relative": False}, "rates in"),
        ((0.1, 0.0), {"kind": "rate"}, "non-zero mde"),
        ((10.0, 0.1), {"kind": "mean"}, "positive sd"),
        ((10.0, 0.1), {"kind": "mean", "sd": -1.0}, "positive sd"),
        ((0.0, 0.1), {"kind": "mean", "sd": 1.0}, "non-zero baseline"),
        ((10.0, 0.1), {"kind": "median", "sd": 1.0}, "kind"),
        ((0.1, 0.1, 0.0), {"kind": "rate"}, "alpha"),
        ((0.1, 0.1, 0.05, 1.0), {"kind": "rate"}, "power"),
    ],
)
def test_sample_size_rejects_bad_input(
    args: tuple[float, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sample_size_per_arm(*args, **kwargs)  # type: ignore[arg-type]
