"""Fixed-horizon A/B analysis: Welch's t test for means, the two-proportion test for
rates, and the sample size that makes such a test worth running (pure).

"Fixed horizon" means the p-values and intervals here are valid when the data are
looked at once, at a sample size chosen in advance with ``sample_size_per_arm``.
Looking every day and stopping at the first p < 0.05 inflates the false-positive
rate several-fold; ``sequential.py`` is the analysis that survives that, and the
default. This module is for planning, and for the final read-out of an experiment
that ran to its planned size.

* Means: Welch's unequal-variance t test with the Welch-Satterthwaite degrees of
  freedom (Welch 1947). Arms of an LLM experiment differ in spread as well as in
  mean (a longer prompt changes the latency distribution), and Welch loses almost
  nothing to Student's pooled test when the variances are equal (Delacre, Lakens &
  Leys 2017). The relative change ``treatment / control - 1`` gets a delta-method
  interval (first-order Taylor expansion of the ratio, arms independent) with the
  normal quantile: it is an asymptotic interval, meaningless when the control mean's
  own interval reaches 0 (Fieller's problem), and ``nan`` when it is exactly 0.
* Rates: ``proportions.compare_proportions`` (Newcombe hybrid score interval on the
  difference, Katz log interval on the ratio, pooled z test), wrapped by
  ``compare_rates`` into the same ``Comparison`` shape as means so that a report can
  print both kinds with one code path.
* Sample size: the classic two-sided normal-approximation plan for equal arms. For
  rates the variance under the null is the pooled one and under the alternative the
  unpooled one (Fleiss, Levin & Paik, "Statistical Methods for Rates and
  Proportions", 3rd ed., chapter 4, without the continuity correction):

      n = (z_{1-a/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / (p2 - p1)^2

  For means: n = 2 (z_{1-a/2} + z_{power})^2 sd^2 / delta^2. The far tail is ignored
  (its contribution to power is negligible at any useful power), and for means
  the normal quantile stands in for t, which understates n by a unit or two when n is
  below about 30.

Inputs are sufficient statistics (``MeanStats``: count, sum, sum of squares; for
rates hits and n), so callers aggregate in SQL or merge per-process counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from turnout.analysis.distributions import t_two_sided_p
from turnout.analysis.intervals import normal_quantile, t_quantile
from turnout.analysis.proportions import compare_proportions

__all__ = [
    "Comparison",
    "MeanComparison",
    "MeanStats",
    "compare_rates",
    "sample_size_per_arm",
    "welch",
]


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Sufficient statistics of one arm's metric: count, sum and sum of squares.

    The variance from these loses precision when the spread is tiny next to the
    values' size (say 1e9 +/- 1); subtract a fixed offset before summing if so.
    """

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n must be a non-negative int, got {self.n!r}")
        if not (math.isfinite(self.total) and math.isfinite(self.total_sq)):
            raise ValueError(
                f"total and total_sq must be finite, got {self.total!r}, {self.total_sq!r}"
            )
        if self.total_sq < 0.0:
            raise ValueError(f"total_sq is a sum of squares, cannot be {self.total_sq!r}")

    @classmethod
    def from_values(cls, values: Iterable[float]) -> MeanStats:
        n, total, total_sq = 0, 0.0, 0.0
        for v in values:
            n += 1
            total += v
            total_sq += v * v
        return cls(n, total, total_sq)

    @classmethod
    def from_rate(cls, hits: int, n: int) -> MeanStats:
        """A rate as the mean of 0/1 values: sum and sum of squares are both ``hits``."""
        if not 0 <= hits <= n:
            raise ValueError(f"need 0 <= hits <= n, got {hits!r} of {n!r}")
        return cls(n, float(hits), float(hits))

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float:
        if self.n < 1:
            raise ValueError("the mean of no values is undefined (n = 0)")
        return self.total / self.n

    @property
    def variance(self) -> float:
        """Sample variance (ddof = 1)."""
        if self.n < 2:
            raise ValueError(f"the sample variance needs n >= 2, got n = {self.n}")
        # Rounding can take the difference slightly below 0 when all values are equal.
        return max(0.0, (self.total_sq - self.total * self.mean) / (self.n - 1))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment against control, for a mean (Welch) or a rate (two-proportion z)."""

    metric: Literal["mean", "rate"]
    control: float  # control mean or rate
    treatment: float
    difference: float  # treatment - control
    low: float  # (1 - alpha) interval on the difference
    high: float
    relative: float  # treatment / control - 1
    relative_low: float
    relative_high: float
    statistic: float  # Welch t, or the pooled z for rates
    df: float  # Welch-Satterthwaite degrees of freedom; inf for the z test
    p_value: float  # two-sided
    alpha: float
    significant: bool  # p_value < alpha


# The name the A/B plan uses for the result of ``welch``.
MeanComparison = Comparison


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")


def welch(control: MeanStats, treatment: MeanStats, alpha: float = 0.05) -> Comparison:
    """Welch's t test of ``treatment.mean - control.mean``; each arm needs n >= 2."""
    _check_alpha(alpha)
    for side, arm in (("control", control), ("treatment", treatment)):
        if arm.n < 2:
            raise ValueError(f"Welch's test needs n >= 2 in each arm, {side} has {arm.n}")
    mc, mt = control.mean, treatment.mean
    a = control.variance / control.n
    b = treatment.variance / treatment.n
    diff = mt - mc
    se2 = a + b
    se = math.sqrt(se2)
    if se2 > 0.0:
        # Welch-Satterthwaite, written with the shares of se2 so that tiny variances
        # do not underflow when squared.
        fa, fb = a / se2, b / se2
        df = 1.0 / (fa * fa / (control.n - 1) + fb * fb / (treatment.n - 1))
        t = diff / se
        p = t_two_sided_p(t, df)
    else:
        # Both arms constant: no spread to test against. Equal constants differ by
        # nothing (p = 1); different ones differ for certain (p = 0).
        df = float(control.n + treatment.n - 2)
        t = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0.0 else 0.0
    half = t_quantile(1.0 - 0.5 * alpha, df) * se
    rel, rel_low, rel_high = _relative_delta(mc, mt, a, b, normal_quantile(1.0 - 0.5 * alpha))
    return Comparison(
        metric="mean",
        control=mc,
        treatment=mt,
        difference=diff,
        low=diff - half,
        high=diff + half,
        relative=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        statistic=t,
        df=df,
        p_value=p,
        alpha=alpha,
        significant=p < alpha,
    )


