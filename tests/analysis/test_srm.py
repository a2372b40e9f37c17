"""Sample ratio mismatch: scipy's chi-square test, skewed and sound splits, calibration."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from turnout.analysis.srm import sample_ratio_mismatch


def test_matches_scipy_chisquare_on_random_inputs() -> None:
    rng = random.Random(20240611)
    for _ in range(300):
        k = rng.randint(2, 6)
        arms = [f"arm{i}" for i in range(k)]
        weights = {a: rng.uniform(0.05, 5.0) for a in arms}
        observed = {a: rng.randint(0, 5_000) for a in arms}
        total = sum(observed.values())
        if total == 0:
            continue
        wsum = sum(weights.values())
        expected = [total * weights[a] / wsum for a in arms]
        ref = stats.chisquare([observed[a] for a in arms], expected)
        res = sample_ratio_mismatch(observed, weights)
        assert res.df == k - 1
        assert res.chi2 == pytest.approx(ref.statistic, rel=1e-9)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        for share, exp in zip(res.arms, expected, strict=True):
            assert share.expected == pytest.approx(exp, rel=1e-12)


def test_a_skewed_split_is_flagged() -> None:
    # 50/50 configured, 5000 vs 5400 observed: chi2 = 2 * 200^2 / 5200 = 15.38.
    res = sample_ratio_mismatch({"a": 5_000, "b": 5_400}, {"a": 1, "b": 1})
    assert res.chi2 == pytest.approx(2 * 200**2 / 5_200)
    assert res.p_value == pytest.approx(8.77e-5, rel=1e-2)
    assert res.mismatch
    # 5000 vs 5300 gives p = 0.0031: flagged at 0.01, not at the default 0.001.
    milder = sample_ratio_mismatch({"a": 5_000, "b": 5_300}, {"a": 1, "b": 1})
    assert milder.p_value == pytest.approx(0.00312, rel=1e-2)
    assert not milder.mismatch
    assert sample_ratio_mismatch({"a": 5_000, "b": 5_300}, {"a": 1, "b": 1}, 0.01).mismatch


def test_a_sound_split_is_not_flagged() -> None:
    res = sample_ratio_mismatch({"a": 5_040, "b": 4_960}, {"a": 0.5, "b": 0.5})
    assert res.p_value == pytest.approx(0.423, abs=1e-3)
    assert not res.mismatch


def test_false_alarm_rate_is_about_the_threshold() -> None:
    # 20,000 seeded multinomial draws of 10,000 assignments on a sound 50/30/20 split.
    # At threshold 0.05 expect 1,000 alarms (sd 31; allow +/- 4 sd); at the default
    # 0.001 expect 20 (sd 4.5; allow 5..40). The seed gives 952 and 18.
    weights = {"a": 5.0, "b": 3.0, "c": 2.0}
    probs = [w / 10 for w in weights.values()]
    draws = np.random.default_rng(7).multinomial(10_000, probs, size=20_000)
    p_values = [
        sample_ratio_mismatch(dict(zip(weights, map(int, row), strict=True)), weights).p_value
        for row in draws
    ]
    at_05 = sum(p < 0.05 for p in p_values)
    at_001 = sum(p < 0.001 for p in p_values)
    assert 877 <= at_05 <= 1_123, at_05
    assert 5 <= at_001 <= 40, at_001


def test_weights_are_normalised() -> None:
    observed = {"a": 900, "b": 2_100}
    raw = sample_ratio_mismatch(observed, {"a": 30, "b": 70})
    normal = sample_ratio_mismatch(observed, {"a": 0.3, "b": 0.7})
    assert raw.chi2 == pytest.approx(normal.chi2, rel=1e-12)
    assert raw.expected == pytest.approx({"a": 900.0, "b": 2_100.0})
    assert raw.chi2 == pytest.approx(0.0, abs=1e-20)
    a = raw.arms[0]
    assert (a.arm, a.observed, a.expected_share, a.observed_share) == ("a", 900, 0.3, 0.3)


def test_arm_with_weight_zero_and_no_traffic_is_left_out() -> None:
    res = sample_ratio_mismatch({"a": 500, "b": 520, "off": 0}, {"a": 1, "b": 1, "off": 0})
    ref = stats.chisquare([500, 520])
    assert res.df == 1
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert not res.mismatch
    assert res.unexpected_arms == ()


def test_traffic_to_an_arm_with_weight_zero_is_a_mismatch() -> None:
    res = sample_ratio_mismatch({"a": 500, "b": 500, "off": 1}, {"a": 1, "b": 1, "off": 0})
    assert res.mismatch
    assert res.p_value == 0.0
    assert math.isinf(res.chi2)
    assert res.unexpected_arms == ("off",)


def test_traffic_to_an_unconfigured_arm_is_a_mismatch() -> None:
    res = sample_ratio_mismatch({"a": 500, "b": 500, "ghost": 3}, {"a": 1, "b": 1})
    assert res.mismatch
    assert res.unexpected_arms == ("ghost",)
    assert [s.arm for s in res.arms] == ["a", "b", "ghost"]
    assert res.arms[2].expected == 0.0
    assert res.arms[2].observed_share == pytest.approx(3 / 1_003)


def test_missing_observed_arm_counts_as_zero() -> None:
    res = sample_ratio_mismatch({"a": 100}, {"a": 1, "b": 1})
    assert res.expected == {"a": 50.0, "b": 50.0}
    assert res.mismatch
    assert res.p_value == pytest.approx(stats.chisquare([100, 0]).pvalue, rel=1e-9)


def test_no_traffic_or_a_single_arm_cannot_mismatch() -> None:
    empty = sample_ratio_mismatch({}, {"a": 1, "b": 1})
    assert (empty.p_value, empty.mismatch, empty.total) == (1.0, False, 0)
    assert all(s.observed_share == 0.0 for s in empty.arms)
    single = sample_ratio_mismatch({"a": 10}, {"a": 1, "b": 0})
    assert (single.df, single.p_value, single.mismatch) == (0, 1.0, False)


@pytest.mark.parametrize(
    ("observed", "weights", "threshold", "message"),
    [
        ({"a": -1}, {"a": 1}, 0.001, "negative"),
        ({"a": 1.5}, {"a": 1}, 0.001, "must be an int"),
        ({"a": True}, {"a": 1}, 0.001, "must be an int"),
        ({"a": 1}, {"a": -1}, 0.001, "finite and >= 0"),
        ({"a": 1}, {"a": math.nan}, 0.001, "finite and >= 0"),
        ({"a": 1}, {"a": 0, "b": 0}, 0.001, "positive weight"),
        ({"a": 1}, {}, 0.001, "positive weight"),
        ({"a": 1}, {"a": 1}, 0.0, "threshold"),
        ({"a": 1}, {"a": 1}, 1.0, "threshold"),
    ],
)
def test_bad_input_is_rejected(
    observed: dict[str, int], weights: dict[str, float], threshold: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sample_ratio_mismatch(observed, weights, threshold)
