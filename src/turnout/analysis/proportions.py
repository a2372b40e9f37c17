"""Comparing two rates (hits out of n): difference, ratio, and a z test (pure).

Used by the canary judge (error rates, feedback events) and by A/B analysis.

* The interval on the difference ``treatment - control`` is Newcombe's hybrid score
  interval (Newcombe 1998, method 10), built from the two Wilson intervals. Unlike the
  Wald interval it stays inside [-1, 1] and does not collapse to a point at 0 or n hits,
  which is where canaries live (0 errors out of a few hundred requests).
* The interval on the relative change ``treatment / control - 1`` is Katz's log
  risk-ratio interval. When any cell of the 2x2 table is 0 (no hits, or nothing but
  hits, on either side), 0.5 is added to every cell first (hits + 0.5, n + 1), so the
  log stays finite. The interval is then widened, if need be, to contain the point
  estimate taken from the raw counts: with 0 control hits and some treatment hits the
  estimate is ``inf`` and so is ``relative_high`` -- a ratio over zero is unbounded.
* ``relative``: ``0.0`` when both rates are 0 (no change), ``inf`` when only the
  control rate is 0. It is never nan.
* ``z`` is the pooled two-proportion z statistic and ``p_value`` its two-sided normal
  p-value; the same test as a 2x2 chi-square without Yates' correction. When the
  pooled rate is 0 or 1 the two samples are identical and ``z`` is 0, ``p_value`` 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from turnout.analysis.intervals import normal_quantile, wilson_interval

__all__ = ["ProportionComparison", "compare_proportions", "two_sided_p"]

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class ProportionComparison:
    control_rate: float
    treatment_rate: float
    difference: float
    low: float
    high: float
    relative: float
    relative_low: float
    relative_high: float
    z: float
    p_value: float


def two_sided_p(z: float) -> float:
    """Two-sided normal p-value; ``erfc`` keeps precision far in the tails."""
    return min(1.0, math.erfc(abs(z) / _SQRT2))


def _check(hits: int, n: int, side: str) -> None:
    if n <= 0:
        raise ValueError(f"{side}_n must be positive, got {n!r}")
    if not 0 <= hits <= n:
        raise ValueError(f"{side}_hits must be between 0 and {side}_n={n}, got {hits!r}")


def _relative_interval(
    control_hits: int, control_n: int, treatment_hits: int, treatment_n: int, z: float
) -> tuple[float, float]:
    a, n1 = float(control_hits), float(control_n)
    c, n2 = float(treatment_hits), float(treatment_n)
    if 0.0 in (a, c, n1 - a, n2 - c):
        a, c, n1, n2 = a + 0.5, c + 0.5, n1 + 1.0, n2 + 1.0
    log_rr = math.log((c / n2) / (a / n1))
    # max(): 1/a - 1/n is exactly 0 when a == n, but rounding can make it -1e-17.
    se = math.sqrt(max(0.0, 1.0 / a - 1.0 / n1 + 1.0 / c - 1.0 / n2))
    return (math.expm1(log_rr - z * se), math.expm1(log_rr + z * se))


def _relative_change(control_rate: float, treatment_rate: float) -> float:
    if control_rate == 0.0:
        return 0.0 if treatment_rate == 0.0 else math.inf
    return treatment_rate / control_rate - 1.0


def compare_proportions(
    control_hits: int,
    control_n: int,
    treatment_hits: int,
    treatment_n: int,
    alpha: float = 0.05,
) -> ProportionComparison:
    """Compare ``treatment_hits / treatment_n`` with ``control_hits / control_n``."""
    _check(control_hits, control_n, "control")
    _check(treatment_hits, treatment_n, "treatment")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    confidence = 1.0 - alpha
    z_crit = normal_quantile(1.0 - 0.5 * alpha)

    p1 = control_hits / control_n
    p2 = treatment_hits / treatment_n
    diff = p2 - p1
    l1, u1 = wilson_interval(control_hits, control_n, confidence)
    l2, u2 = wilson_interval(treatment_hits, treatment_n, confidence)
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    low, high = max(-1.0, min(low, diff)), min(1.0, max(high, diff))

    relative = _relative_change(p1, p2)
    rel_low, rel_high = _relative_interval(
        control_hits, control_n, treatment_hits, treatment_n, z_crit
    )
    rel_low, rel_high = min(rel_low, relative), max(rel_high, relative)

    pooled = (control_hits + treatment_hits) / (control_n + treatment_n)
    variance = pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / treatment_n)
    z = diff / math.sqrt(variance) if variance > 0.0 else 0.0
    return ProportionComparison(
        control_rate=p1,
        treatment_rate=p2,
        difference=diff,
        low=low,
        high=high,
        relative=relative,
        relative_low=rel_low,
        relative_high=rel_high,
        z=z,
        p_value=two_sided_p(z),
    )