def _relative_delta(
    mc: float, mt: float, var_mc: float, var_mt: float, z: float
) -> tuple[float, float, float]:
    """``mt / mc - 1`` and its delta-method interval; ``var_*`` are the variances of
    the two means (variance / n)."""
    if mc == 0.0:
        return (math.nan, math.nan, math.nan)
    ratio = mt / mc
    # Var(mt/mc) ~ Var(mt)/mc^2 + mt^2 Var(mc)/mc^4 for independent arms.
    se = math.sqrt(var_mt + ratio * ratio * var_mc) / abs(mc)
    rel = ratio - 1.0
    half = z * se
    if not math.isfinite(rel - half):
        # A control mean next to 0 overflows the ratio: nothing bounds it.
        return (rel, -math.inf, math.inf)
    return (rel, rel - half, rel + half)


def compare_rates(
    control_hits: int,
    control_n: int,
    treatment_hits: int,
    treatment_n: int,
    alpha: float = 0.05,
) -> Comparison:
    """``proportions.compare_proportions`` in the ``Comparison`` shape (``df`` = inf);
    see that module for the intervals and the edge cases at 0 hits."""
    c = compare_proportions(control_hits, control_n, treatment_hits, treatment_n, alpha)
    return Comparison(
        metric="rate",
        control=c.control_rate,
        treatment=c.treatment_rate,
        difference=c.difference,
        low=c.low,
        high=c.high,
        relative=c.relative,
        relative_low=c.relative_low,
        relative_high=c.relative_high,
        statistic=c.z,
        df=math.inf,
        p_value=c.p_value,
        alpha=alpha,
        significant=c.p_value < alpha,
    )


def sample_size_per_arm(
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    *,
    kind: Literal["mean", "rate"],
    sd: float | None = None,
    relative: bool = True,
) -> int:
    """Observations per arm (equal arms) for a two-sided test at level ``alpha`` to
    detect a true change of ``mde`` with probability ``power``.

    ``baseline`` is the control rate (``kind="rate"``) or mean (``kind="mean"``).
    ``mde`` is the minimum detectable effect, relative to the baseline
    (``relative=True``: 0.1 means +10 %) or absolute; its sign does not matter for
    means, but for rates it says which rate the alternative has. Means need ``sd``,
    the per-observation standard deviation.
    """
    _check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be strictly between 0 and 1, got {power!r}")
    if not (math.isfinite(baseline) and math.isfinite(mde)) or mde == 0.0:
        raise ValueError(
            f"need a finite baseline and a finite non-zero mde, got {baseline!r}, {mde!r}"
        )
    z_a = normal_quantile(1.0 - 0.5 * alpha)
    z_b = normal_quantile(power)
    if kind == "rate":
        if sd is not None:
            raise ValueError("sd is for means; a rate's variance follows from the rate")
        p1 = baseline
        p2 = baseline * (1.0 + mde) if relative else baseline + mde
        if not (0.0 < p1 < 1.0 and 0.0 < p2 < 1.0):
            raise ValueError(
                f"baseline and baseline + effect must be rates in (0, 1), got {p1!r} and {p2!r}"
            )
        pbar = 0.5 * (p1 + p2)
        root = z_a * math.sqrt(2.0 * pbar * (1.0 - pbar)) + z_b * math.sqrt(
            p1 * (1.0 - p1) + p2 * (1.0 - p2)
        )
        n = root * root / ((p2 - p1) ** 2)
    elif kind == "mean":
        if sd is None or not (math.isfinite(sd) and sd > 0.0):
            raise ValueError(f"a mean metric needs a positive sd, got {sd!r}")
        if relative and baseline == 0.0:
            raise ValueError("a relative mde needs a non-zero baseline mean")
        delta = abs(mde * baseline) if relative else abs(mde)
        n = 2.0 * (z_a + z_b) ** 2 * sd * sd / (delta * delta)
    else:
        raise ValueError(f"kind must be 'mean' or 'rate', got {kind!r}")
    # The 1e-9 keeps an n that is whole up to rounding (e.g. 63.00000000001) at 63.
    return max(2, math.ceil(n - 1e-9))
