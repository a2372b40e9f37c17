"""Feedback: named numeric signals about a request or a user, and their summaries.

Feedback arrives far less often than requests (a thumbs-up, a rating, a conversion),
so it is written directly, one autocommitted insert per call, from an executor:
there is no queue to lose it in. Aggregation happens in SQL, which returns only the
sufficient statistics per (route, variant, name): count, sum, sum of squares, and
whether every value was 0 or 1. Those three numbers are also what a later merge
across databases or time windows needs, so ``FeedbackSummary`` keeps them.

A signal whose values are all 0/1 is a rate and gets a Wilson interval, which stays
inside [0, 1] and behaves at 0% and 100%; any other signal gets a Student-t interval
for its mean.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from dataclasses import dataclass
from os import PathLike

from turnout.analysis.intervals import mean_interval, wilson_interval
from turnout.store.sqlite import connect

__all__ = ["FeedbackStore", "FeedbackSummary"]


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """One (route, variant, name): ``mean`` with its 95% interval. ``total`` and
    ``total_sq`` are the sum and sum of squares of the values, for merging."""

    route: str
    variant: str
    name: str
    count: int
    mean: float
    ci95: tuple[float, float]
    is_rate: bool
    total: float
    total_sq: float


_SUMMARY = """
SELECT route, variant, name, count(*), sum(value), sum(value * value),
       min(value IN (0.0, 1.0))
FROM feedback
WHERE (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR ts >= ?2)
GROUP BY route, variant, name
ORDER BY route, variant, name
"""


class FeedbackStore:
    """Feedback rows in the shared database. Methods block; a lock makes the one
    connection safe to use from any executor thread."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def add(
        self,
        request_id: str | None,
        key_hash: str | None,
        route: str,
        variant: str,
        name: str,
        value: float,
        ts: float,
    ) -> None:
        """Record one value. ``key_hash`` is ``RequestLog.hash_key(key)``, never the
        raw key. Non-finite values are refused: one NaN would poison every mean."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"feedback value must be finite, got {value!r}")
        with self._lock:
            self._connection().execute(
                "INSERT INTO feedback (request_id, key_hash, route, variant, name, value, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, key_hash, route, variant, name, value, float(ts)),
            )

    def summary(
        self, route: str | None = None, since: float | None = None
    ) -> list[FeedbackSummary]:
        """Per (route, variant, name), optionally of one route and from ``since`` (unix
        seconds, inclusive) on, ordered by route, variant, name."""
        with self._lock:
            rows = self._connection().execute(_SUMMARY, (route, since)).fetchall()
        out = []
        for r_route, r_variant, r_name, count, r_total, r_total_sq, all_binary in rows:
            n, total, total_sq, is_rate = (
                int(count),
                float(r_total),
                float(r_total_sq),
                bool(all_binary),
            )
            ci = wilson_interval(total, n) if is_rate else mean_interval(n, total, total_sq)
            out.append(
                FeedbackSummary(
                    r_route, r_variant, r_name, n, total / n, ci, is_rate, total, total_sq
                )
            )
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
