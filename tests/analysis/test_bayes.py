"""Bayesian view: the exact Beta comparison against integration, Monte Carlo checks of
probabilities and expected losses, and known cases."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from turnout.analysis.bayes import bayes_means, bayes_rates, prob_beta_greater
from turnout.analysis.fixed import MeanStats


def _quad_prob(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) by numerical integration over X1's bulk (scipy as the reference)."""
    m = a1 / (a1 + b1)
    sd = math.sqrt(a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1)))
    lo, hi = max(0.0, m - 40 * sd), min(1.0, m + 40 * sd)
    points = [x for x in (m - 3 * sd, m - sd, m, m + sd, m + 3 * sd) if lo < x < hi]

    def integrand(x: float) -> float:
        return float(stats.beta.pdf(x, a1, b1) * stats.beta.sf(x, a2, b2))

    value, _ = integrate.quad(
        integrand, lo, hi, points=points, epsabs=1e-14, epsrel=1e-12, limit=500
    )
    return float(value)


@pytest.mark.parametrize(
    "params",
    [
        (3, 5, 4, 2),
        (1, 1, 1, 1),
        (10, 20, 12, 18),
        (1.5, 3, 2, 7),  # only some parameters whole: the sum runs over one that is
        (2.5, 3.5, 4.5, 6),
        (0.5, 40, 7.5, 300.5),
        (101, 901, 121, 881),
        (3, 997, 9, 991),
        (500.25, 3, 480.5, 2),
    ],
)
def test_exact_sum_matches_integration(params: tuple[float, float, float, float]) -> None:
    assert prob_beta_greater(*params) == pytest.approx(_quad_prob(*params), abs=1e-10)


def test_large_counts_stay_accurate() -> None:
    # 1M per arm at a 20 % rate: 200k-term sums; lgamma's error at these arguments
    # limits the result to about 1e-9.
    args = (200_001, 800_001, 201_001, 799_001)
    assert prob_beta_greater(*args) == pytest.approx(_quad_prob(*args), abs=1e-8)


whole = st.integers(min_value=1, max_value=400).map(float)


@given(whole, whole, whole, whole)
def test_either_arm_is_greater_with_total_probability_one(
    a1: float, b1: float, a2: float, b2: float
) -> None:
    p, q = prob_beta_greater(a1, b1, a2, b2), prob_beta_greater(a2, b2, a1, b1)
    assert 0.0 <= p <= 1.0
    assert p + q == pytest.approx(1.0, abs=1e-11)
    # X -> 1 - X reverses the order.
    assert prob_beta_greater(b2, a2, b1, a1) == pytest.approx(p, abs=1e-11)


def test_prob_needs_a_whole_positive_parameter() -> None:
    with pytest.raises(ValueError, match="whole-number"):
        prob_beta_greater(0.5, 1.5, 2.5, 3.5)
    with pytest.raises(ValueError, match="a1 must be positive"):
        prob_beta_greater(0.0, 1.0, 1.0, 1.0)


# -- rates ----------------------------------------------------------------------------

RATE_CASES = [
    (100, 1_000, 120, 1_000, 1.0, 1.0),
    (3, 20, 1, 25, 1.0, 1.0),
    (40, 400, 38, 410, 2.0, 8.0),
    (0, 30, 2, 30, 0.5, 1.0),  # half-integer prior alpha: the sums run over beta
]


@pytest.mark.parametrize(("ch", "cn", "th", "tn", "pa", "pb"), RATE_CASES)
def test_rates_match_monte_carlo(ch: int, cn: int, th: int, tn: int, pa: float, pb: float) -> None:
    # 2,000,000 seeded posterior draws per arm. Tolerance: 5 Monte Carlo standard
    # errors, computed from the draws themselves.
    rng = np.random.default_rng(2024)
    draws = 2_000_000
    c = rng.beta(pa + ch, pb + cn - ch, draws)
    t = rng.beta(pa + th, pb + tn - th, draws)
    res = bayes_rates(ch, cn, th, tn, prior_alpha=pa, prior_beta=pb)

    def close(value: float, sample: np.ndarray) -> None:
        se = float(sample.std()) / math.sqrt(draws)
        assert abs(value - float(sample.mean())) <= 5 * se + 1e-12, (value, sample.mean(), se)

    close(res.prob_treatment_better, (t > c).astype(float))
    close(res.expected_loss_treatment, np.maximum(0.0, c - t))
    close(res.expected_loss_control, np.maximum(0.0, t - c))
    assert res.control == pytest.approx((pa + ch) / (pa + pb + cn))
    assert res.treatment == pytest.approx((pa + th) / (pa + pb + tn))


@given(
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=300),
)
def test_rate_losses_differ_by_the_difference(a: int, b: int, c: int, d: int) -> None:
    res = bayes_rates(a, a + b, c, c + d)
    assert res.expected_loss_control - res.expected_loss_treatment == pytest.approx(
        res.difference, abs=1e-12
    )
    assert res.expected_loss_treatment >= 0.0
    assert res.expected_loss_control >= 0.0
    assert 0.0 <= res.prob_treatment_better <= 1.0


