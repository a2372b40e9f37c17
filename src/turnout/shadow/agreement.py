"""Agreement: how mirroring to one shadow went and how well it agrees (pure).

One ``Tally`` per (route, shadow) pair and process counts what happened to mirrored
requests (selected, dropped, sent, failed) and, for every pair that was evaluated,
each evaluator's scores. Like feedback summaries, scores are kept as sufficient
statistics (count, sum, sum of squares, whether every value was 0 or 1) rather than
as samples, so the tallies of several processes merge exactly -- counts and sums
add -- and the process only ever holds a few numbers per evaluator.

An evaluator whose values are all 0/1 (``exact``, ``json_valid``) reads as a rate
with a Wilson interval; any other as a mean with a Student-t interval. The tallies
are cumulative: a window is the difference of two snapshots, taken by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from turnout.analysis.intervals import mean_interval, wilson_interval

__all__ = ["COUNTERS", "ScoreStats", "Tally", "disagrees"]

# Tally's counters, in the order they are shown.
COUNTERS = (
    "selected",
    "dropped",
    "sent",
    "failed",
    "pairs",
    "abandoned",
    "disagreements",
    "samples_kept",
    "samples_dropped",
)


def _count_field(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _sum_field(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


@dataclass(slots=True)
class ScoreStats:
    """One evaluator's scores, as sufficient statistics."""

    count: int = 0  # scored pairs (value not None)
    total: float = 0.0
    total_sq: float = 0.0
    binary: bool = True  # every value so far was 0.0 or 1.0
    not_applicable: int = 0  # pairs where the evaluator returned None

    def add(self, value: float | None) -> None:
        """Count one score. A value that is not finite, or whose square is not, counts
        as not applicable: one such value would poison the mean for good."""
        if value is None:
            self.not_applicable += 1
            return
        value = float(value)
        square = value * value
        if not math.isfinite(square):
            self.not_applicable += 1
            return
        self.count += 1
        self.total += value
        self.total_sq += square
        self.binary = self.binary and value in (0.0, 1.0)

    def merge(self, other: ScoreStats, /) -> None:
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.binary = self.binary and other.binary
        self.not_applicable += other.not_applicable

    def view(self) -> dict[str, Any]:
        """Mean and 95% interval, JSON-able. ``ci95`` is None while nothing is known:
        no scores, or a single score that is not 0/1 (a t interval needs a spread)."""
        is_rate = self.binary and self.count > 0
        mean = self.total / self.count if self.count else None
        ci: tuple[float, float] | None = None
        if is_rate:
            # Binary sums are whole numbers; clamping only guards merged-in nonsense.
            ci = wilson_interval(min(max(self.total, 0.0), self.count), self.count)
        elif self.count >= 2:
            ci = mean_interval(self.count, self.total, self.total_sq)
        return {
            "count": self.count,
            "mean": mean,
            "ci95": list(ci) if ci is not None else None,
            "is_rate": is_rate,
            "not_applicable": self.not_applicable,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": self.total,
            "total_sq": self.total_sq,
            "binary": self.binary,
            "not_applicable": self.not_applicable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "score stats") -> ScoreStats:
        """Inverse of ``to_dict``; missing keys read as an empty tally, values of the
        wrong type raise ValueError naming the field."""
        binary = data.get("binary", True)
        if not isinstance(binary, bool):
            raise ValueError(f"{where}: field 'binary' must be a bool, got {binary!r}")
        return cls(
            count=_count_field(data, "count", where),
            total=_sum_field(data, "total", where),
            total_sq=_sum_field(data, "total_sq", where),
            binary=binary,
            not_applicable=_count_field(data, "not_applicable", where),
        )


@dataclass(slots=True)
class Tally:
    """Cumulative counters of one (route, shadow) pair in one process."""

    selected: int = 0  # requests chosen for mirroring
    dropped: int = 0  # chosen but dropped: the shadow's queue was full
    sent: int = 0  # shadow calls made
    failed: int = 0  # shadow calls that failed (any error class)
    pairs: int = 0  # live and shadow answers both known and evaluated
    abandoned: int = 0  # not compared: the live client left before the end of its answer
    disagreements: int = 0
    samples_kept: int = 0  # disagreeing pairs handed to the sample store
    samples_dropped: int = 0  # disagreeing pairs not stored (queue full, redaction failed)
    scores: dict[str, ScoreStats] = field(default_factory=dict)

    def record_pair(self, scores: Iterable[tuple[str, float | None]], disagree: bool) -> None:
        """Count one evaluated pair: each (evaluator name, value) and whether it disagreed."""
        self.pairs += 1
        for name, value in scores:
            stats = self.scores.get(name)
            if stats is None:
                stats = self.scores[name] = ScoreStats()
            stats.add(value)
        if disagree:
            self.disagreements += 1

    def merge(self, other: Tally, /) -> None:
        for key in COUNTERS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        for name, theirs in other.scores.items():
            # A fresh copy: the merged tally must not share (and later mutate) theirs.
            self.scores.setdefault(name, ScoreStats()).merge(theirs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for sending between processes; ``from_dict`` reads it back."""
        out: dict[str, Any] = {key: getattr(self, key) for key in COUNTERS}
        out["scores"] = {name: stats.to_dict() for name, stats in self.scores.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        """Inverse of ``to_dict``. Missing keys read as zeros and unknown keys are
        ignored, so processes of neighbouring versions still merge; values of the
        wrong type raise ValueError naming the field."""
        tally = cls()
        for key in COUNTERS:
            setattr(tally, key, _count_field(data, key, "tally"))
        scores = data.get("scores", {})
        if not isinstance(scores, Mapping):
            raise ValueError(f"tally: field 'scores' must be a mapping, got {scores!r}")
        for name, stats in scores.items():
            if not isinstance(name, str) or not isinstance(stats, Mapping):
                raise ValueError(f"tally: field 'scores': bad entry {name!r}: {stats!r}")
            tally.scores[name] = ScoreStats.from_dict(stats, where=f"tally scores {name!r}")
        return tally

    def view(self) -> dict[str, Any]:
        """The counters, each evaluator's agreement (by name) and the drop rate."""
        out: dict[str, Any] = {key: getattr(self, key) for key in COUNTERS}
        out["agreement"] = {name: self.scores[name].view() for name in sorted(self.scores)}
        out["drop_rate"] = self.dropped / self.selected if self.selected else None
        return out


def disagrees(
    scores: Iterable[tuple[str, float | None]],
    *,
    below: float,
    live_ok: bool,
    shadow_ok: bool,
) -> bool:
    """Whether a pair disagrees: exactly one side failed, or some score is below
    ``below``. Both sides failing is an upstream problem, not a disagreement."""
    if live_ok != shadow_ok:
        return True
    if not live_ok:
        return False
    return any(value is not None and value < below for _, value in scores)
