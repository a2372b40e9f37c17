"""The Bayesian view of an A/B comparison: how likely the treatment is better, and
what choosing either arm costs if that choice is wrong (pure).

Two numbers per metric, which non-statisticians read without misreading:
``prob_treatment_better = P(treatment > control | data)`` and the expected loss of
each choice, ``E[max(0, control - treatment)]`` for choosing the treatment and
``E[max(0, treatment - control)]`` for keeping the control (Stucchio, "Bayesian A/B
Testing at VWO", 2015): ship when the loss of shipping is below what you would not
care to lose. Both are stated for "higher is better"; for a metric where lower is
better, read them the other way round. They are not corrected for peeking or for
many metrics; the always-valid decision lives in ``sequential.py``.

Rates: Beta-Binomial. With a Beta(prior_alpha, prior_beta) prior (uniform Beta(1, 1)
by default) each arm's posterior is Beta(prior_alpha + hits, prior_beta + misses),
and ``P(X2 > X1)`` for two Beta variables is Evan Miller's exact finite sum
("Formulas for Bayesian A/B Testing"),

    sum_{i=0}^{a2-1} B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1)),

which needs ``a2`` to be a whole number. By the symmetries ``P(X2 > X1) = 1 -
P(X1 > X2)`` and ``X -> 1 - X`` the sum can run over any one of the four parameters,
so the shortest whole one is used: the cost is about a microsecond per term, with
terms = the fewest hits or misses in any arm (plus the prior). Terms are computed
with ``lgamma`` and added with ``fsum``; at counts of 1e5 the relative error is about
1e-10, from ``lgamma``'s absolute error at large arguments. The sum needs whole
posterior parameters, so at least one of ``prior_alpha``, ``prior_beta`` must be a
whole number (Jeffreys' Beta(1/2, 1/2) is not supported; at A/B sample sizes the
prior hardly matters). Expected losses use the size-biased identity
``E[X1 1{X1 > X2}] = E[X1] P(X1' > X2)`` with ``X1' ~ Beta(a1 + 1, b1)``, so they are
exact too.

Means: a flat prior and the normal approximation to the posterior of each mean
(sample variance plugged in), so the difference D is N(d, se^2) with
``se^2 = var_c / n_c + var_t / n_t``; then ``P(D > 0) = Phi(d / se)`` and
``E[max(0, -D)] = se phi(d / se) - d Phi(-d / se)``. The exact posterior with
unknown variance is a t (Behrens-Fisher), within a few per cent of this from about
30 observations per arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from turnout.analysis.distributions import normal_cdf, normal_pdf
from turnout.analysis.fixed import MeanStats

__all__ = ["BayesResult", "bayes_means", "bayes_rates", "prob_beta_greater"]


@dataclass(frozen=True, slots=True)
class BayesResult:
    """Posterior summaries of treatment against control."""

    control: float  # posterior mean of the control rate, or the control sample mean
    treatment: float
    difference: float  # posterior mean of treatment - control
    prob_treatment_better: float  # P(treatment > control | data)
    expected_loss_treatment: float  # E[max(0, control - treatment)]: cost of shipping
    expected_loss_control: float  # E[max(0, treatment - control)]: cost of keeping


def _is_whole(x: float) -> bool:
    return x == math.floor(x)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _miller_sum(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2); ``a2`` whole."""
    const = math.lgamma(b1 + b2) - math.lgamma(b2) - _lbeta(a1, b1)
    s = a1 + b1 + b2
    terms = [
        math.exp(
            const
            + math.lgamma(a1 + i)
            - math.lgamma(s + i)
            - math.log(b2 + i)
            - math.lgamma(1.0 + i)
            + math.lgamma(b2 + 1.0 + i)
        )
        for i in range(int(a2))
    ]
    return math.fsum(terms)


