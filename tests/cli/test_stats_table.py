"""`turnout stats` tables: exact text for a small case, colors, diffs, missing data."""

from __future__ import annotations

import re
from copy import deepcopy
from typing import Any

from turnout.cli.stats_table import GREEN, RED, RESET, render_table

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def dist(p50: Any, p95: Any, p99: Any, mean: Any) -> dict[str, Any]:
    return {"p50": p50, "p95": p95, "p99": p99, "mean": mean}


NO_DATA = dist(None, None, None, None)


def errors(**counts: int) -> dict[str, int]:
    classes = ("client_4xx", "rate_limited", "upstream_5xx", "timeout", "connection")
    out = dict.fromkeys((*classes, "upstream_error"), 0)
    out.update(counts)
    return out


def thumbs(count: int, mean: float, low: float, high: float) -> dict[str, Any]:
    return {"count": count, "mean": mean, "ci95": [low, high], "is_rate": True}


STABLE: dict[str, Any] = {
    "variant": "stable",
    "requests": 1000,
    "throughput_rps": 17.2,
    "in_flight": 2,
    "errors": errors(upstream_5xx=2),
    "error_rate": 0.002,
    "latency_ms": dist(800.0, 1500.0, 2000.0, 850.0),
    "overhead_ms": dist(0.2, 0.3, 0.5, 0.22),
    "ttft_ms": NO_DATA,
    "output_tokens_per_s": dist(50.0, 70.0, 80.0, 52.0),
    "tokens": {"input": 40000, "output": 90000},
    "cost_usd": 1.3,
    "cost_per_request_usd": 0.0013,
    "feedback": {"thumbs_up": thumbs(40, 0.7, 0.55, 0.83)},
}
CANARY: dict[str, Any] = {
    **STABLE,
    "variant": "canary",
    "requests": 100,
    "throughput_rps": 1.72,
    "in_flight": 0,
    "errors": errors(timeout=1),
    "error_rate": 0.01,
    "latency_ms": dist(900.0, 1200.0, 2000.0, 870.0),
    "output_tokens_per_s": dist(60.0, 75.0, 82.0, 61.0),
    "tokens": {"input": 4000, "output": 9500},
    "cost_usd": 0.1,
    "cost_per_request_usd": 0.001,
    "feedback": {"thumbs_up": thumbs(10, 0.8, 0.49, 0.94)},
}
UPSTREAM: dict[str, Any] = {
    **{k: v for k, v in STABLE.items() if k not in ("variant", "feedback")},
    "upstream": "sim-v1",
    "errors": errors(),
    "error_rate": 0.0,
}


def doc(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "window": "60s",
        "window_seconds": 58.2,
        "generated_at": 1795563963.1,
        "workers": 2,
        # The baseline listed second: the table still shows it first.
        "routes": [{"route": "main", "baseline": "stable", "variants": [CANARY, STABLE]}],
        "upstreams": [],
        "request_log": {"written": 1100, "dropped": 0},
    }
    out.update(over)
    return deepcopy(out)


EXPECTED = """\
window 60s: 58.2 s covered, 2 workers

route main (baseline stable)
                                 stable                   canary
requests                          1,000                      100
throughput                   17.2 req/s               1.72 req/s (-90.0%)
error rate                        0.20%                    1.00% (+0.80 pp)
  upstream_5xx                    0.20%                    0.00% (-0.20 pp)
  timeout                         0.00%                    1.00% (+1.00 pp)
latency p50                      800 ms                   900 ms (+12.5%)
latency p95                    1,500 ms                 1,200 ms (-20.0%)
latency p99                    2,000 ms                 2,000 ms (+0.0%)
overhead p50                   0.200 ms                 0.200 ms (+0.0%)
overhead p99                   0.500 ms                 0.500 ms (+0.0%)
TTFT p50                              -                        -
TTFT p95                              -                        -
tokens/s p50                 50.0 tok/s               60.0 tok/s (+20.0%)
input tokens                     40,000                    4,000
output tokens                    90,000                    9,500
cost                              $1.30                   $0.100
cost/request                   $0.00130                 $0.00100 (-23.1%)
thumbs_up       70.0% [55.0, 83.0] n=40  80.0% [49.0, 94.0] n=10 (+10.00 pp)

request log: 1,100 written, 0 dropped
"""


def row(text: str, label: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(label + " ")]
    return line


def test_known_input_gives_exact_lines() -> None:
    assert render_table(doc(), color=False) == EXPECTED


def test_color_codes_only_with_color() -> None:
    plain = render_table(doc(upstreams=[UPSTREAM]), color=False)
    colored = render_table(doc(upstreams=[UPSTREAM]), color=True)
    assert "\x1b" not in plain
    assert RED in colored and GREEN in colored
    # Colors wrap the differences only: without them the layout is the same.
    assert ANSI.sub("", colored) == plain


def test_diff_signs_and_colors() -> None:
    text = render_table(doc(), color=True)
    worse, better = f"{RED}(", f"{GREEN}("
    assert f"{worse}+12.5%){RESET}" in row(text, "latency p50")  # slower: worse
    assert f"{better}-20.0%){RESET}" in row(text, "latency p95")  # faster: better
    assert f"{worse}+0.80 pp){RESET}" in row(text, "error rate")  # more errors: worse
    assert f"{better}-0.20 pp){RESET}" in row(text, "  upstream_5xx")
    assert f"{better}+20.0%){RESET}" in row(text, "tokens/s p50")  # faster generation
    assert f"{better}-23.1%){RESET}" in row(text, "cost/request")  # cheaper: better
    assert f"{better}+10.00 pp){RESET}" in row(text, "thumbs_up")  # feedback: higher is better
    # Throughput is the traffic share: a difference, never a judgement.
    assert row(text, "throughput").endswith("1.72 req/s (-90.0%)")
    # No change, no color.
    assert row(text, "latency p99").endswith("2,000 ms (+0.0%)")


