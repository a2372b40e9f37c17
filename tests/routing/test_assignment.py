"""Variant assignment through ``Router.decide``: proportions, stickiness, ramps, salts,
missing keys and forced variants."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from turnout.config import config_from_mapping, config_from_text
from turnout.config.model import Config
from turnout.exceptions import ConfigError, GatewayError, InvalidRequest
from turnout.routing import BUCKETS, RequestView, Router, bucket

N_KEYS = 100_000
KEYS = [f"user-{i}" for i in range(N_KEYS)]
UPSTREAMS = [{"name": "up", "base_url": "http://upstream.test/v1"}]


def route(
    name: str = "split",
    weights: Sequence[float | None] = (50, 50),
    **extra: Any,
) -> dict[str, Any]:
    variants = []
    for i, w in enumerate(weights):
        v: dict[str, Any] = {"name": f"v{i}", "upstream": "up"}
        if w is not None:
            v["weight"] = w
        variants.append(v)
    return {"name": name, "variants": variants, **extra}


def config(*routes: dict[str, Any]) -> Config:
    return config_from_mapping({"upstreams": UPSTREAMS, "routes": list(routes)})


def view(
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    query: str = "",
    path: str = "/v1/chat/completions",
) -> RequestView:
    return RequestView(path, CIMultiDict(headers or {}), body or {}, query)


def user(key: str) -> RequestView:
    return view({"x-user-id": key})


def assignments(router: Router, keys: Sequence[str]) -> list[int]:
    """The variant index of each key, through the full decide path."""
    out = []
    for key in keys:
        d = router.decide(user(key))
        out.append(d.route.variants.index(d.variant))
    return out


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    if p == 0:
        return count == 0
    if p == 1:
        return count == n
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd + 1


# --- proportions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [
        [50, 50],
        [90, 10],
        [95, 5],
        [33.33, 33.33, 33.34],
        [0, 100],
        [100, 0],
        [99.99, 0.01],
        [10, 20, 30, 40],
    ],
)
def test_split_proportions_within_binomial_bounds(weights: list[float]) -> None:
    router = Router(config(route(weights=weights)))
    counts = Counter(assignments(router, KEYS))
    for i, w in enumerate(weights):
        p = w / 100
        assert within_binomial(counts[i], N_KEYS, p), (weights, i, counts[i], N_KEYS * p)


def test_single_variant_without_weight_takes_everything() -> None:
    router = Router(config(route(weights=[None])))
    assert set(assignments(router, KEYS[:5000])) == {0}


# --- stickiness ----------------------------------------------------------------------------------


def test_same_key_same_variant_on_repeated_decisions() -> None:
    router = Router(config(route(weights=[33.33, 33.33, 33.34])))
    first = assignments(router, KEYS[:2000])
    for _ in range(3):
        assert assignments(router, KEYS[:2000]) == first


def test_same_key_same_variant_across_routers_built_from_equal_configs() -> None:
    mapping = {"upstreams": UPSTREAMS, "routes": [route(weights=[20, 30, 50])]}
    yaml_text = """
upstreams:
  - {name: up, base_url: "http://upstream.test/v1"}
routes:
  - name: split
    variants:
      - {name: v0, upstream: up, weight: 20}
      - {name: v1, upstream: up, weight: 30}
      - {name: v2, upstream: up, weight: 50}
