"""Prometheus text exposition (format 0.0.4) of the gateway's stats.

``render(cumulative, window)`` takes two documents of the ``GET /admin/stats`` shape
(``Stats`` below): the cumulative view and one sliding window (the caller's choice;
the admin API's ``/metrics`` passes its 5-minute view). Which number comes from which
view follows from what Prometheus does with it:

- Counters (requests, errors, tokens, cost, the summaries' ``_sum``/``_count``) come
  from the cumulative view. Prometheus computes rates over any range itself with
  ``rate()``, which needs values that only grow; a windowed count goes down as old
  slots expire and would read as a counter reset.
- Quantiles come from the window. A lifetime quantile barely moves after the first
  hour and PromQL cannot turn it back into a recent one, so the summary's quantile
  samples describe the recent window; the ``_sum``/``_count`` pair still gives the
  mean over any range (``rate(x_sum[5m]) / rate(x_count[5m])``).
- Gauges (in-flight, workers, feedback) are read from the cumulative view: in-flight is
  "now" in both views, and feedback mean over a short window is mostly noise.

A missing number (``null``, absent, NaN or infinite) omits its sample rather than
printing ``NaN``: an absent sample is what PromQL treats as "no data", while a NaN
would poison every sum and average it enters.

Label cardinality is bounded by construction: the only labels are ``route``,
``variant``, ``upstream`` (from the config), ``class`` and ``direction`` (fixed sets
here), ``name`` (feedback metrics) and ``quantile``. Nothing per user or per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from math import isfinite
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

from turnout.observe.exchange import ERROR_CLASSES

__all__ = [
    "CONTENT_TYPE",
    "ERROR_CLASSES",
    "Errors",
    "FeedbackStat",
    "Percentiles",
    "RequestLog",
    "RouteStats",
    "Series",
    "Stats",
    "Tokens",
    "UpstreamSeries",
    "VariantSeries",
    "escape_label_value",
    "render",
]

# What a /metrics handler must send as Content-Type for this text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# -- the stats document (the JSON of GET /admin/stats) ----------------------------------


class Percentiles(TypedDict):
    """One distribution; every value ``None`` when the window saw no data."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    # How many values the distribution holds. Optional: without it the duration summary
    # counts ``requests`` and the others (which cover only some requests) expose their
    # quantiles without ``_sum``/``_count``.
    count: NotRequired[int]


class Errors(TypedDict):
    client_4xx: int
    rate_limited: int
    upstream_5xx: int
    timeout: int
    connection: int
    upstream_error: int


class Tokens(TypedDict):
    input: int
    output: int


class FeedbackStat(TypedDict):
    count: int
    mean: float | None
    ci95: list[float] | None  # [low, high], None when too few values
    is_rate: bool  # values are 0/1, so the mean is a proportion


class Series(TypedDict):
    requests: int
    throughput_rps: float
    in_flight: int
    errors: Errors
    error_rate: float | None
    latency_ms: Percentiles
    overhead_ms: Percentiles
    ttft_ms: Percentiles
    output_tokens_per_s: Percentiles
    tokens: Tokens
    cost_usd: float
    cost_per_request_usd: float | None


class VariantSeries(Series):
    variant: str
    feedback: dict[str, FeedbackStat]


class UpstreamSeries(Series):
    upstream: str


class RouteStats(TypedDict):
    route: str
    baseline: str
    variants: list[VariantSeries]


class RequestLog(TypedDict):
    written: int
    dropped: int


class Stats(TypedDict):
    window: Literal["60s", "300s", "3600s", "cumulative"]
    window_seconds: float
    generated_at: float
    workers: int
    routes: list[RouteStats]
    upstreams: list[UpstreamSeries]
    request_log: RequestLog


# -- rendering ---------------------------------------------------------------------------

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))

