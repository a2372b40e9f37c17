"""Observation primitives: mergeable quantile sketches and sliding time windows.

``DDSketch`` records latencies and rates within a relative error, merges exactly
across processes and hosts; ``Windowed`` keeps per-interval aggregates for the last
minute, five minutes or hour, with memory fixed at construction.
"""

from turnout.observe.sketch import SUM_RESOLUTION, DDSketch
from turnout.observe.windows import Aggregate, Windowed

__all__ = ["SUM_RESOLUTION", "Aggregate", "DDSketch", "Windowed"]