"""
    a = Router(config_from_mapping(mapping))
    b = Router(config_from_mapping(json.loads(json.dumps(mapping))))
    c = Router(config_from_text(yaml_text))
    keys = KEYS[:3000]
    assert assignments(a, keys) == assignments(b, keys) == assignments(c, keys)


def test_assignment_depends_only_on_the_key() -> None:
    router = Router(config(route(weights=[50, 50])))
    for key in KEYS[:300]:
        plain = router.decide(user(key))
        noisy = router.decide(
            view(
                {"x-user-id": key, "x-other": "1", "cookie": "a=b"},
                body={"model": "m", "messages": [], "user": "someone-else"},
                query="q=1",
                path="/v1/embeddings",
            )
        )
        assert (plain.variant.name, plain.bucket) == (noisy.variant.name, noisy.bucket)


def test_decision_bucket_is_the_contract_hash_of_salt_and_key() -> None:
    router = Router(config(route(name="checkout", weights=[50, 50])))
    for key in ["user-1", "日本語", "🙂", "x" * 500]:
        d = router.decide(user(key))
        assert d.bucket == bucket("checkout", key)
        assert d.key_source == "header:x-user-id"


# --- the monotone ramp ---------------------------------------------------------------------------


def canary_router(units: int, name: str = "ramp") -> Router:
    """Two variants, the canary (declared last) at ``units`` / 10,000."""
    return Router(config(route(name=name, weights=[(10_000 - units) / 100, units / 100])))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 9_999).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo + 1, 10_000))),
    st.lists(st.text(min_size=1), min_size=1, max_size=25),
)
def test_monotone_ramp_keys_stay_in_the_growing_canary(
    weights: tuple[int, int], keys: list[str]
) -> None:
    w1, w2 = weights  # in 0.01 steps
    small, large = canary_router(w1), canary_router(w2)
    for key in keys:
        if small.decide(user(key)).variant.name == "v1":
            assert large.decide(user(key)).variant.name == "v1", (key, w1, w2)


def test_monotone_ramp_sets_are_nested_over_a_rollout() -> None:
    keys = KEYS[:20_000]
    previous: set[str] = set()
    for percent in [0, 0.01, 1, 5, 10, 25, 50, 75, 99.99, 100]:
        router = canary_router(round(percent * 100))
        canary = {k for k, i in zip(keys, assignments(router, keys), strict=True) if i == 1}
        assert previous <= canary, percent
        assert within_binomial(len(canary), len(keys), percent / 100)
        previous = canary
    assert previous == set(keys)


def test_last_of_three_variants_grows_monotonically_but_the_others_reshuffle() -> None:
    """With 3+ variants only the last one's membership is monotone: shrinking the first two
    shifts the boundary between them, so keys move from v0 to v1 (docs/hashing.md)."""
    keys = KEYS[:20_000]
    before = assignments(Router(config(route(weights=[50, 50, 0]))), keys)
    after = assignments(Router(config(route(weights=[45, 45, 10]))), keys)
    moved = Counter((a, b) for a, b in zip(before, after, strict=True) if a != b)
    assert set(moved) <= {(0, 1), (0, 2), (1, 2)}
    assert moved[(0, 1)] > 0  # v0 → v1: not a pure ramp for the first two variants
    assert not any(a == 2 and b != 2 for a, b in zip(before, after, strict=True))


# --- salts ---------------------------------------------------------------------------------------


def test_assignments_of_routes_with_different_salts_are_independent() -> None:
    pa, pb = [0.5, 0.5], [0.2, 0.3, 0.5]
    a = assignments(Router(config(route(name="checkout", weights=[50, 50]))), KEYS)
    b = assignments(Router(config(route(name="search", weights=[20, 30, 50]))), KEYS)
    table = Counter(zip(a, b, strict=True))
    chi2 = 0.0
    for i, p in enumerate(pa):
        for j, q in enumerate(pb):
            expected = N_KEYS * p * q
            assert within_binomial(table[(i, j)], N_KEYS, p * q), (i, j, table[(i, j)])
            chi2 += (table[(i, j)] - expected) ** 2 / expected
    # Total counts are fixed by the weights (checked above); independence is the chi-square
    # of the contingency table with (2-1)*(3-1) = 2 degrees of freedom. P(chi2 > 30) ~ 3e-7.
    assert chi2 < 30, chi2


def test_same_split_with_different_explicit_salts_agrees_about_half_the_time() -> None:
    a = assignments(Router(config(route(name="r", salt="exp-1"))), KEYS)
    b = assignments(Router(config(route(name="r", salt="exp-2"))), KEYS)
    agree = sum(x == y for x, y in zip(a, b, strict=True))
    assert within_binomial(agree, N_KEYS, 0.5)


def test_salt_defaults_to_the_route_name() -> None:
    keys = KEYS[:5000]
    default = Router(config(route(name="checkout", weights=[30, 70])))
    explicit = Router(config(route(name="renamed", salt="checkout", weights=[30, 70])))
    assert assignments(default, keys) == assignments(explicit, keys)
    assert default.routes[0].prefix == b"checkout\x00"


def test_explicit_salt_changes_assignments() -> None:
    keys = KEYS[:5000]
    default = assignments(Router(config(route(name="checkout"))), keys)
    salted = assignments(Router(config(route(name="checkout", salt="checkout-2"))), keys)
    assert default != salted
    r = Router(config(route(name="checkout", salt="checkout-2")))
    assert r.decide(user("u1")).bucket == bucket("checkout-2", "u1")


def test_routes_sharing_a_salt_assign_alike() -> None:
    """A shared salt is how two routes run one coordinated experiment."""
    keys = KEYS[:5000]
    cfg = config(
        route(name="chat", salt="exp", match={"attr": "path", "prefix": "/v1/chat"}),
        route(name="other", salt="exp"),
    )
    router = Router(cfg)
    for key in keys:
        chat = router.decide(view({"x-user-id": key}, path="/v1/chat/completions"))
        other = router.decide(view({"x-user-id": key}, path="/v1/completions"))
        assert (chat.route.name, other.route.name) == ("chat", "other")
        assert chat.bucket == other.bucket
        assert chat.variant.name == other.variant.name


# --- determinism across processes ----------------------------------------------------------------

_CHILD = """
import json, sys
from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router
router = Router(config_from_mapping(json.loads(sys.argv[1])))
out = []
for i in range(1000):
    d = router.decide(RequestView("/", {"x-user-id": f"user-{i}"}, {}))
    out.append([d.variant.name, d.bucket])