# (family suffix, JSON key, divisor to base units, help). All are Prometheus summaries.
_SUMMARIES = (
    (
        "request_duration_seconds",
        "latency_ms",
        1000.0,
        "End-to-end request duration in seconds, from arrival at the gateway to the end "
        "of the response.",
    ),
    (
        "overhead_seconds",
        "overhead_ms",
        1000.0,
        "Time the gateway itself added, in seconds: duration minus the time from sending "
        "upstream to the upstream's last byte.",
    ),
    (
        "time_to_first_token_seconds",
        "ttft_ms",
        1000.0,
        "Streamed requests: seconds from arrival at the gateway to the upstream's first chunk.",
    ),
    (
        "output_tokens_per_second",
        "output_tokens_per_s",
        1.0,
        "Per request, output tokens over generation time (from the first chunk, or from "
        "sending for whole responses, to the upstream's last byte).",
    ),
)
_SUMMARY_NOTE = " Quantiles over a recent window; _sum and _count, when present, cumulative."

# Only the end-to-end duration is recorded for every finished request, so only it can
# take ``requests`` as its count when the document gives none. Overhead needs a reply
# from the upstream, TTFT a stream, tokens/s output tokens.
_COUNTED_BY_REQUESTS = frozenset({"latency_ms"})

Labels = tuple[tuple[str, str], ...]
_Pair = tuple[Labels, Mapping[str, Any] | None, Mapping[str, Any] | None]


def render(cumulative: Mapping[str, Any], window: Mapping[str, Any]) -> str:
    """The exposition text for one scrape: every family once, HELP and TYPE first."""
    out = _Exposition()
    variants = _join(_route_series(cumulative, "variant"), _route_series(window, "variant"))
    upstreams = _join(_upstream_series(cumulative), _upstream_series(window))
    shadows = _join(_route_series(cumulative, "shadow"), _route_series(window, "shadow"))
    _series_families(out, "turnout_", "per route and variant", variants, kind="variant")
    _series_families(out, "turnout_upstream_", "per upstream", upstreams, kind="upstream")
    # Shadow calls under names of their own, so no sum over live series includes them.
    _series_families(out, "turnout_shadow_", "per route and shadow", shadows, kind="shadow")
    _mirror_families(out, shadows)
    log = _mapping(cumulative.get("request_log"))
    written, dropped = log.get("written"), log.get("dropped")
    for name, kind, help_text, value in (
        ("request_log_written_total", "counter", "Records written to the request log.", written),
        ("request_log_dropped_total", "counter", "Request-log records dropped.", dropped),
        ("workers", "gauge", "Worker processes merged in.", cumulative.get("workers")),
    ):
        out.family(f"turnout_{name}", kind, help_text, [("", (), value)])
    return out.text()


