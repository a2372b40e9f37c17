"""mSPRT: A/A false positives under peeking (against a naive peeked test), power,
the formula against the paper, the inversion, and properties of one look."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import integrate, stats

from turnout.analysis.fixed import MeanStats, compare_rates, welch
from turnout.analysis.sequential import (
    DEFAULT_PLANNED_N,
    SequentialResult,
    fold_looks,
    mixing_variance,
    msprt,
    msprt_rates,
    optimal_ratio,
)

N_PER_ARM = 2_000
STEP = 100  # peek every 100 observations per arm: 20 looks


def _stats(n: int, mean: float, variance: float) -> MeanStats:
    """Sufficient statistics of n values with this mean and sample variance."""
    return MeanStats(n, n * mean, (n - 1) * variance + n * mean * mean)


def _normal_block(rng: random.Random, mu: float) -> tuple[float, float]:
    xs = [rng.gauss(mu, 1.0) for _ in range(STEP)]
    return sum(xs), sum(x * x for x in xs)


def _bernoulli_block(rng: random.Random, p: float) -> tuple[float, float]:
    hits = float(sum(rng.random() < p for _ in range(STEP)))
    return hits, hits  # 0/1 values: sum of squares = sum


def _simulate(
    seed: int,
    runs: int,
    block: Callable[[random.Random, float], tuple[float, float]],
    control: float,
    treatment: float,
    naive: Callable[[MeanStats, MeanStats], float],
) -> tuple[float, float]:
    """Per run, peek every STEP observations up to N_PER_ARM per arm. Returns the
    share of runs where the always-valid p (``fold_looks`` over the looks so far)
    ever fell below 0.05, and the share where the naive fixed-horizon p ever did.
    Sufficient statistics are updated block by block, never re-summed."""
    rng = random.Random(seed)
    seq_hits = naive_hits = 0
    for _ in range(runs):
        arms = [[0, 0.0, 0.0], [0, 0.0, 0.0]]
        looks: list[SequentialResult] = []
        naive_rejected = False
        for _ in range(N_PER_ARM // STEP):
            for arm, mu in zip(arms, (control, treatment), strict=True):
                s, sq = block(rng, mu)
                arm[0] += STEP
                arm[1] += s
                arm[2] += sq
            c = MeanStats(int(arms[0][0]), arms[0][1], arms[0][2])
            t = MeanStats(int(arms[1][0]), arms[1][1], arms[1][2])
            looks.append(msprt(c, t))
            naive_rejected = naive_rejected or naive(c, t) < 0.05
        seq_hits += fold_looks(looks).significant
        naive_hits += naive_rejected
    return seq_hits / runs, naive_hits / runs


def _welch_p(c: MeanStats, t: MeanStats) -> float:
    return welch(c, t).p_value


def _z_p(c: MeanStats, t: MeanStats) -> float:
    return compare_rates(int(c.total), c.n, int(t.total), t.n).p_value


# 1,000 A/A runs: the binomial sd of a 5 % rate is 0.69 %, so 0.05 + 3 sd = 0.0707.
AA_RUNS = 1_000
AA_LIMIT = 0.0707


def test_aa_normal_metric_peeked_20_times_stays_below_alpha() -> None:
    # Seeded result: mSPRT 0.8 % of runs ever significant, naive Welch 25.1 %.
    seq, naive = _simulate(1, AA_RUNS, _normal_block, 0.0, 0.0, _welch_p)
    assert seq <= AA_LIMIT, seq
    # The same harness catches a test that is not safe under peeking: the naive
    # fixed-horizon test, looked at 20 times, is far above alpha (expected ~25 %).
    assert naive >= 0.15, naive


def test_aa_bernoulli_metric_peeked_20_times_stays_below_alpha() -> None:
    # A 10 % rate; seeded result: mSPRT 1.4 % of runs, naive pooled z test 25.1 %.
    seq, naive = _simulate(2, AA_RUNS, _bernoulli_block, 0.1, 0.1, _z_p)
    assert seq <= AA_LIMIT, seq
    assert naive >= 0.15, naive


def test_a_real_effect_is_detected() -> None:
    # 400 runs each; by 2,000 per arm the mSPRT rejects in >= 90 % of runs for a mean
    # shift of 0.15 sd (seeded: 96 %) and >= 75 % for a rate of 10 % -> 14 % (86 %).
    normal, _ = _simulate(3, 400, _normal_block, 0.0, 0.15, _welch_p)
    rate, _ = _simulate(4, 400, _bernoulli_block, 0.10, 0.14, _z_p)
    assert normal >= 0.90, normal
    assert rate >= 0.75, rate


# -- the statistic itself -------------------------------------------------------------


def test_matches_the_paper_form_for_equal_arms() -> None:
    # Johari et al. (2022), n pairs, V = var_c + var_t:
    # Lambda = sqrt(V / (V + n tau2)) exp(n^2 tau2 ybar^2 / (2 V (V + n tau2))).
    n, vc, vt, ybar, tau2 = 500, 2.0, 3.0, 0.17, 0.01
    res = msprt(_stats(n, 1.0, vc), _stats(n, 1.0 + ybar, vt), tau2=tau2)
    v = vc + vt
    log_lr = 0.5 * math.log(v / (v + n * tau2)) + n * n * tau2 * ybar**2 / (2 * v * (v + n * tau2))
    assert res.log_lr == pytest.approx(log_lr, rel=1e-12)
    assert res.p_value == pytest.approx(min(1.0, math.exp(-log_lr)), rel=1e-12)


def test_likelihood_ratio_has_mean_one_under_the_null() -> None:
    # E[Lambda] = 1 when the difference estimate is N(0, s2): the martingale property
    # at a single time, checked by integration over the estimate.
    n, v, tau2 = 200, 4.0, 0.05
    s = math.sqrt(2 * v / n)

    def integrand(d: float) -> float:
        lr = math.exp(msprt(_stats(n, 0.0, v), _stats(n, d, v), tau2=tau2).log_lr)
        return lr * float(stats.norm.pdf(d, scale=s))

    mean, _ = integrate.quad(integrand, -40 * s, 40 * s, points=[0.0], limit=200)
    assert mean == pytest.approx(1.0, rel=1e-8)


def test_sequence_ends_where_the_test_rejects_exactly_at_alpha() -> None:
    c, t = _stats(300, 5.0, 2.0), _stats(280, 5.3, 2.5)
    res = msprt(c, t, alpha=0.1, tau2=0.02)
    for bound in (res.cs_low, res.cs_high):
        shifted = _stats(280, 5.3 - bound, 2.5)  # difference minus the bound
        at_bound = msprt(c, shifted, alpha=0.1, tau2=0.02)
        assert at_bound.log_lr == pytest.approx(math.log(1 / 0.1), rel=1e-9)


def test_default_mixing_variance_is_tuned_to_the_planned_n() -> None:
    n, v = DEFAULT_PLANNED_N, 3.0
    res = msprt(_stats(n, 0.0, v), _stats(n, 0.1, v))
    assert res.tau2 == pytest.approx(mixing_variance(v, n), rel=1e-12)
    assert res.tau2 / (2 * v / n) == pytest.approx(optimal_ratio(0.05), rel=1e-12)
    assert msprt(_stats(500, 0.0, v), _stats(500, 0.1, v), planned_n=500).tau2 == pytest.approx(
        mixing_variance(v, 500), rel=1e-12
    )


def test_optimal_mixing_variance_gives_the_tightest_sequence() -> None:
    r = optimal_ratio(0.05)
    assert r == pytest.approx(2 * math.log(20) + math.log1p(r), rel=1e-14)
    assert r == pytest.approx(8.212, abs=1e-3)
    c, t = _stats(1_000, 0.0, 1.0), _stats(1_000, 0.0, 1.0)
    best = mixing_variance(1.0, 1_000)

    def width(tau2: float) -> float:
        res = msprt(c, t, tau2=tau2)
        return res.cs_high - res.cs_low

    assert width(best) < width(best * 0.8)
    assert width(best) < width(best * 1.25)


def test_sequence_is_wider_than_the_fixed_horizon_interval() -> None:
    c, t = _stats(2_000, 10.0, 4.0), _stats(2_000, 10.2, 4.0)
    seq, fixed = msprt(c, t), welch(c, t)
    assert seq.cs_low < fixed.low
    assert seq.cs_high > fixed.high
    # At the planned n the boundary needs z = 3.04 instead of 1.96.
    half = (seq.cs_high - seq.cs_low) / 2
    assert half / math.sqrt(2 * 4.0 / 2_000) == pytest.approx(3.035, abs=1e-3)


def test_relative_sequence_uses_the_same_multiplier() -> None:
    c, t = _stats(1_000, 10.0, 4.0), _stats(1_200, 10.5, 6.0)
    res = msprt(c, t)
    k = (res.cs_high - res.cs_low) / 2 / math.sqrt(4.0 / 1_000 + 6.0 / 1_200)
    ratio = 10.5 / 10.0
    se = math.sqrt(6.0 / 1_200 + ratio**2 * 4.0 / 1_000) / 10.0
    assert res.relative == pytest.approx(0.05)
    assert res.relative_low == pytest.approx(0.05 - k * se, rel=1e-10)
    assert res.relative_high == pytest.approx(0.05 + k * se, rel=1e-10)


def test_rates_are_bernoulli_means() -> None:
    res = msprt_rates(100, 1_000, 130, 1_000, alpha=0.1, planned_n=5_000)
    control, treatment = MeanStats.from_rate(100, 1_000), MeanStats.from_rate(130, 1_000)
    ref = msprt(control, treatment, 0.1, planned_n=5_000)
    assert res == ref
    assert res.difference == pytest.approx(0.03)


def test_a_look_without_spread_says_nothing() -> None:
    res = msprt_rates(0, 50, 0, 60)
    assert (res.p_value, res.significant) == (1.0, False)
    assert (res.cs_low, res.cs_high) == (-math.inf, math.inf)
    assert math.isnan(res.relative)
    const = msprt(_stats(10, 2.0, 0.0), _stats(10, 3.0, 0.0))
    assert (const.p_value, const.relative, const.relative_low) == (1.0, 0.5, -math.inf)


def test_zero_control_mean_has_no_relative_change() -> None:
    res = msprt(_stats(100, 0.0, 1.0), _stats(100, 0.5, 1.0))
    assert math.isnan(res.relative)
    assert math.isnan(res.relative_low)
    assert math.isnan(res.relative_high)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"tau2": 0.0}, "tau2"),
        ({"tau2": math.inf}, "tau2"),
        ({"planned_n": 0}, "planned_n"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        msprt(_stats(10, 0.0, 1.0), _stats(10, 0.0, 1.0), **kwargs)


def test_too_few_observations_are_rejected() -> None:
    with pytest.raises(ValueError, match="control has 1"):
        msprt(MeanStats(1, 1.0, 1.0), _stats(10, 0.0, 1.0))
    with pytest.raises(ValueError, match="hits <= n"):
        msprt_rates(5, 4, 1, 4)
    with pytest.raises(ValueError, match="variance"):
        mixing_variance(0.0, 100)
    with pytest.raises(ValueError, match="planned_n"):
        mixing_variance(1.0, -1)


# -- folding looks --------------------------------------------------------------------


def test_fold_takes_running_min_and_intersection() -> None:
    looks = [
        msprt(_stats(n, 1.0, 1.0), _stats(n, 1.0 + d, 1.0))
        for n, d in ((100, 0.4), (200, 0.1), (300, 0.25))
    ]
    folded = fold_looks(looks)
    assert folded.p_value == min(x.p_value for x in looks)
    assert folded.cs_low == max(x.cs_low for x in looks)
    assert folded.cs_high == min(x.cs_high for x in looks)
    assert folded.relative_low == max(x.relative_low for x in looks)
    assert folded.difference == looks[-1].difference
    assert folded.significant == (folded.p_value < 0.05)
    assert fold_looks(looks[:1]) == looks[0]


def test_fold_keeps_the_latest_sequence_when_looks_are_disjoint() -> None:
    a = msprt(_stats(100, 0.0, 1.0), _stats(100, 0.1, 1.0))
    b = replace(a, cs_low=a.cs_high + 1.0, cs_high=a.cs_high + 2.0)
    folded = fold_looks([a, b])
    assert (folded.cs_low, folded.cs_high) == (b.cs_low, b.cs_high)


def test_fold_rejects_no_looks_and_mixed_alpha() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fold_looks([])
    a = msprt(_stats(100, 0.0, 1.0), _stats(100, 0.1, 1.0))
    with pytest.raises(ValueError, match="same alpha"):
        fold_looks([a, replace(a, alpha=0.1)])


# -- properties -----------------------------------------------------------------------

counts = st.integers(min_value=2, max_value=100_000)
means = st.floats(min_value=-1e3, max_value=1e3)
variances = st.floats(min_value=1e-3, max_value=1e4)
alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2])


@given(counts, means, variances, counts, means, variances, alphas)
def test_one_look_properties(
    nc: int, mc: float, vc: float, nt: int, mt: float, vt: float, alpha: float
) -> None:
    c, t = _stats(nc, mc, vc), _stats(nt, mt, vt)
    res = msprt(c, t, alpha)
    assert 0.0 <= res.p_value <= 1.0
    assert res.cs_low <= res.difference <= res.cs_high
    if not math.isnan(res.relative):
        assert res.relative_low <= res.relative <= res.relative_high
    # Swapping the arms negates the difference and leaves the evidence alone.
    swapped = msprt(t, c, alpha)
    assert swapped.difference == -res.difference
    assert swapped.p_value == pytest.approx(res.p_value, rel=1e-9, abs=1e-300)
    assert swapped.cs_low == pytest.approx(-res.cs_high, rel=1e-9, abs=1e-9)
    assert swapped.cs_high == pytest.approx(-res.cs_low, rel=1e-9, abs=1e-9)
    # Rejecting is excluding 0 from the sequence (away from the boundary itself).
    assume(abs(res.log_lr - math.log(1 / alpha)) > 1e-6)
    assert res.significant == (not res.cs_low <= 0.0 <= res.cs_high)
