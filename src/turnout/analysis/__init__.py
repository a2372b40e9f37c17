"""Statistics for judging variants: confidence intervals and their quantiles (pure)."""

from turnout.analysis.intervals import (
    mean_interval,
    normal_quantile,
    t_quantile,
    wilson_interval,
)

__all__ = ["mean_interval", "normal_quantile", "t_quantile", "wilson_interval"]