print(json.dumps(out))
"""


def test_assignments_are_identical_across_processes_and_hash_seeds() -> None:
    mapping = {"upstreams": UPSTREAMS, "routes": [route(weights=[10, 20, 70])]}
    router = Router(config_from_mapping(mapping))
    local = []
    for i in range(1000):
        d = router.decide(user(f"user-{i}"))
        local.append([d.variant.name, d.bucket])
    procs = []
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(mapping)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out) == local


# --- missing key ---------------------------------------------------------------------------------


def sticky_router(
    on_missing: str = "random",
    fallback: Sequence[str] = ("cookie:session", "body:user"),
    rand: Callable[[int], int] | None = None,
    weights: Sequence[float] = (50, 50),
) -> Router:
    sticky = {"key": "header:x-user-id", "fallback": list(fallback), "on_missing": on_missing}
    return Router(config(route(name="r", weights=weights, sticky=sticky)), rand=rand)


def test_fallback_attributes_are_tried_in_order() -> None:
    router = sticky_router()
    everything = view({"x-user-id": "h", "cookie": "session=c"}, body={"user": "b"})
    d = router.decide(everything)
    assert (d.key_source, d.bucket) == ("header:x-user-id", bucket("r", "h"))
    d = router.decide(view({"cookie": "session=c"}, body={"user": "b"}))
    assert (d.key_source, d.bucket) == ("cookie:session", bucket("r", "c"))
    d = router.decide(view(body={"user": "b"}))
    assert (d.key_source, d.bucket) == ("body:user", bucket("r", "b"))


def test_empty_key_counts_as_missing() -> None:
    router = sticky_router()
    d = router.decide(view({"x-user-id": ""}, body={"user": "b"}))
    assert (d.key_source, d.bucket) == ("body:user", bucket("r", "b"))


def test_key_text_of_json_values() -> None:
    router = sticky_router(fallback=["body:user"])
    assert router.decide(view(body={"user": 42})).bucket == bucket("r", "42")
    assert router.decide(view(body={"user": 42})).bucket == router.decide(user("42")).bucket
    assert router.decide(view(body={"user": True})).bucket == bucket("r", "true")
    assert router.decide(view(body={"user": 1.5})).bucket == bucket("r", "1.5")
    # Objects, arrays and null have no text form: they count as missing.
    for missing in ({"id": 1}, [1, 2], None):
        assert router.decide(view(body={"user": missing})).key_source == "random"


def test_on_missing_random_uses_the_injected_rand() -> None:
    calls: list[int] = []

    def rand(n: int) -> int:
        calls.append(n)
        return 9_999

    router = sticky_router(rand=rand, weights=[90, 10])
    d = router.decide(view())
    assert calls == [BUCKETS]
    assert (d.key_source, d.bucket, d.variant.name) == ("random", 9_999, "v1")
    # A key present: rand is not consulted.
    router.decide(user("u"))
    assert calls == [BUCKETS]


def test_on_missing_random_distributes_by_weights() -> None:
    n = 20_000
    router = sticky_router(rand=random.Random(1234).randrange, weights=[20, 30, 50])
    counts = Counter(router.decide(view()).variant.name for _ in range(n))
    for name, p in [("v0", 0.2), ("v1", 0.3), ("v2", 0.5)]:
        assert within_binomial(counts[name], n, p), counts


def test_on_missing_random_never_picks_a_zero_weight_variant() -> None:
    values = iter(range(BUCKETS))
    router = sticky_router(rand=lambda n: next(values), weights=[0, 100])
    assert {router.decide(view()).variant.name for _ in range(BUCKETS)} == {"v1"}


def test_on_missing_reject_raises_missing_key() -> None:
    router = sticky_router(on_missing="reject")
    with pytest.raises(InvalidRequest) as info:
        router.decide(view({"x-other": "1"}, body={"user": None}))
    assert info.value.code == "missing_key"
    assert info.value.status == 400
    for attr in ("header:x-user-id", "cookie:session", "body:user"):
        assert attr in info.value.message
    # A fallback present is enough.
    assert router.decide(view(body={"user": "b"})).key_source == "body:user"


def test_default_sticky_key_is_the_user_header() -> None:
    router = Router(config(route(name="r")))
    d = router.decide(view({"X-User-Id": "abc"}))
    assert (d.key_source, d.bucket) == ("header:x-user-id", bucket("r", "abc"))


def test_key_with_undecodable_bytes_does_not_crash_the_router() -> None:
    # aiohttp turns the header bytes b"caf\xe9" (Latin-1 café) into "caf\udce9".
    router = sticky_router()
    try:
        d = router.decide(user("caf\udce9"))
    except GatewayError:
        return  # refusing the request (400) is acceptable
    # Hashing the raw bytes is acceptable too.
    assert d.bucket is not None


# --- forced variant ------------------------------------------------------------------------------


def override_router(allow: bool) -> Router:
    return Router(config(route(name="r", weights=[100, 0], allow_override=allow)))


def test_forced_variant_honoured_when_allowed() -> None:
    router = override_router(True)
    d = router.decide(view({"x-user-id": "u", "X-Turnout-Variant": "v1"}))
    assert (d.variant.name, d.key_source, d.bucket) == ("v1", "forced", None)
    # No key is needed when forced, even with on_missing: reject.
    strict = Router(
        config(
            route(name="r", allow_override=True, sticky={"on_missing": "reject"}),
        )
    )
    assert strict.decide(view({"x-turnout-variant": "v0"})).variant.name == "v0"


def test_forced_variant_ignored_when_not_allowed() -> None:
    router = override_router(False)
    d = router.decide(view({"x-user-id": "u", "x-turnout-variant": "v1"}))
    assert (d.variant.name, d.key_source) == ("v0", "header:x-user-id")
    # An unknown name is not an error either when overrides are off.
    d = router.decide(view({"x-user-id": "u", "x-turnout-variant": "nope"}))
    assert d.variant.name == "v0"


def test_empty_forced_variant_header_is_ignored() -> None:
    d = override_router(True).decide(view({"x-user-id": "u", "x-turnout-variant": ""}))
    assert (d.variant.name, d.key_source) == ("v0", "header:x-user-id")


def test_unknown_forced_variant_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        override_router(True).decide(view({"x-user-id": "u", "x-turnout-variant": "v9"}))
    assert info.value.code == "unknown_variant"
    assert info.value.status == 400
    assert "v9" in info.value.message


def test_segment_sends_matching_requests_to_its_variant_whatever_the_weights() -> None:
    segment = {"match": {"attr": "header:x-preview", "equals": "1"}, "variant": "v1"}
    router = Router(config(route(weights=(100, 0), segments=[segment])))
    for i in range(200):
        d = router.decide(view({"x-user-id": f"user-{i}", "x-preview": "1"}))
        assert (d.variant.name, d.key_source, d.bucket) == ("v1", "segment", None)
        assert d.key == f"user-{i}"
        assert router.decide(user(f"user-{i}")).variant.name == "v0"


def test_segments_are_tried_in_order_and_explained() -> None:
    segments = [
        {"match": {"attr": "header:x-tier", "equals": "gold"}, "variant": "v2"},
        {"match": {"attr": "header:x-tier", "exists": True}, "variant": "v1"},
    ]
    router = Router(config(route(weights=(100, 0, 0), segments=segments)))
    assert router.decide(view({"x-tier": "gold"})).variant.name == "v2"
    assert router.decide(view({"x-tier": "silver"})).variant.name == "v1"
    assert router.decide(view({})).variant.name == "v0"
    assert "segments" in router.explain(view({"x-tier": "gold"}))[-1]


def test_segment_naming_an_unknown_variant_is_refused_with_its_path() -> None:
    bad = {"match": {"attr": "header:x", "exists": True}, "variant": "nope"}
    with pytest.raises(ConfigError) as exc:
        config(route(segments=[bad]))
    assert "routes[0].segments[0].variant" in str(exc.value)