def test_reversed_differences_flip_colors() -> None:
    d = doc()
    d["routes"][0]["variants"][0]["latency_ms"]["p50"] = 700.0
    d["routes"][0]["variants"][0]["feedback"]["thumbs_up"]["mean"] = 0.6
    d["routes"][0]["variants"][0]["cost_per_request_usd"] = 0.0026
    text = render_table(d, color=True)
    assert f"{GREEN}(-12.5%){RESET}" in row(text, "latency p50")
    assert f"{RED}(-10.00 pp){RESET}" in row(text, "thumbs_up")
    assert f"{RED}(+100.0%){RESET}" in row(text, "cost/request")


def test_non_rate_feedback_shows_absolute_difference() -> None:
    d = doc()
    score = {"count": 5, "mean": 3.5, "ci95": [2.9, 4.1], "is_rate": False}
    d["routes"][0]["variants"][1]["feedback"]["score"] = score
    d["routes"][0]["variants"][0]["feedback"]["score"] = {**score, "mean": 4.0, "ci95": None}
    line = row(render_table(d, color=False), "score")
    assert line.split()[1:] == ["3.50", "[2.90,", "4.10]", "n=5", "4.00", "n=5", "(+0.50)"]


def test_missing_data_shows_dashes() -> None:
    empty = {
        "variant": "canary",
        "requests": 0,
        "throughput_rps": 0.0,
        "in_flight": 0,
        "errors": errors(),
        "error_rate": 0.0,  # the collector's "no requests" value: not a 0% error rate
        "latency_ms": NO_DATA,
        "overhead_ms": NO_DATA,
        "ttft_ms": NO_DATA,
        "output_tokens_per_s": NO_DATA,
        "tokens": {"input": 0, "output": 0},
        "cost_usd": 0.0,
        "cost_per_request_usd": None,
        "feedback": {},
    }
    text = render_table(
        doc(routes=[{**doc()["routes"][0], "variants": [STABLE, empty]}]), color=True
    )
    for label in ("error rate", "latency p50", "overhead p99", "tokens/s p50", "cost/request"):
        assert row(text, label).endswith(" -"), label
    assert row(text, "thumbs_up").endswith(" -")
    assert row(text, "requests").endswith(" 0")
    assert row(text, "throughput").endswith("0 req/s (-100.0%)")
    assert row(text, "cost").endswith("$0.00")
    # An empty baseline: no relative change from zero, no difference from "-".
    as_baseline = {**empty, "variant": "stable"}
    route = {"route": "main", "baseline": "stable", "variants": [as_baseline, CANARY]}
    text = render_table(doc(routes=[route]), color=True)
    assert row(text, "throughput").endswith("1.72 req/s")
    assert row(text, "latency p50").endswith("900 ms")
    assert "(" not in text.split("(baseline stable)")[1] and "\x1b" not in text


def test_missing_keys_and_junk_do_not_crash() -> None:
    bare = {"routes": [{"route": "r", "variants": [{"variant": "v"}, {"variant": "w"}]}]}
    text = render_table(bare, color=True)
    assert text.startswith("window ?\n\nroute r\n")
    assert row(text, "latency p50").split() == ["latency", "p50", "-", "-"]
    junk = {"window": "60s", "routes": [None, {"variants": "x"}], "upstreams": 5}
    assert "route ?" in render_table(junk, color=False)


def test_single_variant_has_no_differences() -> None:
    only = {"route": "solo", "baseline": "stable", "variants": [STABLE]}
    text = render_table(doc(routes=[only]), color=True)
    assert "route solo\n" in text and "baseline" not in text
    assert "(" not in text.split("route solo")[1]
    assert "\x1b" not in text
    assert row(text, "latency p50").split() == ["latency", "p50", "800", "ms"]


def test_error_class_rows_only_when_non_zero_somewhere() -> None:
    text = render_table(doc(), color=False)
    assert "  upstream_5xx" in text and "  timeout" in text
    assert "client_4xx" not in text and "rate_limited" not in text


def test_upstreams_table() -> None:
    second = {**UPSTREAM, "upstream": "sim-v2", "errors": errors(rate_limited=3)}
    text = render_table(doc(upstreams=[UPSTREAM, second]), color=True)
    table = text.split("\n\nupstreams\n")[1].split("\n\n")[0]
    lines = table.splitlines()
    assert lines[0].split() == ["sim-v1", "sim-v2"]
    assert lines[1].split() == ["requests", "1,000", "1,000"]
    assert row(table, "  rate_limited").split() == ["rate_limited", "0.00%", "0.30%"]
    assert "(" not in table and "\x1b" not in table  # no baseline among upstreams


def test_width_aware_alignment_and_escaped_names() -> None:
    wide = {**CANARY, "variant": "カナリア"}  # eight terminal columns, four characters
    evil = {"route": "r\x1b[2J", "baseline": "stable", "variants": [STABLE, wide]}
    text = render_table(doc(routes=[evil]), color=False)
    assert "\x1b" not in text and "route r\\x1b[2J" in text
    header, requests = text.splitlines()[3:5]
    # Right edges line up on screen: the header's last cell ends where the value does.
    assert header.endswith("カナリア")
    assert len(header) + 4 == len(requests.rstrip()[: requests.rindex("100") + 3])