def _series_families(
    out: _Exposition,
    prefix: str,
    per: str,
    series: list[_Pair],
    *,
    kind: Literal["variant", "upstream", "shadow"],
) -> None:
    out.family(
        f"{prefix}requests_total",
        "counter",
        f"Finished requests {per}, errors included.",
        [("", labels, cum.get("requests")) for labels, cum in _cum(series)],
    )
    out.family(
        f"{prefix}errors_total",
        "counter",
        f"Failed requests {per}, by error class (see docs/metrics.md).",
        [
            ("", (*labels, ("class", cls)), _mapping(cum.get("errors")).get(cls, 0))
            for labels, cum in _cum(series)
            for cls in ERROR_CLASSES
        ],
    )
    out.family(
        f"{prefix}in_flight",
        "gauge",
        f"Requests being served right now {per}.",
        [("", labels, _first(cum, win, "in_flight")) for labels, cum, win in series],
    )
    for suffix, key, divisor, help_text in _SUMMARIES:
        out.family(
            f"{prefix}{suffix}",
            "summary",
            help_text + _SUMMARY_NOTE,
            [s for labels, cum, win in series for s in _summary(labels, cum, win, key, divisor)],
        )
    out.family(
        f"{prefix}tokens_total",
        "counter",
        f"Tokens {per} as reported by the upstream's usage, by direction.",
        [
            ("", (*labels, ("direction", d)), _mapping(cum.get("tokens")).get(d))
            for labels, cum in _cum(series)
            for d in ("input", "output")
        ],
    )
    out.family(
        f"{prefix}cost_usd_total",
        "counter",
        f"Cost in US dollars {per}, from the configured per-model prices.",
        [("", labels, cum.get("cost_usd")) for labels, cum in _cum(series)],
    )
    if kind == "shadow":
        return
    if kind == "upstream":
        out.family(
            f"{prefix}ejected",
            "gauge",
            "Worker processes in which the upstream is ejected now (outlier ejection).",
            [
                ("", labels, _mapping(cum.get("health")).get("ejected_in", 0))
                for labels, cum in _cum(series)
            ],
        )
        return
    out.family(
        "turnout_absorbed_errors_total",
        "counter",
        "Failed upstream attempts a retry or fallback hid from the client, per route and"
        " variant, by error class.",
        [
            ("", (*labels, ("class", cls)), _mapping(cum.get("absorbed_errors")).get(cls, 0))
            for labels, cum in _cum(series)
            for cls in ERROR_CLASSES
        ],
    )
    for name, help_text in (
        ("retries", "Attempts repeated on the same upstream, per route and variant."),
        ("fallbacks", "Moves to the next upstream of a variant's chain, per route and variant."),
    ):
        out.family(
            f"turnout_{name}_total",
            "counter",
            help_text,
            [("", labels, cum.get(name, 0)) for labels, cum in _cum(series)],
        )
    stats = [
        ((*labels, ("name", str(name))), _mapping(stat))
        for labels, cum in _cum(series)
        for name, stat in _mapping(cum.get("feedback")).items()
    ]
    for field, help_text in (
        ("count", "Feedback values received per route and variant, by feedback name."),
        ("mean", "Mean feedback value per route and variant, by name (a proportion for 0/1)."),
    ):
        samples = [("", labels, stat.get(field)) for labels, stat in stats]
        out.family(f"turnout_feedback_{field}", "gauge", help_text, samples)


def _mirror_families(out: _Exposition, series: list[_Pair]) -> None:
    tallies = [(labels, _mapping(cum.get("mirror"))) for labels, cum in _cum(series)]
    out.family(
        "turnout_shadow_mirror_total",
        "counter",
        "Requests chosen for mirroring per route and shadow, by outcome: selected, dropped"
        " (the shadow's queue was full), sent, failed (the shadow call failed).",
        [
            ("", (*labels, ("outcome", outcome)), tally.get(outcome, 0))
            for labels, tally in tallies
            for outcome in ("selected", "dropped", "sent", "failed")
        ],
    )
    for name, help_text in (
        ("pairs", "Mirrored pairs compared (both answers known) per route and shadow."),
        ("disagreements", "Compared pairs that disagree, per route and shadow."),
    ):
        out.family(
            f"turnout_shadow_{name}_total",
            "counter",
            help_text,
            [("", labels, tally.get(name, 0)) for labels, tally in tallies],
        )
    out.family(
        "turnout_shadow_agreement_mean",
        "gauge",
        "Mean evaluator score of the compared pairs per route and shadow, by evaluator"
        " (a proportion for 0/1 evaluators such as exact).",
        [
            ("", (*labels, ("evaluator", str(name))), _mapping(stat).get("mean"))
            for labels, tally in tallies
            for name, stat in _mapping(tally.get("agreement")).items()
        ],
    )


_Sample = tuple[str, Labels, object]


