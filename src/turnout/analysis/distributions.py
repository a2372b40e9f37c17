"""Tail probabilities (CDFs and survival functions) the A/B analyses need (pure).

turnout keeps scipy out of its runtime dependencies; these few functions cover the
normal, Student t and chi-square distributions.

* Normal: ``math.erfc``, which keeps full relative precision far into the tails
  (``1 - Phi(x)`` written as ``1 - 0.5 * erfc(-x / sqrt 2)`` would not).
* Student t: the regularised incomplete beta function of ``intervals.py``
  (``_t_upper_tail``, a Lentz continued fraction; for |t| < 1 its complement
  ``I_{t^2/(df+t^2)}(1/2, df/2)``, see ``_upper_tail``) up to ``_HILL_DF`` degrees of
  freedom. Beyond that it loses precision (``lgamma`` of a huge argument cancels
  against its neighbour, and ``df / (df + t^2)`` rounds next to 1: relative error
  4e-9 at df = 1e5, 1e-7 at 1e8, worse beyond), so there Hill's normalising
  transformation is used instead (G. W. Hill, "Algorithm 395: Student's
  t-distribution", CACM 13(10), 1970), whose relative error against 40-digit mpmath
  is below 1e-12 from df = 1e4 on. Welch tests on large arms land there.
* Chi-square: the regularised upper incomplete gamma function Q(df/2, x/2), by its
  power series below ``a + 1`` and by a modified-Lentz continued fraction above
  (Press et al., Numerical Recipes, 3rd ed., section 6.2). The continued fraction
  gives Q directly, so small tail probabilities keep their relative precision.
"""

from __future__ import annotations

import math

from turnout.analysis.intervals import _beta_inc, _t_upper_tail

__all__ = [
    "chi2_sf",
    "gamma_p",
    "gamma_q",
    "normal_cdf",
    "normal_pdf",
    "normal_sf",
    "normal_two_sided_p",
    "t_cdf",
    "t_sf",
    "t_two_sided_p",
]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = 1e-16
_TINY = 1e-300
_HILL_DF = 1e4


def normal_pdf(x: float) -> float:
    """The standard normal density at ``x``."""
    return math.exp(-0.5 * x * x - _LOG_SQRT2PI)


def normal_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z."""
    return 0.5 * math.erfc(x / _SQRT2)


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / _SQRT2)


def _check_df(df: float) -> None:
    if not df > 0.0:  # also rejects NaN
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")


def _hill_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0 and large df: Hill's (1970) transformation to a normal
    deviate, accurate to about 1e-12 relative from df = 1e4 on."""
    a = df - 0.5
    b = 48.0 * a * a
    y = a * math.log1p(t * t / df)
    z = ((((-0.4 * y - 3.3) * y - 24.0) * y - 85.5) / (0.8 * y * y + 100.0 + b) + y + 3.0) / b + 1.0
    return normal_sf(z * math.sqrt(y))


def _upper_tail(t: float, df: float) -> float:
    """P(T > |t|)."""
    t = abs(t)
    if math.isinf(df):
        return normal_sf(t)
    if math.isinf(t):
        return 0.0
    if df >= _HILL_DF:
        return _hill_upper_tail(t, df)
    if t < 1.0:
        # Near 0, df / (df + t^2) rounds next to 1 and ``_t_upper_tail`` loses digits
        # (4e-9 at t = 1e-4, df = 1e4); the complementary form takes t^2 / (df + t^2),
        # which is exact, and the tail is above 0.15 here so 0.5 - ... costs nothing.
        return 0.5 - 0.5 * _beta_inc(0.5, 0.5 * df, t * t / (df + t * t))
    return _t_upper_tail(t, df)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` > 0 degrees of freedom (``inf``: normal)."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    tail = _upper_tail(t, df)
    return tail if t >= 0.0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    tail = _upper_tail(t, df)
    return 1.0 - tail if t >= 0.0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|): the two-sided p-value of a t statistic."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    return min(1.0, 2.0 * _upper_tail(t, df))


def _gamma_series(a: float, x: float, log_front: float) -> float:
    """P(a, x) by its power series; converges quickly for x < a + 1."""
    ap = a
    term = total = 1.0 / a
    # The terms shrink once ap > x; a few times sqrt(a) more of them reach 1e-16.
    for _ in range(10_000 + int(20.0 * math.sqrt(a))):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(log_front)


def _gamma_continued_fraction(a: float, x: float, log_front: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz); converges for x > a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10_000 + int(20.0 * math.sqrt(a))):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(log_front) * h


def _check_gamma_args(a: float, x: float) -> None:
    if not a > 0.0:
        raise ValueError(f"shape a must be positive, got {a!r}")
    if not x >= 0.0:
        raise ValueError(f"x must be non-negative, got {x!r}")


def _log_front(a: float, x: float) -> float:
    return a * math.log(x) - x - math.lgamma(a)


def gamma_p(a: float, x: float) -> float:
    """The regularised lower incomplete gamma function P(a, x), a > 0, x >= 0."""
    _check_gamma_args(a, x)
    if x == 0.0:
        return 0.0
    if math.isinf(x):
        return 1.0
    if x < a + 1.0:
        return min(1.0, _gamma_series(a, x, _log_front(a, x)))
    return max(0.0, 1.0 - _gamma_continued_fraction(a, x, _log_front(a, x)))


def gamma_q(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x) = 1 - P(a, x)."""
    _check_gamma_args(a, x)
    if x == 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_series(a, x, _log_front(a, x)))
    return min(1.0, _gamma_continued_fraction(a, x, _log_front(a, x)))


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square X with ``df`` > 0 degrees of freedom."""
    _check_df(df)
    if math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 1.0
    return gamma_q(0.5 * df, 0.5 * x)
