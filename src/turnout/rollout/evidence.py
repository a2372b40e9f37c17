"""The evidence a rollout is judged on: both variants' requests over one window.

Read from the request log and the feedback table in the shared store, so every
worker's traffic counts. Latency, TTFT, tokens and cost are taken from requests
that succeeded (a fast error is not a fast answer); ``error_rate`` counts every
failure the client saw except its own 4xx, over all requests. Samples are capped
at the newest ``SAMPLE_CAP`` per variant and metric: enough for the rank test to
see a few per cent, bounded in memory and time however busy the route. Counts
are not capped (SQL aggregates them).

Blocking: run on an executor thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from os import PathLike

from turnout.analysis.judge import (
    Counts,
    Direction,
    MetricKind,
    MetricSpec,
    Observation,
    Samples,
    Thresholds,
)
from turnout.config.rollout import Analysis, MetricCheck, RolloutSpec, metric_defaults
from turnout.store.sqlite import connect

__all__ = ["Evidence", "metric_specs", "thresholds"]

SAMPLE_CAP = 20_000
# Metrics compared as ratios (on the log scale); they are positive when present.
_RELATIVE = frozenset({"latency_ms", "ttft_ms", "cost_usd", "output_tokens", "input_tokens"})


def metric_specs(analysis: Analysis) -> list[MetricSpec]:
    """The judge's view of an analysis' metric checks."""
    out = []
    for check in analysis.metrics:
        kind, direction = metric_defaults(check.metric)
        if check.kind is not None:
            kind = check.kind
        out.append(
            MetricSpec(
                name=check.metric,
                kind=MetricKind(kind),
                direction=Direction(check.direction or direction),
                tolerance=check.tolerance,
                min_samples=check.min_samples,
                critical=check.critical,
                weight=check.weight,
                alpha=analysis.alpha,
                relative=check.metric in _RELATIVE,
                min_absolute=check.min_absolute,
            )
        )
    return out


def thresholds(analysis: Analysis) -> Thresholds:
    return Thresholds(pass_score=analysis.pass_score, marginal_score=analysis.marginal_score)


class Evidence:
    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def observations(self, spec: RolloutSpec, start: float, end: float) -> dict[str, Observation]:
        """Every metric of ``spec.analysis``, stable against candidate, ts in [start, end)."""
        with self._lock:
            db = self._db()
            out: dict[str, Observation] = {}
            for check in spec.analysis.metrics:
                out[check.metric] = self._observe(db, spec, check, start, end)
            return out

    def _observe(
        self,
        db: sqlite3.Connection,
        spec: RolloutSpec,
        check: MetricCheck,
        start: float,
        end: float,
    ) -> Observation:
        metric = check.metric
        base, _, arg = metric.partition(":")
        if base == "error_rate":
            failed = "error_class = ?" if arg else "error_class IS NOT NULL AND error_class != ?"
            param = arg or "client_4xx"
            counts = self._counts(
                db,
                f"SELECT variant, count(*), total({failed}) FROM request_log"
                " WHERE ts >= ? AND ts < ? AND route = ? AND variant IN (?, ?) GROUP BY variant",
                (param, start, end, spec.route, spec.stable, spec.candidate),
                spec,
            )
            return counts
        if base == "feedback":
            where = (
                "FROM feedback WHERE ts >= ? AND ts < ? AND route = ? AND variant = ? AND name = ?"
            )
            if check.kind == "rate":
                return self._counts(
                    db,
                    "SELECT variant, count(*), total(value > 0) FROM feedback"
                    " WHERE ts >= ? AND ts < ? AND route = ? AND variant IN (?, ?) AND name = ?"
                    " GROUP BY variant",
                    (start, end, spec.route, spec.stable, spec.candidate, arg),
                    spec,
                )
            sql = f"SELECT value {where} ORDER BY ts DESC LIMIT {SAMPLE_CAP}"
            return Samples(
                *(
                    [r[0] for r in db.execute(sql, (start, end, spec.route, v, arg))]
                    for v in (spec.stable, spec.candidate)
                )
            )
        # A request metric: the column has the metric's name (checked by the config).
        sql = (
            f"SELECT {metric} FROM request_log WHERE ts >= ? AND ts < ? AND route = ?"
            f" AND variant = ? AND error_class IS NULL AND {metric} > 0"
            f" ORDER BY ts DESC LIMIT {SAMPLE_CAP}"
        )
        return Samples(
            *(
                [float(r[0]) for r in db.execute(sql, (start, end, spec.route, v))]
                for v in (spec.stable, spec.candidate)
            )
        )

    @staticmethod
    def _counts(
        db: sqlite3.Connection, sql: str, params: tuple[object, ...], spec: RolloutSpec
    ) -> Counts:
        found: Mapping[str, tuple[int, int]] = {
            variant: (int(n), int(hits)) for variant, n, hits in db.execute(sql, params)
        }
        sn, sh = found.get(spec.stable, (0, 0))
        cn, ch = found.get(spec.candidate, (0, 0))
        return Counts(stable_hits=sh, stable_n=sn, candidate_hits=ch, candidate_n=cn)
