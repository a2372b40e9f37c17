"""An experiment's units, read from the shared store (blocking: run on a thread).

One row per stickiness key (its keyed hash) seen on the route in the span: the
variants it was served by, its request count, and per metric its mean over its
requests. Latency, TTFT, tokens and cost are taken from requests that succeeded;
``error_rate`` is the unit's share of requests that failed (client 4xx aside);
``error_rate:<class>`` one class. ``feedback:<name>`` is the mean of the unit's
feedback values; a unit with none counts as 0 when the name's values are all 0/1
(an event such as a conversion: no event means it did not happen), and is left out
otherwise (a score nobody gave).
"""

from __future__ import annotations

import sqlite3
from os import PathLike

from turnout.config.experiment import ExperimentSpec
from turnout.experiment.report import Unit
from turnout.store.sqlite import connect

__all__ = ["load_units"]

_REQUEST_METRICS = ("latency_ms", "ttft_ms", "output_tokens", "input_tokens", "cost_usd")


def _expression(metric: str) -> str:
    base, _, arg = metric.partition(":")
    if base == "error_rate":
        failed = (
            f"error_class = '{arg}'"
            if arg
            else "error_class IS NOT NULL AND error_class != 'client_4xx'"
        )
        return f"avg({failed})"
    assert metric in _REQUEST_METRICS  # names are checked by the config
    return f"avg(CASE WHEN error_class IS NULL THEN {metric} END)"


def load_units(
    path: str | PathLike[str], spec: ExperimentSpec, start: float, stop: float
) -> list[Unit]:
    metrics = [m.metric for m in (spec.primary, *spec.guardrails)]
    request_metrics = [m for m in metrics if not m.startswith("feedback:")]
    conn = connect(path)
    try:
        return _load(conn, spec, metrics, request_metrics, start, stop)
    finally:
        conn.close()


def _load(
    conn: sqlite3.Connection,
    spec: ExperimentSpec,
    metrics: list[str],
    request_metrics: list[str],
    start: float,
    stop: float,
) -> list[Unit]:
    columns = "".join(f", {_expression(m)}" for m in request_metrics)
    rows = conn.execute(
        f"SELECT key_hash, group_concat(DISTINCT variant), count(*){columns} FROM request_log"
        " WHERE route = ? AND ts >= ? AND ts < ? AND key_hash IS NOT NULL"
        " AND variant IS NOT NULL GROUP BY key_hash",
        (spec.route, start, stop),
    ).fetchall()
    feedback: dict[str, dict[str, float]] = {}
    events: dict[str, bool] = {}
    for metric in metrics:
        if not metric.startswith("feedback:"):
            continue
        name = metric.partition(":")[2]
        found = conn.execute(
            "SELECT key_hash, avg(value), min(value IN (0.0, 1.0)) FROM feedback"
            " WHERE route = ? AND name = ? AND ts >= ? AND ts < ? AND key_hash IS NOT NULL"
            " GROUP BY key_hash",
            (spec.route, name, start, stop),
        ).fetchall()
        feedback[metric] = {k: float(v) for k, v, _ in found}
        events[metric] = bool(found) and all(bool(e) for _, _, e in found)
    units = []
    for key, variants, n, *values in rows:
        by_metric: dict[str, float | None] = {
            m: None if v is None else float(v) for m, v in zip(request_metrics, values, strict=True)
        }
        for metric, per_key in feedback.items():
            value = per_key.get(key)
            by_metric[metric] = 0.0 if value is None and events[metric] else value
        units.append(Unit(key, tuple(sorted(str(variants).split(","))), int(n), by_metric))
    return units
