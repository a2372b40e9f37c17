"""Prometheus exposition: read back with a strict parser of the 0.0.4 text format."""

from __future__ import annotations

import math
import re
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import pytest

from turnout.observe.prometheus import CONTENT_TYPE, ERROR_CLASSES, render

# -- a strict parser of the text format ----------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_META = re.compile(rf"# (HELP|TYPE) ({_NAME}) (.*)")
_SAMPLE_START = re.compile(rf"({_NAME})(.*)")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = {"counter", "gauge", "summary", "histogram", "untyped"}

LabelSet = frozenset[tuple[str, str]]


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str = ""
    samples: dict[tuple[str, LabelSet], float] = field(default_factory=dict)


def _parse_labels(text: str) -> tuple[dict[str, str], str]:
    """Labels at the start of ``text`` (after the metric name); returns them and the rest."""
    if not text.startswith("{"):
        return {}, text
    labels: dict[str, str] = {}
    i = 1
    while text[i] != "}":
        m = _LABEL_NAME.match(text, i)
        assert m, f"bad label name at {text[i:]!r}"
        name = m.group()
        i = m.end()
        assert text[i : i + 2] == '="', f'expected =" after {name}'
        i += 2
        value = []
        while text[i] != '"':
            if text[i] == "\\":
                escaped = text[i + 1]
                assert escaped in '\\"n', f"bad escape \\{escaped}"
                value.append("\n" if escaped == "n" else escaped)
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        i += 1
        assert name not in labels, f"label {name} twice"
        labels[name] = "".join(value)
        if text[i] == ",":
            i += 1
        else:
            assert text[i] == "}", f"expected , or }} at {text[i:]!r}"
    return labels, text[i + 1 :]


def _family_of(sample: str, kind: str) -> tuple[str, str]:
    """(family name, suffix) of a sample name, per the family's type."""
    if kind == "summary":
        for suffix in ("_sum", "_count"):
            if sample.endswith(suffix):
                return sample[: -len(suffix)], suffix
    return sample, ""


