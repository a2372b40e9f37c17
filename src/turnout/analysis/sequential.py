"""Always-valid inference for a difference in means or rates: the mixture SPRT (pure).

The default A/B analysis. A fixed-horizon test checked every day and stopped at the
first p < 0.05 has a false-positive rate several times 0.05; the p-values and
confidence sequences here stay valid however often they are looked at and whenever
the experiment is stopped, because they come from a test martingale.

Method: the mixture sequential probability ratio test (mSPRT) with a normal mixing
distribution, in the two-sample Gaussian form of Johari, Koomen, Pekelis & Walsh,
"Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations Research
70(3), 2022; arXiv 1512.04922), the basis of Optimizely's stats engine. With the
estimate ``d = mean_t - mean_c``, its variance ``s2 = var_c / n_c + var_t / n_t``
and the effect drawn from N(0, tau2) under the alternative, the likelihood ratio of
the mixture against "no difference" is

    Lambda = sqrt(s2 / (s2 + tau2)) * exp(tau2 d^2 / (2 s2 (s2 + tau2))).

Under the null ``Lambda`` is a non-negative martingale in information time
(``1 / s2``; this holds for any allocation between arms, since
``Cov(d_then, d_now) = Var(d_now)``), so by Ville's inequality
``P(sup Lambda >= 1 / alpha) <= alpha``. The always-valid p-value is therefore the
running minimum of ``min(1, 1 / Lambda)`` over the looks, and the confidence
sequence is the set of differences not rejected, ``d +/- k s`` with
``k^2 = (1 + 1/r) (2 log(1/alpha) + log(1 + r))`` and ``r = tau2 / s2`` (the normal
mixture boundary of Robbins; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), 2021).
``msprt`` computes one look; ``fold_looks`` takes all of them so far and returns
the running minimum p and the running intersection of the sequences.

The variances are the arms' sample variances, plugged in (as Optimizely does), so
validity is asymptotic: with heavy-tailed metrics or very few observations the
early looks can be optimistic. Start looking after about 100 observations per arm
(for rates, after about 10 hits in each arm). Rates are means of 0/1 values
(``msprt_rates``, Bernoulli variance ``p (1 - p) n / (n - 1)``).

The mixing variance ``tau2`` sets where the sequence is tightest; any fixed choice
keeps validity. Minimising the half-width at sample size ``m`` gives
``tau2 = r* s2(m)`` with ``r* = 2 log(1/alpha) + log(1 + r*)`` (8.2 at alpha = 0.05;
set the derivative of ``k^2`` in ``r`` to 0; Howard et al. 2021 tune their normal
mixture the same way). By default ``tau2`` is tuned so that the tightest
point is at ``planned_n`` observations per arm (default 2,000; pass the plan's
``fixed.sample_size_per_arm``), with the pooled variance ``(var_c + var_t) / 2`` of
the data seen so far. Tying tau to the data's spread makes the test scale-free:
with equal arms ``r`` is ``r* n / planned_n`` whatever the metric's units. The
boundary is flat around its minimum: at alpha = 0.05 the z needed to reject is 3.04
at the planned n, 3.82 at a tenth of it, 3.25 at ten times and 3.57 at a hundred
times it (1.96 for a single fixed-horizon look). Pass ``tau2`` (in the units of the
squared difference) to fix it yourself.

The relative change ``mean_t / mean_c - 1`` gets an approximate sequence: its
delta-method standard error times the boundary multiplier ``k`` of the difference.
It is not itself a martingale-based sequence; the decision comes from the p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from turnout.analysis.fixed import MeanStats, _relative_delta

__all__ = [
    "DEFAULT_PLANNED_N",
    "SequentialResult",
    "fold_looks",
    "mixing_variance",
    "msprt",
    "msprt_rates",
    "optimal_ratio",
]

DEFAULT_PLANNED_N = 2000
_NO_RELATIVE = (math.nan, math.nan, math.nan)


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """One look (from ``msprt``) or all looks so far (from ``fold_looks``)."""

    control: float  # control mean or rate
    treatment: float
    difference: float  # treatment - control
    cs_low: float  # (1 - alpha) always-valid confidence sequence on the difference
    cs_high: float
    relative: float  # treatment / control - 1 (nan when the control mean is 0)
    relative_low: float  # approximate, see the module docstring
    relative_high: float
    p_value: float  # always valid: this look's min(1, 1/Lambda), or the running min
    significant: bool  # p_value < alpha, equivalently 0 outside [cs_low, cs_high]
    alpha: float
    tau2: float  # the mixing variance used
    log_lr: float  # log Lambda at this look, against no difference


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")


def optimal_ratio(alpha: float = 0.05) -> float:
    """``r* = tau2 / s2`` at which the confidence sequence is tightest: the root of
    ``r = 2 log(1/alpha) + log(1 + r)``."""
    _check_alpha(alpha)
    two_l = -2.0 * math.log(alpha)
    r = two_l
    for _ in range(100):  # a contraction (slope 1 / (1 + r) < 1/2): fast
        nxt = two_l + math.log1p(r)
        if abs(nxt - r) <= 1e-14 * nxt:
            return nxt
        r = nxt
    return r


def mixing_variance(variance: float, planned_n: float, alpha: float = 0.05) -> float:
    """``tau2`` that makes the sequence tightest when each arm has ``planned_n``
    observations of per-observation ``variance`` (equal variances assumed)."""
    if not (math.isfinite(variance) and variance > 0.0):
        raise ValueError(f"variance must be positive and finite, got {variance!r}")
    if not (math.isfinite(planned_n) and planned_n > 0.0):
        raise ValueError(f"planned_n must be positive, got {planned_n!r}")
    return optimal_ratio(alpha) * 2.0 * variance / planned_n


def msprt(
    control: MeanStats,
    treatment: MeanStats,
    alpha: float = 0.05,
    *,
    planned_n: float = DEFAULT_PLANNED_N,
    tau2: float | None = None,
) -> SequentialResult:
    """The mSPRT at one look, from each arm's sufficient statistics (n >= 2 each).

    ``tau2`` (if given) is the mixing variance; otherwise it is tuned to
    ``planned_n`` observations per arm and the pooled variance (module docstring).
    With no spread in either arm there is nothing to scale the difference by: the
    look says nothing (``p = 1``, an unbounded sequence).
    """
    _check_alpha(alpha)
    for side, arm in (("control", control), ("treatment", treatment)):
        if arm.n < 2:
            raise ValueError(f"the mSPRT needs n >= 2 in each arm, {side} has {arm.n}")
    if tau2 is not None and not (math.isfinite(tau2) and tau2 > 0.0):
        raise ValueError(f"tau2 must be positive and finite, got {tau2!r}")
    if not (math.isfinite(planned_n) and planned_n > 0.0):
        raise ValueError(f"planned_n must be positive, got {planned_n!r}")
    mc, mt = control.mean, treatment.mean
    vc, vt = control.variance, treatment.variance
    var_mc, var_mt = vc / control.n, vt / treatment.n
    diff = mt - mc
    s2 = var_mc + var_mt
    if tau2 is None:
        tau2 = optimal_ratio(alpha) * (vc + vt) / planned_n
    r = tau2 / s2 if s2 > 0.0 else 0.0
    if not 0.0 < r < math.inf:  # no spread (or one so far below tau2 it underflows)
        inf = math.inf
        rel, rel_low, rel_high = (mt / mc - 1.0, -inf, inf) if mc != 0.0 else _NO_RELATIVE
        return SequentialResult(
            mc, mt, diff, -inf, inf, rel, rel_low, rel_high, 1.0, False, alpha, tau2, 0.0
        )

    z2 = diff * diff / s2
    log_lr = 0.5 * (r / (1.0 + r)) * z2 - 0.5 * math.log1p(r)
    p = math.exp(-log_lr) if log_lr > 0.0 else 1.0
    k = math.sqrt((1.0 + 1.0 / r) * (-2.0 * math.log(alpha) + math.log1p(r)))
    half = k * math.sqrt(s2)
    # The same multiplier k on the delta-method standard error of the ratio.
    rel, rel_low, rel_high = _relative_delta(mc, mt, var_mc, var_mt, k)
    return SequentialResult(
        control=mc,
        treatment=mt,
        difference=diff,
        cs_low=diff - half,
        cs_high=diff + half,
        relative=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=p,
        significant=p < alpha,
        alpha=alpha,
        tau2=tau2,
        log_lr=log_lr,
    )


def msprt_rates(
    control_hits: int,
    control_n: int,
    treatment_hits: int,
    treatment_n: int,
    alpha: float = 0.05,
    *,
    planned_n: float = DEFAULT_PLANNED_N,
    tau2: float | None = None,
) -> SequentialResult:
    """``msprt`` for rates: each arm is the mean of ``n`` values, ``hits`` of them 1."""
    return msprt(
        MeanStats.from_rate(control_hits, control_n),
        MeanStats.from_rate(treatment_hits, treatment_n),
        alpha,
        planned_n=planned_n,
        tau2=tau2,
    )


def _intersect(
    lows: Iterable[float], highs: Iterable[float], last: tuple[float, float]
) -> tuple[float, float]:
    low, high = max(lows), min(highs)
    # Disjoint sequences happen with probability <= alpha when the model holds;
    # an inverted interval helps no reader, so the latest look's is kept then.
    return (low, high) if low <= high else last


def fold_looks(looks: Iterable[SequentialResult]) -> SequentialResult:
    """All looks so far, oldest first, into one always-valid result: the latest
    estimates, the running minimum p-value and the running intersection of the
    confidence sequences (for the relative change too). All looks must share alpha.
    """
    seq = list(looks)
    if not seq:
        raise ValueError("need at least one look")
    last = seq[-1]
    if any(look.alpha != last.alpha for look in seq):
        raise ValueError("all looks must use the same alpha")
    p = min(look.p_value for look in seq)
    low, high = _intersect(
        (x.cs_low for x in seq), (x.cs_high for x in seq), (last.cs_low, last.cs_high)
    )
    rel = [x for x in seq if not math.isnan(x.relative_low)]
    rel_low, rel_high = last.relative_low, last.relative_high
    if rel and not math.isnan(rel_low):
        rel_low, rel_high = _intersect(
            (x.relative_low for x in rel), (x.relative_high for x in rel), (rel_low, rel_high)
        )
    return replace(
        last,
        cs_low=low,
        cs_high=high,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=p,
        significant=p < last.alpha,
    )