@pytest.mark.parametrize(("hits", "n"), [(0, 0), (0, 10), (7, 7), (120, 1_000), (5_000, 50_000)])
def test_identical_rates_are_a_coin_flip(hits: int, n: int) -> None:
    res = bayes_rates(hits, n, hits, n)
    assert res.prob_treatment_better == pytest.approx(0.5, abs=1e-10)
    assert res.expected_loss_treatment == pytest.approx(res.expected_loss_control, abs=1e-13)
    assert res.difference == 0.0


def test_clear_winner() -> None:
    res = bayes_rates(100, 1_000, 200, 1_000)
    assert res.prob_treatment_better > 1 - 1e-9
    assert res.expected_loss_treatment < 1e-10
    assert res.expected_loss_control == pytest.approx(res.difference, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "prior", "message"),
    [
        ((-1, 10, 1, 10), (1.0, 1.0), "control"),
        ((1, 10, 11, 10), (1.0, 1.0), "treatment"),
        ((True, 10, 1, 10), (1.0, 1.0), "ints"),
        ((1, 10, 1, 10), (0.0, 1.0), "prior_alpha"),
        ((1, 10, 1, 10), (1.0, math.inf), "prior_beta"),
        ((1, 10, 1, 10), (0.5, 0.5), "whole number"),
    ],
)
def test_rates_reject_bad_input(
    args: tuple[int, int, int, int], prior: tuple[float, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bayes_rates(*args, prior_alpha=prior[0], prior_beta=prior[1])


# -- means ----------------------------------------------------------------------------


def test_means_closed_form() -> None:
    c = MeanStats(400, 400 * 10.0, 399 * 9.0 + 400 * 100.0)  # mean 10, variance 9
    t = MeanStats(500, 500 * 10.3, 499 * 16.0 + 500 * 10.3**2)  # mean 10.3, variance 16
    res = bayes_means(c, t)
    se = math.sqrt(9.0 / 400 + 16.0 / 500)
    d = 0.3
    assert res.difference == pytest.approx(d)
    assert res.prob_treatment_better == pytest.approx(stats.norm.cdf(d / se), rel=1e-12)
    # E[max(0, -D)] for D ~ N(d, se^2), by integration.
    loss, _ = integrate.quad(lambda x: max(0.0, -x) * stats.norm.pdf(x, d, se), -10, 0)
    assert res.expected_loss_treatment == pytest.approx(loss, rel=1e-8)
    assert res.expected_loss_control - res.expected_loss_treatment == pytest.approx(d, rel=1e-12)


def test_means_match_monte_carlo() -> None:
    # Seeded pure-Python draws of the difference D ~ N(d, se^2), 400,000 of them;
    # tolerance 5 Monte Carlo standard errors.
    rng = random.Random(8)
    values_c = [rng.gauss(5.0, 2.0) for _ in range(300)]
    values_t = [rng.gauss(5.2, 2.5) for _ in range(300)]
    c, t = MeanStats.from_values(values_c), MeanStats.from_values(values_t)
    res = bayes_means(c, t)
    d, se = t.mean - c.mean, math.sqrt(c.variance / c.n + t.variance / t.n)
    draws = [rng.gauss(d, se) for _ in range(400_000)]
    for value, sample in (
        (res.prob_treatment_better, [float(x > 0) for x in draws]),
        (res.expected_loss_treatment, [max(0.0, -x) for x in draws]),
        (res.expected_loss_control, [max(0.0, x) for x in draws]),
    ):
        mean = math.fsum(sample) / len(sample)
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in sample) / len(sample))
        assert abs(value - mean) <= 5 * sd / math.sqrt(len(sample)), (value, mean)


def test_identical_means_are_a_coin_flip() -> None:
    arm = MeanStats.from_values([1.0, 2.0, 4.0, 8.0])
    res = bayes_means(arm, arm)
    assert res.prob_treatment_better == 0.5
    assert res.expected_loss_treatment == res.expected_loss_control > 0.0


def test_means_without_spread_are_known_exactly() -> None:
    lo, hi = MeanStats(3, 3.0, 3.0), MeanStats(3, 6.0, 12.0)
    up = bayes_means(lo, hi)
    assert (up.prob_treatment_better, up.expected_loss_treatment, up.expected_loss_control) == (
        1.0,
        0.0,
        1.0,
    )
    down = bayes_means(hi, lo)
    assert (down.prob_treatment_better, down.expected_loss_treatment) == (0.0, 1.0)
    assert bayes_means(lo, lo).prob_treatment_better == 0.5


def test_means_need_two_values_per_arm() -> None:
    with pytest.raises(ValueError, match="control has 1"):
        bayes_means(MeanStats(1, 1.0, 1.0), MeanStats(3, 3.0, 3.0))