def parse(text: str) -> dict[str, Family]:
    """Every rule turnout's output must follow; any violation fails the assertion."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):
        assert line, "empty line"
        if line.startswith("#"):
            m = _META.fullmatch(line)
            assert m, f"stray comment {line!r}"
            what, name, rest = m.groups()
            fam = families.setdefault(name, Family(name))
            if what == "HELP":
                assert not fam.help, f"HELP twice for {name}"
                assert "\n" not in rest
                fam.help = rest
            else:
                assert not fam.kind, f"TYPE twice for {name}"
                assert rest in _TYPES, rest
                assert not fam.samples, f"TYPE after samples for {name}"
                fam.kind = rest
            current = fam
            continue
        m = _SAMPLE_START.fullmatch(line)
        assert m, line
        sample_name, rest = m.groups()
        labels, rest = _parse_labels(rest)
        assert rest.startswith(" ") and " " not in rest[1:], f"value or timestamp: {line!r}"
        value = float(rest[1:])
        assert not math.isnan(value), f"NaN in {line!r}"
        assert current is not None and current.kind, f"sample before TYPE: {line!r}"
        base, suffix = _family_of(sample_name, current.kind)
        assert base == current.name, f"{sample_name} outside its family block"
        if current.kind == "summary":
            assert ("quantile" in labels) == (suffix == ""), line
        key = (suffix, frozenset(labels.items()))
        assert key not in current.samples, f"duplicate sample {line!r}"
        current.samples[key] = value
    for fam in families.values():
        assert fam.help and fam.kind, f"{fam.name} lacks HELP or TYPE"
    return families


def value(fams: dict[str, Family], family: str, suffix: str = "", /, **labels: str) -> float | None:
    return fams[family].samples.get((suffix, frozenset(labels.items())))


# -- input ---------------------------------------------------------------------------------


def pct(p50: float | None, p95: float | None, p99: float | None, mean: float | None) -> Any:
    return {"p50": p50, "p95": p95, "p99": p99, "mean": mean}


def series(requests: int = 1200, **over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "requests": requests,
        "throughput_rps": 20.6,
        "in_flight": 3,
        "errors": {
            "client_4xx": 1,
            "rate_limited": 0,
            "upstream_5xx": 2,
            "timeout": 0,
            "connection": 0,
            "upstream_error": 1,
        },
        "error_rate": 0.0033,
        "latency_ms": pct(812.0, 1900.2, 2500.0, 901.3),
        "overhead_ms": pct(0.21, 0.4, 0.9, 0.25),
        "ttft_ms": pct(120.0, 300.0, 410.0, 140.0),
        "output_tokens_per_s": pct(55.0, 80.0, 90.0, 56.0),
        "tokens": {"input": 50000, "output": 120000},
        "cost_usd": 1.234,
        "cost_per_request_usd": 0.00103,
    }
    s.update(over)
    return s


def stats(window: str = "cumulative", **over: Any) -> dict[str, Any]:
    thumbs = {"count": 40, "mean": 0.7, "ci95": [0.55, 0.83], "is_rate": True}
    doc: dict[str, Any] = {
        "window": window,
        "window_seconds": 58.2,
        "generated_at": 1795563963.1,
        "workers": 2,
        "routes": [
            {
                "route": "main",
                "baseline": "stable",
                "variants": [
                    {"variant": "stable", **series(), "feedback": {"thumbs_up": thumbs}},
                    {"variant": "canary", **series(130), "feedback": {}},
                ],
            }
        ],
        "upstreams": [{"upstream": "sim-v1", **series(1330)}],
        "request_log": {"written": 1234, "dropped": 5},
    }
    doc.update(over)
    return doc


FAMILIES = {
    "turnout_requests_total": "counter",
    "turnout_errors_total": "counter",
    "turnout_in_flight": "gauge",
    "turnout_request_duration_seconds": "summary",
    "turnout_overhead_seconds": "summary",
    "turnout_time_to_first_token_seconds": "summary",
    "turnout_output_tokens_per_second": "summary",
    "turnout_tokens_total": "counter",
    "turnout_cost_usd_total": "counter",
    "turnout_absorbed_errors_total": "counter",
    "turnout_retries_total": "counter",
    "turnout_fallbacks_total": "counter",
    "turnout_feedback_count": "gauge",
    "turnout_feedback_mean": "gauge",
    "turnout_upstream_requests_total": "counter",
    "turnout_upstream_errors_total": "counter",
    "turnout_upstream_in_flight": "gauge",
    "turnout_upstream_request_duration_seconds": "summary",
    "turnout_upstream_overhead_seconds": "summary",
    "turnout_upstream_time_to_first_token_seconds": "summary",
    "turnout_upstream_output_tokens_per_second": "summary",
    "turnout_upstream_tokens_total": "counter",
    "turnout_upstream_cost_usd_total": "counter",
    "turnout_upstream_ejected": "gauge",
    "turnout_shadow_requests_total": "counter",
    "turnout_shadow_errors_total": "counter",
    "turnout_shadow_in_flight": "gauge",
    "turnout_shadow_request_duration_seconds": "summary",
    "turnout_shadow_overhead_seconds": "summary",
    "turnout_shadow_time_to_first_token_seconds": "summary",
    "turnout_shadow_output_tokens_per_second": "summary",
    "turnout_shadow_tokens_total": "counter",
    "turnout_shadow_cost_usd_total": "counter",
    "turnout_shadow_mirror_total": "counter",
    "turnout_shadow_pairs_total": "counter",
    "turnout_shadow_disagreements_total": "counter",
    "turnout_shadow_agreement_mean": "gauge",
    "turnout_request_log_written_total": "counter",
    "turnout_request_log_dropped_total": "counter",
    "turnout_workers": "gauge",
}


# -- tests ---------------------------------------------------------------------------------


def test_every_family_once_with_help_and_type() -> None:
    fams = parse(render(stats(), stats("60s")))
    assert {name: fam.kind for name, fam in fams.items()} == FAMILIES
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_empty_stats_still_declare_every_family() -> None:
    empty = stats(routes=[], upstreams=[])
    fams = parse(render(empty, empty))
    assert set(fams) == set(FAMILIES)
    assert all(not fams[n].samples for n in FAMILIES if n.startswith("turnout_upstream"))


def test_counters_and_gauges_for_a_known_input() -> None:
    fams = parse(render(stats(), stats("60s")))
    v = {"route": "main", "variant": "stable"}
    c = {"route": "main", "variant": "canary"}
    assert value(fams, "turnout_requests_total", **v) == 1200
    assert value(fams, "turnout_requests_total", **c) == 130
    assert value(fams, "turnout_in_flight", **v) == 3
    assert value(fams, "turnout_tokens_total", **v, direction="input") == 50000
    assert value(fams, "turnout_tokens_total", **v, direction="output") == 120000
    assert value(fams, "turnout_cost_usd_total", **v) == 1.234
    assert value(fams, "turnout_feedback_count", **v, name="thumbs_up") == 40
    assert value(fams, "turnout_feedback_mean", **v, name="thumbs_up") == 0.7
    assert len(fams["turnout_feedback_count"].samples) == 1  # canary has no feedback
    assert value(fams, "turnout_request_log_written_total") == 1234
    assert value(fams, "turnout_request_log_dropped_total") == 5
    assert value(fams, "turnout_workers") == 2
    u = {"upstream": "sim-v1"}
    assert value(fams, "turnout_upstream_requests_total", **u) == 1330
    assert value(fams, "turnout_upstream_request_duration_seconds", **u, quantile="0.5") == 0.812


def test_one_error_sample_per_class_zeros_included() -> None:
    fams = parse(render(stats(), stats("60s")))
    errors = fams["turnout_errors_total"].samples
    assert len(errors) == 2 * len(ERROR_CLASSES)
    v = {"route": "main", "variant": "canary"}
    got = {cls: value(fams, "turnout_errors_total", **v, **{"class": cls}) for cls in ERROR_CLASSES}
    assert got == {
        "client_4xx": 1,
        "rate_limited": 0,
        "upstream_5xx": 2,
        "timeout": 0,
        "connection": 0,
        "upstream_error": 1,
    }
    assert len(fams["turnout_upstream_errors_total"].samples) == len(ERROR_CLASSES)


def test_quantiles_from_the_window_sum_and_count_from_cumulative() -> None:
    window = stats("60s")
    window["routes"][0]["variants"][0]["latency_ms"] = pct(500.0, 1000.0, 2000.0, 600.0)
    window["routes"][0]["variants"][0]["requests"] = 7
    fams = parse(render(stats(), window))
    name = "turnout_request_duration_seconds"
    v = {"route": "main", "variant": "stable"}
    quantiles = {q: value(fams, name, **v, quantile=q) for q in ("0.5", "0.95", "0.99")}
    assert quantiles == {"0.5": 0.5, "0.95": 1.0, "0.99": 2.0}
    assert value(fams, name, "_count", **v) == 1200
    assert value(fams, name, "_sum", **v) == pytest.approx(901.3 * 1200 / 1000)


def test_milliseconds_become_seconds_without_float_noise() -> None:
    text = render(stats(), stats("60s"))
    # 0.21 / 1000 is 0.00020999999999999998 in binary floating point.
    assert (
        'turnout_overhead_seconds{route="main",variant="stable",quantile="0.5"} 0.00021\n' in text
    )
    assert "turnout_output_tokens_per_second" in text
    fams = parse(text)
    v = {"route": "main", "variant": "stable"}
    assert value(fams, "turnout_output_tokens_per_second", **v, quantile="0.99") == 90.0


def test_partial_distributions_need_their_own_count() -> None:
    # Without a count, only latency may use `requests`: TTFT covers streams only,
    # overhead requests that reached the upstream, tokens/s those with output.
    fams = parse(render(stats(), stats("60s")))
    v = {"route": "main", "variant": "stable"}
    for name in (
        "turnout_overhead_seconds",
        "turnout_time_to_first_token_seconds",
        "turnout_output_tokens_per_second",
    ):
        assert value(fams, name, "_count", **v) is None
        assert value(fams, name, "_sum", **v) is None
        assert value(fams, name, **v, quantile="0.5") is not None
    cum = stats()
    cum["routes"][0]["variants"][0]["ttft_ms"] = {**pct(1, 2, 3, 140.0), "count": 300}
    fams = parse(render(cum, stats("60s")))
    assert value(fams, "turnout_time_to_first_token_seconds", "_count", **v) == 300
    assert value(fams, "turnout_time_to_first_token_seconds", "_sum", **v) == pytest.approx(42.0)


def test_null_percentiles_are_omitted_not_nan() -> None:
    window = stats("60s")
    window["routes"][0]["variants"][1].update(
        requests=0, latency_ms=pct(None, None, None, None), ttft_ms=pct(None, None, None, None)
    )
    cum = stats()
    cum["routes"][0]["variants"][1].update(requests=0, latency_ms=pct(None, None, None, None))
    text = render(cum, window)
    assert "NaN" not in text and "None" not in text and "null" not in text
    fams = parse(text)
    c = {"route": "main", "variant": "canary"}
    name = "turnout_request_duration_seconds"
    for q in ("0.5", "0.95", "0.99"):
        assert value(fams, name, **c, quantile=q) is None
        assert value(fams, "turnout_time_to_first_token_seconds", **c, quantile=q) is None
    # No requests at all: an empty summary, which is 0 and 0, not missing.
    assert value(fams, name, "_count", **c) == 0
    assert value(fams, name, "_sum", **c) == 0


def test_non_finite_values_are_omitted_and_non_numbers_refused() -> None:
    cum = stats()
    cum["routes"][0]["variants"][0]["cost_usd"] = math.inf
    cum["routes"][0]["variants"][0]["in_flight"] = math.nan
    fams = parse(render(cum, stats("60s")))
    v = {"route": "main", "variant": "stable"}
    assert value(fams, "turnout_cost_usd_total", **v) is None
    assert value(fams, "turnout_in_flight", **v) is None
    cum["routes"][0]["variants"][0]["requests"] = "1200"
    with pytest.raises(TypeError, match="turnout_requests_total"):
        render(cum, stats("60s"))


def test_label_values_are_escaped() -> None:
    nasty_route = 'a\\b"c\nd'
    nasty_variant = 'v"1'
    doc = stats()
    doc["routes"][0]["route"] = nasty_route
    doc["routes"][0]["variants"][0]["variant"] = nasty_variant
    doc["routes"][0]["variants"][0]["feedback"] = {
        'say "hi"\\': doc["routes"][0]["variants"][0]["feedback"]["thumbs_up"]
    }
    text = render(doc, doc)
    assert 'route="a\\\\b\\"c\\nd",variant="v\\"1"' in text
    fams = parse(text)
    v = {"route": nasty_route, "variant": nasty_variant}
    assert value(fams, "turnout_requests_total", **v) == 1200
    assert value(fams, "turnout_feedback_count", **v, name='say "hi"\\') == 40


def test_labels_are_only_the_bounded_set() -> None:
    fams = parse(render(stats(), stats("60s")))
    allowed = {"route", "variant", "upstream", "class", "direction", "name", "quantile"}
    for fam in fams.values():
        for _, labels in fam.samples:
            assert {k for k, _ in labels} <= allowed
            if fam.name.startswith("turnout_upstream_"):
                assert "route" not in dict(labels) and "upstream" in dict(labels)


def test_series_only_in_the_window_get_quantiles_but_no_counters() -> None:
    window = stats("60s")
    window["routes"][0]["variants"].append({"variant": "new", **series(5)})
    fams = parse(render(stats(), window))
    n = {"route": "main", "variant": "new"}
    assert value(fams, "turnout_requests_total", **n) is None
    assert value(fams, "turnout_in_flight", **n) == 3
    assert value(fams, "turnout_request_duration_seconds", **n, quantile="0.99") == 2.5
    assert value(fams, "turnout_request_duration_seconds", "_count", **n) is None


def test_duplicate_series_keep_the_first() -> None:
    doc = stats()
    doc["routes"][0]["variants"].append({"variant": "stable", **series(1)})
    fams = parse(render(doc, deepcopy(doc)))  # the parser refuses duplicate samples
    assert value(fams, "turnout_requests_total", route="main", variant="stable") == 1200


def test_missing_sections_do_not_crash() -> None:
    bare: dict[str, Any] = {"routes": [{"route": "r", "variants": [{"variant": "v"}]}]}
    fams = parse(render(bare, {}))
    assert value(fams, "turnout_requests_total", route="r", variant="v") is None
    assert value(fams, "turnout_errors_total", route="r", variant="v", **{"class": "timeout"}) == 0
    assert value(fams, "turnout_workers") is None
    nameless: dict[str, Any] = {
        "routes": [{"variants": [series()]}, {"route": "r", "variants": [{"variant": 3}]}],
        "upstreams": [series()],
    }
    fams = parse(render(nameless, nameless))
    assert all(not fam.samples for name, fam in fams.items() if name != "turnout_workers")


def test_parser_catches_what_it_should() -> None:
    good = '# HELP x_total h\n# TYPE x_total counter\nx_total{a="1"} 1\n'
    parse(good)
    for bad in (
        good + 'x_total{a="1"} 2\n',  # duplicate
        good.replace('"1"', '"\\q"'),  # bad escape
        good + "# HELP x_total again\n",  # HELP twice
        'x_total{a="1"} 1\n',  # no TYPE
        good.replace(" 1\n", " NaN\n"),
        good + "# TYPE y gauge\n# HELP y h\ny 1\nx_total 3\n",  # family split
        good.replace(" 1\n", " 1 1700000000\n"),  # timestamps are not ours
    ):
        with pytest.raises(AssertionError):
            parse(bad)
