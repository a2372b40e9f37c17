"""Route ``match`` trees: operators, sources, coercion, combinators, route order, explain."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from turnout.config import config_from_mapping
from turnout.config.match import Match
from turnout.config.model import Config
from turnout.exceptions import NoRouteMatched
from turnout.routing import RequestView, Router, bucket
from turnout.routing.predicates import compile_match
from turnout.routing.request import as_text

UPSTREAMS = [{"name": "up", "base_url": "http://upstream.test/v1"}]


def view(
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    query: str = "",
    path: str = "/v1/chat/completions",
) -> RequestView:
    return RequestView(path, CIMultiDict(headers or {}), dict(body or {}), query)


def matches(match: dict[str, Any], v: RequestView) -> bool:
    return compile_match(Match.model_validate(match)).test(v)


def config(routes: list[dict[str, Any]]) -> Config:
    return config_from_mapping({"upstreams": UPSTREAMS, "routes": routes})


def simple_route(name: str, match: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "variants": [{"name": "only", "upstream": "up"}], **extra}
    if match is not None:
        r["match"] = match
    return r


# --- every operator on every source --------------------------------------------------------------

VALUE = "/gold-tier-7"

# (attribute, a request carrying VALUE there, a request without it)
SOURCES: list[tuple[str, RequestView, RequestView]] = [
    ("header:x-tier", view({"x-tier": VALUE}), view({"x-other": VALUE})),
    ("header:X-Tier", view({"X-TIER": VALUE}), view()),
    ("query:tier", view(query=urlencode({"tier": VALUE, "x": "1"})), view(query="x=1")),
    ("cookie:tier", view({"cookie": f"a=1; tier={VALUE}"}), view({"cookie": "a=1"})),
    ("body:tier", view(body={"tier": VALUE}), view(body={"other": VALUE})),
    (
        "body:metadata.tier",
        view(body={"metadata": {"tier": VALUE}}),
        view(body={"metadata": {"other": VALUE}, "tier": VALUE}),
    ),
    ("path", view(path=VALUE), None),  # type: ignore[list-item]
]

OPERATORS: list[tuple[dict[str, Any], bool]] = [
    ({"equals": VALUE}, True),
    ({"equals": "/gold"}, False),
    ({"in": ["x", VALUE]}, True),
    ({"in": ["x", "/gold"]}, False),
    ({"prefix": "/gold"}, True),
    ({"prefix": "gold"}, False),
    ({"regex": r"tier-\d"}, True),  # searched anywhere
    ({"regex": r"^tier"}, False),
    ({"regex": r"^/GOLD"}, False),  # case-sensitive
    ({"exists": True}, True),
    ({"exists": False}, False),
]


@pytest.mark.parametrize(("attr", "present", "absent"), SOURCES, ids=[s[0] for s in SOURCES])
@pytest.mark.parametrize(("op", "expected"), OPERATORS, ids=[str(o[0]) for o in OPERATORS])
def test_operator_on_source(
    attr: str,
    present: RequestView,
    absent: RequestView | None,
    op: dict[str, Any],
    expected: bool,
) -> None:
    assert matches({"attr": attr, **op}, present) is expected
    if absent is not None:
        # Absent: only `exists: false` holds.
        assert matches({"attr": attr, **op}, absent) is (op == {"exists": False})


NUMERIC: list[tuple[dict[str, Any], bool]] = [
    ({"gt": 41}, True),
    ({"gt": 42}, False),
    ({"gte": 42}, True),
    ({"gte": 42.5}, False),
    ({"lt": 43}, True),
    ({"lt": 42}, False),
    ({"lte": 42}, True),
    ({"lte": 41.99}, False),
]

NUMERIC_SOURCES = [
    ("header:x-n", lambda s: view({"x-n": s})),
    ("query:n", lambda s: view(query=urlencode({"n": s}))),
    ("cookie:n", lambda s: view({"cookie": f"n={s}"})),
    ("body:n", lambda s: view(body={"n": s})),
    ("body:meta.n", lambda s: view(body={"meta": {"n": s}})),
]


@pytest.mark.parametrize(("attr", "make"), NUMERIC_SOURCES, ids=[s[0] for s in NUMERIC_SOURCES])
@pytest.mark.parametrize(("op", "expected"), NUMERIC, ids=[str(o[0]) for o in NUMERIC])
def test_numeric_operator_on_source(
    attr: str, make: Any, op: dict[str, Any], expected: bool
) -> None:
    for text in ("42", "42.0", "4.2e1"):
        assert matches({"attr": attr, **op}, make(text)) is expected, text
    assert matches({"attr": attr, **op}, view()) is False


@pytest.mark.parametrize(("op", "expected"), NUMERIC, ids=[str(o[0]) for o in NUMERIC])
def test_numeric_operator_on_json_numbers(op: dict[str, Any], expected: bool) -> None:
    assert matches({"attr": "body:n", **op}, view(body={"n": 42})) is expected
    assert matches({"attr": "body:n", **op}, view(body={"n": 42.0})) is expected


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize(
    "value", ["abc", "", "42abc", "0x2a", True, False, None, [42], {"n": 42}, "nan"]
)
def test_numeric_operators_are_false_on_non_numbers(op: str, value: Any) -> None:
    # Booleans are not numbers, though Python says True == 1; NaN compares false.
    for bound in (-1e9, 0, 1, 1e9):
        assert matches({"attr": "body:n", op: bound}, view(body={"n": value})) is False
    if isinstance(value, str):
        assert matches({"attr": "header:x-n", op: 0}, view({"x-n": value})) is False


def test_numeric_comparison_is_numeric_not_lexical() -> None:
    assert matches({"attr": "header:x-n", "gt": 9}, view({"x-n": "10"}))
    assert not matches({"attr": "header:x-n", "lt": 9}, view({"x-n": "10"}))
    assert matches({"attr": "header:x-n", "gt": -1.5}, view({"x-n": "-1"}))
    assert matches({"attr": "body:n", "lt": 0.5}, view(body={"n": 0.25}))


def test_path_numeric_and_exists() -> None:
    assert matches({"attr": "path", "exists": True}, view())
    assert not matches({"attr": "path", "exists": False}, view())
    assert not matches({"attr": "path", "gt": 0}, view())
    assert matches({"attr": "path", "equals": "/v1/embeddings"}, view(path="/v1/embeddings"))


# --- sources in detail ---------------------------------------------------------------------------


def test_header_names_are_case_insensitive() -> None:
    for attr in ("header:x-tier", "header:X-Tier", "header:X-TIER"):
        for sent in ("x-tier", "X-Tier", "X-TIER"):
            assert matches({"attr": attr, "equals": "gold"}, view({sent: "gold"}))
    # Values are not case-folded.
    assert not matches({"attr": "header:x-tier", "equals": "gold"}, view({"x-tier": "Gold"}))


def test_query_details() -> None:
    # First value wins for a repeated parameter; blank values are kept; %-escapes decoded.
    assert matches({"attr": "query:q", "equals": "a"}, view(query="q=a&q=b"))
    assert matches({"attr": "query:q", "exists": True}, view(query="q="))
    assert matches({"attr": "query:q", "equals": ""}, view(query="q="))
    assert matches({"attr": "query:q", "equals": "a b/é"}, view(query="q=a+b%2F%C3%A9"))
    assert matches({"attr": "query:q", "exists": False}, view(query=""))


def test_cookie_details() -> None:
    assert matches({"attr": "cookie:s", "equals": "x"}, view({"cookie": "a=1; s=x; b=2"}))
    assert matches({"attr": "cookie:s", "equals": "x y"}, view({"cookie": 's="x y"'}))
    # An odd or unparsable Cookie header is never an error.
    for odd in ("s=x; \x00;;==", "bad cookie; s=x", '"', "=;=;", "s"):
        assert isinstance(
            matches({"attr": "cookie:s", "exists": True}, view({"cookie": odd})), bool
        )
    assert matches({"attr": "cookie:s", "exists": False}, view())


def test_body_walks_only_through_objects() -> None:
    m = {"attr": "body:a.b.c", "equals": "x"}
    assert matches(m, view(body={"a": {"b": {"c": "x"}}}))
    assert not matches(m, view(body={"a": {"b": "c"}}))
    assert not matches(m, view(body={"a": [{"b": {"c": "x"}}]}))
    assert not matches(m, view(body={"a": None}))
    assert not matches(m, view(body={"a.b.c": "x"}))


def test_json_null_counts_as_absent_but_empty_containers_exist() -> None:
    assert matches({"attr": "body:x", "exists": False}, view(body={"x": None}))
    assert matches({"attr": "body:x", "exists": True}, view(body={"x": {}}))
    assert matches({"attr": "body:x", "exists": True}, view(body={"x": []}))
    assert matches({"attr": "body:x", "exists": True}, view(body={"x": ""}))
    assert matches({"attr": "header:x", "exists": True}, view({"x": ""}))


# --- coercion through as_text --------------------------------------------------------------------


def test_as_text() -> None:
    assert as_text("42") == "42"
    assert as_text("") == ""
    assert as_text(42) == "42"
    assert as_text(-7) == "-7"
    assert as_text(10**20) == "100000000000000000000"
    assert as_text(True) == "true"
    assert as_text(False) == "false"
    assert as_text(1.5) == "1.5"
    # Floats are Python's repr: the caveat documented in docs/hashing.md.
    assert as_text(42.0) == "42.0"
    assert as_text(1e16) == "1e+16"
    assert as_text(1e-7) == "1e-07"
    assert as_text(0.1) == "0.1"
    for no_text in (None, [], [1], {}, {"a": 1}):
        assert as_text(no_text) is None


@pytest.mark.parametrize(
    ("value", "want", "expected"),
    [
        (42, "42", True),
        (42, 42, True),
        ("42", 42, True),
        (42, "42.0", False),
        (42.0, 42, False),  # "42.0" != "42"
        (42.0, 42.0, True),
        (1.5, "1.5", True),
        (True, "true", True),
        (True, True, True),
        ("true", True, True),
        (False, "false", True),
        (True, "True", False),
        (True, 1, False),  # a boolean is not the number 1
        (1, True, False),
        (None, "None", False),
        (None, "null", False),
        ([1], "[1]", False),
        ({"a": 1}, "{'a': 1}", False),
        ("", "", True),
    ],
)
def test_equals_coerces_through_text(value: Any, want: Any, expected: bool) -> None:
    assert matches({"attr": "body:v", "equals": want}, view(body={"v": value})) is expected
    assert matches({"attr": "body:v", "in": [want]}, view(body={"v": value})) is expected


def test_header_text_equals_config_numbers_and_booleans() -> None:
    assert matches({"attr": "header:x-n", "equals": 42}, view({"x-n": "42"}))
    assert matches({"attr": "header:x-b", "equals": True}, view({"x-b": "true"}))
    assert matches({"attr": "header:x-b", "in": [False, 1]}, view({"x-b": "false"}))
    assert matches({"attr": "header:x-b", "in": [False, 1]}, view({"x-b": "1"}))


def test_prefix_and_regex_see_the_text_form() -> None:
    assert matches({"attr": "body:n", "prefix": "4"}, view(body={"n": 42}))
    assert matches({"attr": "body:b", "regex": "^tr"}, view(body={"b": True}))
    assert matches({"attr": "body:f", "regex": r"\.0$"}, view(body={"f": 42.0}))
    assert not matches({"attr": "body:o", "prefix": ""}, view(body={"o": {"a": 1}}))
    assert not matches({"attr": "body:o", "regex": ""}, view(body={"o": [1]}))
    assert matches({"attr": "body:o", "prefix": ""}, view(body={"o": ""}))


# --- combinators ---------------------------------------------------------------------------------

GOLD = {"attr": "header:x-tier", "equals": "gold"}
EU = {"attr": "body:metadata.region", "prefix": "eu-"}
BIG = {"attr": "query:n", "gte": 10}


@pytest.mark.parametrize(
    ("headers", "body", "query", "gold", "eu", "big"),
    [
        ({"x-tier": "gold"}, {"metadata": {"region": "eu-west"}}, "n=10", True, True, True),
        ({"x-tier": "gold"}, {"metadata": {"region": "us-east"}}, "n=1", True, False, False),
        ({"x-tier": "free"}, {"metadata": {"region": "eu-west"}}, "n=11", False, True, True),
        ({"x-tier": "free"}, {}, "", False, False, False),
    ],
)
def test_all_any_not(
    headers: dict[str, str], body: dict[str, Any], query: str, gold: bool, eu: bool, big: bool
) -> None:
    v = view(headers, body, query)
    assert (matches(GOLD, v), matches(EU, v), matches(BIG, v)) == (gold, eu, big)
    assert matches({"all": [GOLD, EU]}, v) is (gold and eu)
    assert matches({"any": [GOLD, EU]}, v) is (gold or eu)
    assert matches({"not": GOLD}, v) is (not gold)
    assert matches({"all": [GOLD, EU, BIG]}, v) is (gold and eu and big)
    assert matches({"any": [{"not": GOLD}, BIG]}, v) is ((not gold) or big)
    nested = {"any": [{"all": [GOLD, EU]}, {"all": [{"not": GOLD}, {"not": EU}]}]}
    assert matches(nested, v) is ((gold and eu) or (not gold and not eu))
    assert matches({"not": {"not": {"all": [GOLD, EU]}}}, v) is (gold and eu)
    assert matches({"all": [{"any": [GOLD, EU]}, {"not": BIG}]}, v) is ((gold or eu) and not big)


def test_empty_combinators() -> None:
    v = view()
    assert matches({"all": []}, v) is True
    assert matches({"any": []}, v) is False
    assert matches({"not": {"all": []}}, v) is False


def test_deeply_nested_tree() -> None:
    m: dict[str, Any] = GOLD
    for _ in range(40):
        m = {"not": {"all": [m]}}
    assert matches(m, view({"x-tier": "gold"})) is True  # even number of negations
    assert matches({"not": m}, view({"x-tier": "gold"})) is False


# --- route order ---------------------------------------------------------------------------------


def tiered_router(catch_all: bool = True) -> Router:
    routes = [
        simple_route("gold", {"attr": "header:x-tier", "equals": "gold"}),
        simple_route("paid", {"attr": "header:x-tier", "in": ["gold", "silver"]}),
        simple_route("eu", {"attr": "body:metadata.region", "prefix": "eu-"}),
    ]
    if catch_all:
        routes.append(simple_route("default"))
    return Router(config(routes))


def test_first_matching_route_wins() -> None:
    router = tiered_router()
    region = {"metadata": {"region": "eu-west"}}
    assert router.match(view({"x-tier": "gold"}, region)).name == "gold"
    assert router.match(view({"x-tier": "silver"}, region)).name == "paid"
    assert router.match(view({"x-tier": "free"}, region)).name == "eu"
    assert router.match(view({"x-tier": "free"})).name == "default"
    assert router.decide(view({"x-tier": "silver"})).route.name == "paid"


def test_no_route_matched() -> None:
    router = tiered_router(catch_all=False)
    with pytest.raises(NoRouteMatched) as info:
        router.decide(view({"x-tier": "free"}))
    assert (info.value.status, info.value.code) == (404, "no_route")
    with pytest.raises(NoRouteMatched):
        router.match(view())


# --- explain -------------------------------------------------------------------------------------


def test_explain_names_the_route_the_failed_condition_and_the_bucket() -> None:
    cfg = config(
        [
            simple_route("gold", {"all": [GOLD, EU]}),
            {
                "name": "split",
                "match": {"attr": "header:x-tier", "in": ["gold", "silver"]},
                "variants": [
                    {"name": "control", "upstream": "up", "weight": 90},
                    {"name": "canary", "upstream": "up", "weight": 10},
                ],
            },
        ]
    )
    v = view({"x-tier": "gold", "x-user-id": "user-7"}, {"metadata": {"region": "us-1"}})
    lines = Router(cfg).explain(v)
    text = "\n".join(lines)
    assert "route 'gold': does not match" in text
    assert "✓ header:x-tier equals 'gold' (value: 'gold')" in text
    assert "✗ body:metadata.region starts with 'eu-' (value: 'us-1')" in text
    assert "route 'split': matches" in text
    b = bucket("split", "user-7")
    assert f"bucket {b} of 10000" in text
    assert "header:x-user-id='user-7'" in text
    assert "control [0, 9000), canary [9000, 10000)" in text
    want = "canary" if b >= 9000 else "control"
    assert lines[-1] == f"→ route 'split', variant '{want}'"


def test_explain_absent_value_random_forced_and_errors() -> None:
    cfg = config(
        [
            simple_route("gold", GOLD),
            simple_route("rest", allow_override=True),
        ]
    )
    router = Router(cfg, rand=lambda n: 1234)
    text = "\n".join(router.explain(view()))
    assert "✗ header:x-tier equals 'gold' (value: absent)" in text
    assert "route 'rest': no match block" in text
    assert "bucket 1234 of 10000, drawn at random" in text
    text = "\n".join(router.explain(view({"x-turnout-variant": "only"})))
    assert "forced by the x-turnout-variant header" in text
    text = "\n".join(router.explain(view({"x-turnout-variant": "nope"})))
    assert "→ error:" in text and "nope" in text
    text = "\n".join(Router(config([simple_route("gold", GOLD)])).explain(view()))
    assert "route 'gold': does not match" in text
    assert "→ error: no route matches" in text


def test_explain_agrees_with_test() -> None:
    m = {"any": [{"all": [GOLD, {"not": EU}]}, BIG]}
    pred = compile_match(Match.model_validate(m))
    for v in [
        view({"x-tier": "gold"}),
        view({"x-tier": "gold"}, {"metadata": {"region": "eu-1"}}),
        view(query="n=12"),
        view(),
    ]:
        ok, lines = pred.explain(v)
        assert ok is pred.test(v)
        assert lines[0].startswith("✓ any" if ok else "✗ any")


# --- compiled predicates agree with a reference interpreter --------------------------------------

ATTRS = [
    "header:x-tier",
    "header:X-N",
    "query:q",
    "cookie:c",
    "body:user",
    "body:meta.tier",
    "path",
]
TEXTS = ["gold", "silver", "42", "4.5", "-3", "true", "abc", "1e2"]
SCALARS = [*TEXTS, "", 42, 4.5, -3, 0, True, False]
REGEXES = ["^g", r"\d", "ver$", r"4\.5", "^$", "[a-z]+", "E"]
BOUNDS = [-5.0, -3.0, 0.0, 4.5, 42.0, 100.0]


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    attr = st.sampled_from(ATTRS)
    op = st.one_of(
        st.builds(lambda v: {"equals": v}, st.sampled_from(SCALARS)),
        st.builds(lambda v: {"in": v}, st.lists(st.sampled_from(SCALARS), max_size=3)),
        st.builds(lambda v: {"prefix": v}, st.sampled_from(["", "g", "4", "-", "tr", "/v1"])),
        st.builds(lambda v: {"regex": v}, st.sampled_from(REGEXES)),
        st.builds(lambda v: {"exists": v}, st.booleans()),
        st.builds(
            lambda o, v: {o: v},
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            st.sampled_from(BOUNDS),
        ),
    )
    return st.builds(lambda a, o: {"attr": a, **o}, attr, op)


match_trees = st.recursive(
    _leaf(),
    lambda kids: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(kids, max_size=3)),
        st.builds(lambda c: {"any": c}, st.lists(kids, max_size=3)),
        st.builds(lambda c: {"not": c}, kids),
    ),
    max_leaves=8,
)

body_values = st.sampled_from([*SCALARS, None, [1], {"tier": "gold"}, 1e16])
requests = st.fixed_dictionaries(
    {
        "headers": st.dictionaries(
            st.sampled_from(["x-tier", "X-Tier", "x-n", "X-N", "x-other"]),
            st.sampled_from([*TEXTS, ""]),
            max_size=3,
        ),
        "query": st.dictionaries(st.sampled_from(["q", "r"]), st.sampled_from(TEXTS), max_size=2),
        "cookies": st.dictionaries(st.sampled_from(["c", "d"]), st.sampled_from(TEXTS), max_size=2),
        "body": st.dictionaries(
            st.sampled_from(["user", "meta", "other"]),
            st.one_of(
                body_values,
                st.dictionaries(st.sampled_from(["tier", "x"]), body_values, max_size=2),
            ),
            max_size=3,
        ),
        "path": st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "gold", "42"]),
    }
)


def ref_value(req: dict[str, Any], attr: str) -> Any:
    if attr == "path":
        return req["path"]
    source, _, name = attr.partition(":")
    if source == "header":
        found = [v for k, v in req["headers"].items() if k.lower() == name.lower()]
        return found[0] if found else None
    if source in ("query", "cookie"):
        return req["query" if source == "query" else "cookies"].get(name)
    node: Any = req["body"]
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def ref_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return None


def ref_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            return None
        return None if math.isnan(x) else x
    return None


def ref_eval(m: dict[str, Any], req: dict[str, Any]) -> bool:
    if "all" in m:
        return all(ref_eval(c, req) for c in m["all"])
    if "any" in m:
        return any(ref_eval(c, req) for c in m["any"])
    if "not" in m:
        return not ref_eval(m["not"], req)
    raw = ref_value(req, m["attr"])
    text = ref_text(raw)
    if "equals" in m:
        return text is not None and text == ref_text(m["equals"])
    if "in" in m:
        return text is not None and text in [ref_text(x) for x in m["in"]]
    if "prefix" in m:
        return text is not None and text.startswith(m["prefix"])
    if "regex" in m:
        return text is not None and re.search(m["regex"], text) is not None
    if "exists" in m:
        return (raw is not None) == m["exists"]
    x = ref_number(raw)
    if x is None:
        return False
    op, bound = next((k, v) for k, v in m.items() if k != "attr")
    return {"gt": x > bound, "gte": x >= bound, "lt": x < bound, "lte": x <= bound}[op]


def to_view(req: dict[str, Any]) -> RequestView:
    headers = CIMultiDict(req["headers"])
    if req["cookies"]:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in req["cookies"].items())
    return RequestView(req["path"], headers, req["body"], urlencode(req["query"]))


@settings(max_examples=400, deadline=None)
@given(match_trees, requests)
def test_compiled_predicates_agree_with_reference(m: dict[str, Any], req: dict[str, Any]) -> None:
    # Dict keys that differ only in case collapse to one header; keep the reference in step.
    lowered: dict[str, str] = {}
    for k, v in req["headers"].items():
        lowered.setdefault(k.lower(), v)
    req = {**req, "headers": lowered}
    pred = compile_match(Match.model_validate(m))
    v = to_view(req)
    assert pred.test(v) is ref_eval(m, req)
    assert pred.explain(v)[0] is ref_eval(m, req)


@settings(max_examples=100, deadline=None)
@given(st.lists(match_trees, min_size=1, max_size=4), requests)
def test_router_picks_the_first_route_the_reference_accepts(
    trees: list[dict[str, Any]], req: dict[str, Any]
) -> None:
    lowered: dict[str, str] = {}
    for k, v in req["headers"].items():
        lowered.setdefault(k.lower(), v)
    req = {**req, "headers": lowered}
    router = Router(config([simple_route(f"r{i}", t) for i, t in enumerate(trees)]))
    expected = next((f"r{i}" for i, t in enumerate(trees) if ref_eval(t, req)), None)
    v = to_view(req)
    if expected is None:
        with pytest.raises(NoRouteMatched):
            router.match(v)
    else:
        assert router.match(v).name == expected


def test_one_malformed_cookie_does_not_hide_the_others() -> None:
    for header in ("flag; s=x", "bad cookie; s=x", "expires=1; s=x", "s=x; s=y"):
        assert matches({"attr": "cookie:s", "equals": "x"}, view({"cookie": header})), header