def _summary(
    labels: Labels,
    cum: Mapping[str, Any] | None,
    win: Mapping[str, Any] | None,
    key: str,
    divisor: float,
) -> Iterator[_Sample]:
    recent = _mapping(win.get(key)) if win is not None else {}
    for quantile, field in _QUANTILES:
        yield "", (*labels, ("quantile", quantile)), _scaled(recent.get(field), divisor)
    if cum is None:
        return
    dist = _mapping(cum.get(key))
    count = dist.get("count")
    if count is None and key in _COUNTED_BY_REQUESTS:
        count = cum.get("requests")
    mean = _scaled(dist.get("mean"), divisor)
    if not _is_number(count):
        return
    if mean is None:
        if count != 0:
            return  # values counted but no mean: a sum would be made up
        mean = 0.0
    yield "_sum", labels, mean * count
    yield "_count", labels, count


def _scaled(value: object, divisor: float) -> float | None:
    return value / divisor if _is_number(value) else None


class _Exposition:
    """Accumulates families; one HELP and one TYPE each, samples grouped under them."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[_Sample]) -> None:
        help_escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_escaped}")
        self._lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            if value is None:
                continue
            if not _is_number(value):
                # A collector bug; fail the scrape loudly rather than invent a number.
                raise TypeError(f"{name}{suffix}: value must be a number, got {value!r}")
            text = _format_value(value)
            if text is None:
                continue
            self._lines.append(f"{name}{suffix}{_format_labels(labels)} {text}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in labels)
    return "{" + inner + "}"


def escape_label_value(value: str) -> str:
    """Label value escaping of the text format: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str | None:
    if isinstance(value, int):
        return str(value)
    if not isfinite(value):
        return None
    # 15 significant digits: every float prints without the binary noise of the ms to
    # s division (0.21 / 1000 is 0.00020999999999999998), and the rounding is monotonic,
    # so a counter that grew never prints smaller. Go's ParseFloat reads every form.
    return f"{value:.15g}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first(cum: Mapping[str, Any] | None, win: Mapping[str, Any] | None, key: str) -> object:
    for view in (cum, win):
        if view is not None and view.get(key) is not None:
            return view.get(key)
    return None


def _cum(series: list[_Pair]) -> Iterator[tuple[Labels, Mapping[str, Any]]]:
    """Series present in the cumulative view: the only source of counters."""
    return ((labels, cum) for labels, cum, _ in series if cum is not None)


def _route_series(
    stats: Mapping[str, Any], kind: Literal["variant", "shadow"]
) -> Iterator[tuple[Labels, Mapping[str, Any]]]:
    """Each route's variants (or shadows), labelled by route and name. A series without
    a name cannot be told apart from others: it is skipped rather than exported under a
    made-up label such as "None"."""
    for route in stats.get("routes") or ():
        route_map = _mapping(route)
        route_name = route_map.get("route")
        for item in route_map.get(f"{kind}s") or ():
            item_map = _mapping(item)
            name = item_map.get(kind)
            if isinstance(route_name, str) and isinstance(name, str):
                yield (("route", route_name), (kind, name)), item_map


def _upstream_series(stats: Mapping[str, Any]) -> Iterator[tuple[Labels, Mapping[str, Any]]]:
    for upstream in stats.get("upstreams") or ():
        upstream_map = _mapping(upstream)
        name = upstream_map.get("upstream")
        if isinstance(name, str):
            yield (("upstream", name),), upstream_map


def _join(
    cumulative: Iterable[tuple[Labels, Mapping[str, Any]]],
    window: Iterable[tuple[Labels, Mapping[str, Any]]],
) -> list[_Pair]:
    """Pair each series' two views by its labels, in the cumulative view's order.

    The first of duplicated labels wins, because a repeated sample makes Prometheus
    reject the whole scrape. A series only in the window (one that appeared after the
    cumulative view was taken) still gets its quantiles and in-flight gauge.
    """
    pairs: dict[Labels, list[Mapping[str, Any] | None]] = {}
    for labels, series in cumulative:
        pairs.setdefault(labels, [series, None])
    for labels, series in window:
        pair = pairs.setdefault(labels, [None, None])
        if pair[1] is None:
            pair[1] = series
    return [(labels, cum, win) for labels, (cum, win) in pairs.items()]
