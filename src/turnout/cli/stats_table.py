"""The ``turnout stats`` tables: variants side by side, each compared to the baseline.

``render_table(stats, color=...)`` takes the JSON of ``GET /admin/stats`` (see
``turnout.observe.prometheus.Stats``) and returns the text to print; it does no I/O.

One table per route, its variants as columns with the baseline first, then one table
of upstreams. Beside each non-baseline value is its difference to the baseline:

- relative (``+12.3%``) for magnitudes: latency, overhead, TTFT, tokens/s, cost per
  request, throughput;
- in percentage points (``+0.45 pp``) for rates: error rates and yes/no feedback, where
  a relative change of a near-zero rate would be huge and meaningless;
- absolute (``+0.12``) for other feedback, whose scale may include zero or negatives.

With ``color`` a difference is red when worse and green when better. Throughput is not
colored: it is the traffic share the split gives a variant, not a quality. Totals that
scale with the share (requests, tokens, cost) get no difference at all. A difference
that rounds to zero is not colored either.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from typing import Any

from turnout.observe.prometheus import ERROR_CLASSES

__all__ = ["render_table"]

RED = "\x1b[31m"
GREEN = "\x1b[32m"
RESET = "\x1b[0m"

_GAP = "  "  # between columns
Series = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    get: Callable[[Series], float | None]
    fmt: Callable[[float], str]
    diff: str | None = None  # "rel", "pp" or "abs"; None: no comparison shown
    worse: int = 0  # the sign of a change for the worse; 0: neither
    note: Callable[[Series], str] | None = None  # text after the value (feedback CI)


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    diff: str = ""
    color: str = ""


def render_table(stats: Mapping[str, Any], *, color: bool) -> str:
    """The header line, a table per route, then the upstreams table."""
    covered = _number(stats.get("window_seconds"))
    workers = _number(stats.get("workers"))
    header = f"window {_clean(str(stats.get('window', '?')))}"
    header += f": {covered:.1f} s covered" if covered is not None else ""
    if workers is not None:
        header += f", {int(workers)} worker{'' if workers == 1 else 's'}"
    blocks = [header]
    for route in _list(stats.get("routes")):
        blocks.append(_route_table(_map(route), color))
    upstreams = [_map(u) for u in _list(stats.get("upstreams"))]
    if upstreams:
        names = [str(u.get("upstream", "?")) for u in upstreams]
        blocks.append(_table("upstreams", names, upstreams, None, _rows(upstreams), color))
    log = _map(stats.get("request_log"))
    written, dropped = _number(log.get("written")), _number(log.get("dropped"))
    if written is not None and dropped is not None:
        blocks.append(f"request log: {_count(written)} written, {_count(dropped)} dropped")
    return "\n\n".join(blocks) + "\n"


def _route_table(route: Mapping[str, Any], color: bool) -> str:
    name = _clean(str(route.get("route", "?")))
    variants = [_map(v) for v in _list(route.get("variants"))]
    baseline = route.get("baseline")
    # The baseline first: every other column is read against it.
    variants.sort(key=lambda v: v.get("variant") != baseline)
    base_index = 0 if variants and variants[0].get("variant") == baseline else None
    title = f"route {name}"
    if len(variants) > 1 and baseline is not None:
        title += f" (baseline {_clean(str(baseline))})"
    if not variants:
        return f"{title}\n(no variants)"
    names = [str(v.get("variant", "?")) for v in variants]
    # Shadows as further columns, read against the same baseline; their agreement
    # with the live answers in rows of their own.
    shadows = [_map(v) for v in _list(route.get("shadows"))]
    names += [f"{s.get('shadow', '?')} (shadow)" for s in shadows]
    series = variants + shadows
    rows = _rows(series) + _feedback_rows(variants) + _shadow_rows(shadows)
    table = _table(title, names, series, base_index, rows, color)
    cost = _number(route.get("shadow_cost_usd"))
    if shadows and cost is not None:
        table += f"\nshadow cost (not in the variants' cost): {_usd(cost)}"
    return table


def _rows(series: Sequence[Series]) -> list[_Row]:
    rows = [
        _Row("requests", _field("requests"), _count),
        _Row("throughput", _field("throughput_rps"), _unit("req/s"), "rel", 0),
        _Row("error rate", _error_rate, _percent, "pp", 1),
    ]
    # Only classes that happened: six rows of zeros would bury the ones that matter.
    seen = [c for s in series for c, n in _map(s.get("errors")).items() if _number(n)]
    for cls in [*ERROR_CLASSES, *sorted(set(seen) - set(ERROR_CLASSES))]:
        if cls in seen:
            rows.append(_Row(f"  {_clean(cls)}", _class_rate(cls), _percent, "pp", 1))
    ms = _unit("ms")
    return [
        *rows,
        _Row("latency p50", _dist("latency_ms", "p50"), ms, "rel", 1),
        _Row("latency p95", _dist("latency_ms", "p95"), ms, "rel", 1),
        _Row("latency p99", _dist("latency_ms", "p99"), ms, "rel", 1),
        _Row("overhead p50", _dist("overhead_ms", "p50"), ms, "rel", 1),
        _Row("overhead p99", _dist("overhead_ms", "p99"), ms, "rel", 1),
        _Row("TTFT p50", _dist("ttft_ms", "p50"), ms, "rel", 1),
        _Row("TTFT p95", _dist("ttft_ms", "p95"), ms, "rel", 1),
        _Row("tokens/s p50", _dist("output_tokens_per_s", "p50"), _unit("tok/s"), "rel", -1),
        _Row("input tokens", _sub("tokens", "input"), _count),
        _Row("output tokens", _sub("tokens", "output"), _count),
        _Row("cost", _field("cost_usd"), _usd),
        _Row("cost/request", _field("cost_per_request_usd"), _usd, "rel", 1),
    ]


def _shadow_rows(shadows: Sequence[Series]) -> list[_Row]:
    if not shadows:
        return []
    rows = [
        _Row("mirrored", _mirror("sent"), _count),
        _Row("mirror dropped", _mirror("dropped"), _count),
        _Row("pairs compared", _mirror("pairs"), _count),
        _Row("disagreements", _mirror("disagreements"), _count),
    ]
    kinds: dict[str, bool] = {}
    for s in shadows:
        for name, stat in _map(_map(s.get("mirror")).get("agreement")).items():
            kinds.setdefault(str(name), _map(stat).get("is_rate") is True)
    for name, is_rate in kinds.items():
        stat_of = _path("mirror", "agreement", name)
        rows.append(
            _Row(
                f"agree: {_clean(name)}",
                _mean_of(stat_of),
                _percent1 if is_rate else _plain,
                note=_ci_note(stat_of, _percent1_bare if is_rate else _plain),
            )
        )
    return rows


def _mean_of(stat_of: Callable[[Series], Mapping[str, Any]]) -> Callable[[Series], float | None]:
    return lambda s: _number(stat_of(s).get("mean"))


def _mirror(key: str) -> Callable[[Series], float | None]:
    return lambda s: _number(_map(s.get("mirror")).get(key))


def _path(*keys: str) -> Callable[[Series], Mapping[str, Any]]:
    def get(s: Series) -> Mapping[str, Any]:
        node: Mapping[str, Any] = s
        for key in keys:
            node = _map(node.get(key))
        return node

    return get


def _feedback_rows(variants: Sequence[Series]) -> list[_Row]:
    """One row per feedback name any variant has, in order of first appearance."""
    kinds: dict[str, bool] = {}
    for v in variants:
        for name, stat in _map(v.get("feedback")).items():
            kinds.setdefault(str(name), _map(stat).get("is_rate") is True)
    rows = []
    for name, is_rate in kinds.items():
        rows.append(
            _Row(
                _clean(name),
                _feedback(name, "mean"),
                _percent1 if is_rate else _plain,
                "pp" if is_rate else "abs",
                -1,  # feedback: higher is better
                note=_ci_note(_path("feedback", name), _percent1_bare if is_rate else _plain),
            )
        )
    return rows


def _table(
    title: str,
    names: Sequence[str],
    series: Sequence[Series],
    base: int | None,
    rows: Sequence[_Row],
    color: bool,
) -> str:
    grid = [
        [_cell(row, s, _base_for(i, series, base), color) for i, s in enumerate(series)]
        for row in rows
    ]
    headers = [_clean(n) for n in names]
    label_w = max(_width(r.label) for r in rows)
    value_w = [
        max([_width(headers[i])] + [_width(line[i].text) for line in grid])
        for i in range(len(series))
    ]
    diff_w = [max(_width(line[i].diff) for line in grid) for i in range(len(series))]
    lines = [
        title,
        _join("", label_w, [_rjust(h, w) for h, w in zip(headers, value_w, strict=True)]),
    ]
    for row, line in zip(rows, grid, strict=True):
        cells = []
        for i, cell in enumerate(line):
            text = _rjust(cell.text, value_w[i])
            if diff_w[i]:
                diff = cell.diff + " " * (diff_w[i] - _width(cell.diff))
                if cell.color:  # padding outside the color codes keeps widths right
                    diff = f"{cell.color}{cell.diff}{RESET}" + diff[len(cell.diff) :]
                text += " " + diff
            cells.append(text)
        lines.append(_join(row.label, label_w, cells))
    return "\n".join(lines)


def _base_for(i: int, series: Sequence[Series], base: int | None) -> Series | None:
    return series[base] if base is not None and i != base else None


def _join(label: str, label_w: int, cells: Sequence[str]) -> str:
    return (label + " " * (label_w - _width(label)) + _GAP + _GAP.join(cells)).rstrip()


def _cell(row: _Row, s: Series, base: Series | None, color: bool) -> _Cell:
    value = row.get(s)
    if value is None:
        return _Cell("-")
    text = row.fmt(value)
    if row.note is not None:
        text += row.note(s)
    if base is None or row.diff is None:
        return _Cell(text)
    reference = row.get(base)
    if reference is None:
        return _Cell(text)
    diff = _difference(row.diff, value, reference)
    if diff is None:
        return _Cell(text)
    diff_text, shown = diff
    paint = ""
    if color and row.worse and shown:
        paint = RED if shown * row.worse > 0 else GREEN
    return _Cell(text, f"({diff_text})", paint)


def _difference(kind: str, value: float, base: float) -> tuple[str, float] | None:
    """The text of a difference and its displayed (rounded) size, whose sign colors it."""
    if kind == "rel":
        if base == 0:
            return None  # no relative change from zero
        shown = round((value - base) / base * 100, 1)
        return f"{shown + 0.0:+.1f}%", shown  # + 0.0 turns -0.0 into 0.0
    if kind == "pp":
        shown = round((value - base) * 100, 2)
        return f"{shown + 0.0:+.2f} pp", shown
    shown = round(value - base, 2)
    return f"{shown + 0.0:+.2f}", shown


# -- reading the document: anything missing or not a number reads as None ------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if isfinite(value) else None


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _field(key: str) -> Callable[[Series], float | None]:
    return lambda s: _number(s.get(key))


def _sub(key: str, sub: str) -> Callable[[Series], float | None]:
    return lambda s: _number(_map(s.get(key)).get(sub))


_dist = _sub  # percentiles: {"latency_ms": {"p50": ...}}


def _error_rate(s: Series) -> float | None:
    # With no requests the collector may say 0.0; "no data" is the honest reading.
    return _number(s.get("error_rate")) if _number(s.get("requests")) else None


def _class_rate(cls: str) -> Callable[[Series], float | None]:
    def get(s: Series) -> float | None:
        requests = _number(s.get("requests"))
        count = _number(_map(s.get("errors")).get(cls))
        return count / requests if requests and count is not None else None

    return get


def _feedback(name: str, key: str) -> Callable[[Series], float | None]:
    return lambda s: _number(_map(_map(s.get("feedback")).get(name)).get(key))


def _ci_note(
    stat_of: Callable[[Series], Mapping[str, Any]], fmt: Callable[[float], str]
) -> Callable[[Series], str]:
    def note(s: Series) -> str:
        stat = stat_of(s)
        ci = stat.get("ci95")
        text = ""
        if isinstance(ci, list | tuple) and len(ci) == 2:
            low, high = _number(ci[0]), _number(ci[1])
            if low is not None and high is not None:
                text += f" [{fmt(low)}, {fmt(high)}]"
        count = _number(stat.get("count"))
        return text + (f" n={_count(count)}" if count is not None else "")

    return note


# -- formatting -----------------------------------------------------------------------------


def _num(value: float) -> str:
    """Three significant digits in fixed point (thousands grouped), as people read
    dashboards: 1,900 / 20.6 / 2.50 / 0.210 / 0.0000150."""
    if value == 0:
        return "0"
    # The exponent of the value once rounded to three digits (9.996 -> 1.00e+01).
    exponent = int(f"{value:.2e}".split("e")[1])
    return f"{value:,.{min(max(0, 2 - exponent), 12)}f}"


def _unit(unit: str) -> Callable[[float], str]:
    return lambda v: f"{_num(v)} {unit}"


def _count(value: float) -> str:
    return f"{round(value):,}"


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _percent1(value: float) -> str:
    return f"{value * 100:.1f}%"


def _percent1_bare(value: float) -> str:
    return f"{value * 100:.1f}"


def _plain(value: float) -> str:
    return f"{value:.2f}"


def _usd(value: float) -> str:
    # Per-request costs are fractions of a cent: below a dollar, three significant digits.
    return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${_num(value)}"


# -- text width -----------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Names come from configs and documents: show control characters escaped, never
    sent raw to the terminal, where an escape sequence would redraw the screen."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks none."""
    width = 0
    for c in text:
        if unicodedata.combining(c):
            continue
        width += 2 if unicodedata.east_asian_width(c) in "WF" else 1
    return width


def _rjust(text: str, width: int) -> str:
    return " " * (width - _width(text)) + text
