"""Normal, t and chi-square tails: scipy over a grid, closed forms, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from turnout.analysis.distributions import (
    chi2_sf,
    gamma_p,
    gamma_q,
    normal_cdf,
    normal_pdf,
    normal_sf,
    normal_two_sided_p,
    t_cdf,
    t_sf,
    t_two_sided_p,
)

T_DFS = [0.5, 1, 2, 3, 5.5, 10, 30, 100, 1_000, 9_999, 10_000, 1e5, 1e6, 1e8, 1e12]
T_VALUES = [0.0, 1e-4, 0.01, 0.5, 1.0, 1.7, 1.96, 2.5, 3.0, 5.0, 8.0, 12.0, 20.0, 35.0]
CHI2_DFS = [0.5, 1, 2, 3, 4, 5, 7, 10, 20, 50, 100, 1_000]
CHI2_X = [1e-8, 1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 500.0, 1_500.0]

dfs = st.floats(min_value=0.1, max_value=1e7)
reals = st.floats(min_value=-50.0, max_value=50.0)


# -- normal ---------------------------------------------------------------------------


@pytest.mark.parametrize("x", [-37.0, -10.0, -3.0, -1.0, -0.1, 0.0, 0.3, 1.0, 2.5, 8.0, 37.0])
def test_normal_matches_scipy(x: float) -> None:
    assert normal_cdf(x) == pytest.approx(stats.norm.cdf(x), rel=1e-13)
    assert normal_sf(x) == pytest.approx(stats.norm.sf(x), rel=1e-13)
    assert normal_pdf(x) == pytest.approx(stats.norm.pdf(x), rel=1e-13)
    assert normal_two_sided_p(x) == pytest.approx(2 * stats.norm.sf(abs(x)), rel=1e-13)


@given(reals)
def test_normal_cdf_and_sf_add_to_one(x: float) -> None:
    assert normal_cdf(x) + normal_sf(x) == pytest.approx(1.0, abs=1e-15)
    assert normal_sf(x) == pytest.approx(normal_cdf(-x), rel=1e-15, abs=1e-300)


# -- Student t ------------------------------------------------------------------------


@pytest.mark.parametrize("df", T_DFS)
def test_t_matches_scipy_over_a_grid(df: float) -> None:
    for t in T_VALUES:
        ref = stats.t.sf(t, df)
        if ref < 1e-300:
            continue
        assert t_sf(t, df) == pytest.approx(ref, rel=1e-9), t
        assert t_cdf(-t, df) == pytest.approx(ref, rel=1e-9), t
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-11), t
        assert t_two_sided_p(-t, df) == pytest.approx(min(1.0, 2 * ref), rel=1e-9), t


def test_t_on_either_side_of_the_large_df_switch_agrees() -> None:
    # Below 1e4 the incomplete beta function, from 1e4 on Hill's transformation.
    for t in T_VALUES[1:]:
        below, above = t_sf(t, 9_999.999), t_sf(t, 10_000.0)
        assert below == pytest.approx(above, rel=1e-6), t


def test_t_with_infinite_df_is_normal() -> None:
    assert t_sf(1.5, math.inf) == normal_sf(1.5)
    assert t_two_sided_p(2.0, math.inf) == pytest.approx(normal_two_sided_p(2.0), rel=1e-15)


@given(st.floats(min_value=-1e6, max_value=1e6))
def test_t_with_one_df_is_cauchy(t: float) -> None:
    assert t_cdf(t, 1.0) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-10, abs=1e-15)


@given(st.floats(min_value=-1e4, max_value=1e4))
def test_t_with_two_df_has_its_closed_form(t: float) -> None:
    assert t_cdf(t, 2.0) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-10)


@given(reals, dfs)
def test_t_tails_are_consistent(t: float, df: float) -> None:
    sf, cdf = t_sf(t, df), t_cdf(t, df)
    assert 0.0 <= sf <= 1.0
    assert sf + cdf == pytest.approx(1.0, abs=1e-12)
    assert t_sf(-t, df) == pytest.approx(cdf, rel=1e-12, abs=1e-300)
    assert 0.0 <= t_two_sided_p(t, df) <= 1.0


@given(st.floats(min_value=0.0, max_value=30.0), dfs)
def test_t_tail_is_heavier_than_normal_and_falls_with_t(t: float, df: float) -> None:
    assert t_sf(t, df) >= normal_sf(t) * (1 - 1e-9)
    assert t_sf(t + 0.1, df) <= t_sf(t, df)


def test_t_infinite_and_nan_arguments() -> None:
    assert t_sf(math.inf, 5.0) == 0.0
    assert t_cdf(-math.inf, 5.0) == 0.0
    assert t_two_sided_p(math.inf, 5.0) == 0.0
    assert math.isnan(t_sf(math.nan, 5.0))
    assert math.isnan(t_cdf(math.nan, 5.0))
    assert math.isnan(t_two_sided_p(math.nan, 5.0))


@pytest.mark.parametrize("df", [0.0, -1.0, math.nan])
def test_t_rejects_bad_df(df: float) -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_sf(1.0, df)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_two_sided_p(1.0, df)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, df)


# -- chi-square and the incomplete gamma function -------------------------------------


@pytest.mark.parametrize("df", CHI2_DFS)
def test_chi2_matches_scipy_over_a_grid(df: float) -> None:
    points = [*CHI2_X, df - 1, df, df + 1, df + 10 * math.sqrt(df)]
    for x in points:
        if x <= 0:
            continue
        ref = stats.chi2.sf(x, df)
        if ref < 1e-300:
            continue
        assert chi2_sf(x, df) == pytest.approx(ref, rel=1e-10), x


@given(st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=0.0, max_value=2e3))
def test_incomplete_gamma_halves_add_to_one(a: float, x: float) -> None:
    p, q = gamma_p(a, x), gamma_q(a, x)
    assert 0.0 <= p <= 1.0
    assert 0.0 <= q <= 1.0
    assert p + q == pytest.approx(1.0, abs=1e-12)


@given(st.floats(min_value=0.0, max_value=1400.0))
def test_chi2_with_two_df_is_exponential(x: float) -> None:
    assert chi2_sf(x, 2.0) == pytest.approx(math.exp(-x / 2), rel=1e-12, abs=1e-300)


@given(st.floats(min_value=-37.0, max_value=37.0))
def test_chi2_with_one_df_is_a_squared_normal(z: float) -> None:
    assert chi2_sf(z * z, 1.0) == pytest.approx(normal_two_sided_p(z), rel=1e-11, abs=1e-300)


@given(st.floats(min_value=0.0, max_value=500.0), st.floats(min_value=0.1, max_value=300.0))
def test_chi2_sf_falls_with_x(x: float, df: float) -> None:
    assert chi2_sf(x + 1.0, df) <= chi2_sf(x, df)


def test_chi2_edges() -> None:
    assert chi2_sf(0.0, 3.0) == 1.0
    assert chi2_sf(-1.0, 3.0) == 1.0
    assert chi2_sf(math.inf, 3.0) == 0.0
    assert math.isnan(chi2_sf(math.nan, 3.0))
    assert gamma_p(2.0, 0.0) == 0.0
    assert gamma_q(2.0, math.inf) == 0.0


def test_chi2_and_gamma_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_sf(1.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        gamma_q(-1.0, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        gamma_p(1.0, -1.0)