def prob_beta_greater(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) for independent X1 ~ Beta(a1, b1) and X2 ~ Beta(a2, b2), exactly;
    at least one parameter must be a whole number."""
    for name, v in (("a1", a1), ("b1", b1), ("a2", a2), ("b2", b2)):
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"Beta parameter {name} must be positive and finite, got {v!r}")
    # The four equivalent sums, each over one parameter: (terms, direct?, arguments).
    # Y = 1 - X turns X2 > X1 into Y1 > Y2 with Y ~ Beta(b, a).
    forms = [
        (a2, True, (a1, b1, a2, b2)),  # P(X2 > X1)
        (a1, False, (a2, b2, a1, b1)),  # 1 - P(X1 > X2)
        (b1, True, (b2, a2, b1, a1)),  # P(Y1 > Y2)
        (b2, False, (b1, a1, b2, a2)),  # 1 - P(Y2 > Y1)
    ]
    whole = [f for f in forms if _is_whole(f[0])]
    if not whole:
        raise ValueError(
            "the exact Beta comparison needs a whole-number parameter; use a prior with "
            f"a whole prior_alpha or prior_beta (got {a1!r}, {b1!r}, {a2!r}, {b2!r})"
        )
    # Fewest terms first; on a tie the direct sum, which keeps small results precise.
    _, direct, args = min(whole, key=lambda f: (f[0], not f[1]))
    p = _miller_sum(*args)
    return min(1.0, max(0.0, p if direct else 1.0 - p))


def _check_counts(hits: int, n: int, side: str) -> None:
    if isinstance(hits, bool) or isinstance(n, bool):
        raise ValueError(f"{side} counts must be ints")
    if n < 0 or not 0 <= hits <= n:
        raise ValueError(f"{side}: need 0 <= hits <= n, got {hits!r} of {n!r}")


def bayes_rates(
    control_hits: int,
    control_n: int,
    treatment_hits: int,
    treatment_n: int,
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
) -> BayesResult:
    """Beta-Binomial comparison of two rates (``hits`` out of ``n`` per arm)."""
    _check_counts(control_hits, control_n, "control")
    _check_counts(treatment_hits, treatment_n, "treatment")
    for name, v in (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)):
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"{name} must be positive and finite, got {v!r}")
    if not (_is_whole(prior_alpha) or _is_whole(prior_beta)):
        raise ValueError(
            f"prior_alpha or prior_beta must be a whole number for the exact sum, got "
            f"{prior_alpha!r}, {prior_beta!r}"
        )
    ac, bc = prior_alpha + control_hits, prior_beta + control_n - control_hits
    at, bt = prior_alpha + treatment_hits, prior_beta + treatment_n - treatment_hits
    mean_c, mean_t = ac / (ac + bc), at / (at + bt)

    p_better = prob_beta_greater(ac, bc, at, bt)
    # E[max(0, C - T)] = E[C 1{C > T}] - E[T 1{C > T}], each by size-biasing.
    loss_t = mean_c * prob_beta_greater(at, bt, ac + 1.0, bc) - mean_t * prob_beta_greater(
        at + 1.0, bt, ac, bc
    )
    loss_t = max(0.0, loss_t)
    # max(0, T - C) - max(0, C - T) = T - C.
    loss_c = max(0.0, loss_t + (mean_t - mean_c))
    return BayesResult(
        control=mean_c,
        treatment=mean_t,
        difference=mean_t - mean_c,
        prob_treatment_better=p_better,
        expected_loss_treatment=loss_t,
        expected_loss_control=loss_c,
    )


def bayes_means(control: MeanStats, treatment: MeanStats) -> BayesResult:
    """Normal-approximation comparison of two means (n >= 2 per arm, flat prior)."""
    for side, arm in (("control", control), ("treatment", treatment)):
        if arm.n < 2:
            raise ValueError(f"need n >= 2 in each arm for a variance, {side} has {arm.n}")
    mc, mt = control.mean, treatment.mean
    d = mt - mc
    se = math.sqrt(control.variance / control.n + treatment.variance / treatment.n)
    if se == 0.0:
        # No spread: the difference is known exactly.
        p = 1.0 if d > 0.0 else (0.0 if d < 0.0 else 0.5)
        loss_t, loss_c = max(0.0, -d), max(0.0, d)
    else:
        z = d / se
        p = normal_cdf(z)
        density = se * normal_pdf(z)
        loss_t = max(0.0, density - d * normal_cdf(-z))
        loss_c = max(0.0, density + d * p)
    return BayesResult(
        control=mc,
        treatment=mt,
        difference=d,
        prob_treatment_better=p,
        expected_loss_treatment=loss_t,
        expected_loss_control=loss_c,
    )
