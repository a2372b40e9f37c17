"""Sample ratio mismatch (SRM): do the assignment counts fit the configured split?

An experiment whose arms received traffic in proportions other than the configured
weights has a broken assignment or logging path (a variant that errors before it is
logged, a cache in front of one arm, bot filtering that hits one arm harder, ...),
and its metric comparisons are not to be trusted whatever they say. The check is
Pearson's chi-square goodness-of-fit test of the observed counts against the counts
the weights predict (Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online
Controlled Experiments", KDD 2019). The default threshold is p < 0.001, not 0.05:
the check runs on every experiment and every report, and a false alarm halts a
sound experiment, while real SRMs are usually gross and give far smaller p-values.

Weights need not sum to 1; they are normalised. An arm with weight 0 (configured
off) or one missing from ``weights`` (traffic to an arm nobody configured) should
see no traffic at all: if it has any, the observation is impossible under the
configuration, and the result is ``chi2 = inf``, ``p = 0``, mismatch. Such arms are
left out of the chi-square sum and its degrees of freedom otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from turnout.analysis.distributions import chi2_sf

__all__ = ["ArmShare", "SrmResult", "sample_ratio_mismatch"]


@dataclass(frozen=True, slots=True)
class ArmShare:
    """One arm: its count and share of the traffic, against what the weights expect."""

    arm: str
    observed: int
    expected: float  # the count the weights predict for this total
    observed_share: float  # of all observed assignments; 0 when there are none
    expected_share: float  # the normalised weight


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Chi-square goodness-of-fit of assignment counts against configured weights."""

    chi2: float
    df: int  # arms with a positive weight, minus one
    p_value: float
    threshold: float
    mismatch: bool  # p_value < threshold
    total: int
    arms: tuple[ArmShare, ...]  # configured arms in the order given, then unknown ones
    unexpected_arms: tuple[str, ...]  # weight 0 or unconfigured, yet with traffic

    @property
    def expected(self) -> dict[str, float]:
        """Expected count per arm."""
        return {a.arm: a.expected for a in self.arms}


def _check_inputs(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float
) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
    for arm, count in observed.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"observed count for arm {arm!r} must be an int, got {count!r}")
        if count < 0:
            raise ValueError(f"observed count for arm {arm!r} is negative: {count}")
    for arm, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight for arm {arm!r} must be finite and >= 0, got {weight!r}")
    if not any(w > 0.0 for w in weights.values()):
        raise ValueError("at least one arm needs a positive weight")


def sample_ratio_mismatch(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = 0.001
) -> SrmResult:
    """Test the assignment counts ``observed`` against the split ``weights``.

    Arms in ``weights`` missing from ``observed`` count as 0 assignments. With no
    assignments at all there is nothing to test: ``p = 1``, no mismatch.
    """
    _check_inputs(observed, weights, threshold)
    weight_sum = math.fsum(weights.values())
    total = sum(observed.values())
    arm_names = list(weights) + [a for a in observed if a not in weights]

    chi2 = 0.0
    positive = 0
    unexpected: list[str] = []
    arms: list[ArmShare] = []
    for arm in arm_names:
        count = observed.get(arm, 0)
        share = weights.get(arm, 0.0) / weight_sum
        expected = total * share
        if share > 0.0:
            positive += 1
            if expected > 0.0:
                chi2 += (count - expected) ** 2 / expected
        elif count > 0:
            unexpected.append(arm)
        observed_share = count / total if total else 0.0
        arms.append(ArmShare(arm, count, expected, observed_share, share))

    df = positive - 1
    if unexpected:
        chi2, p_value = math.inf, 0.0
    elif total == 0 or df == 0:
        # No data, or one arm gets everything: the counts cannot disagree with it.
        p_value = 1.0
    else:
        p_value = chi2_sf(chi2, df)
    return SrmResult(
        chi2=chi2,
        df=df,
        p_value=p_value,
        threshold=threshold,
        mismatch=p_value < threshold,
        total=total,
        arms=tuple(arms),
        unexpected_arms=tuple(unexpected),
    )
