"""Which requests a shadow gets: percent, by key or random, match (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from turnout.config import config_from_mapping
from turnout.routing.bucketing import BUCKETS, bucket
from turnout.routing.request import RequestView
from turnout.shadow.plan import ShadowPlan, chosen, compile_shadows


def plan(**shadow: Any) -> ShadowPlan:
    config = config_from_mapping(
        {
            "upstreams": [{"name": "a", "base_url": "http://a"}],
            "routes": [
                {
                    "name": "r",
                    "variants": [{"name": "live", "upstream": "a"}],
                    "shadows": [{"name": "s", "upstream": "a", **shadow}],
                }
            ],
        }
    )
    (compiled,) = compile_shadows(config.routes[0])
    return compiled


VIEW = RequestView("/v1/chat/completions", {}, {})


def never() -> int:
    raise AssertionError("a keyed decision must not draw")


@given(st.text(min_size=1), st.integers(0, 100))
def test_by_key_is_a_function_of_the_key(key: str, percent: int) -> None:
    p = plan(percent=percent)
    first = chosen(p, VIEW, key, never)
    assert chosen(p, VIEW, key, never) == first
    assert first == (bucket("r\x1fshadow\x1fs", key) < percent * 100)


@given(st.text(min_size=1))
def test_nothing_at_zero_everything_at_a_hundred(key: str) -> None:
    assert not chosen(plan(percent=0), VIEW, key, never)
    assert chosen(plan(percent=100), VIEW, key, never)


def test_the_mirror_hash_is_independent_of_the_variant_hash() -> None:
    # Keys whose variant bucket is in the lowest 30%: about 30% of them are mirrored,
    # not all (as they would be if one hash decided both).
    p = plan(percent=30)
    keys = [f"user-{i}" for i in range(20_000) if bucket("r", f"user-{i}") < 3_000]
    share = sum(chosen(p, VIEW, k, never) for k in keys) / len(keys)
    assert 0.27 < share < 0.33


def test_without_a_key_or_by_random_it_draws() -> None:
    p = plan(percent=25)
    assert chosen(p, VIEW, None, lambda: 2_499)
    assert not chosen(p, VIEW, None, lambda: 2_500)
    r = plan(percent=25, by="random")
    assert chosen(r, VIEW, "k", lambda: 0) and not chosen(r, VIEW, "k", lambda: BUCKETS - 1)


def test_match_limits_the_requests() -> None:
    p = plan(match={"attr": "header:x-tier", "equals": "beta"})
    assert chosen(p, RequestView("/", {"x-tier": "beta"}, {}), "k", never)
    assert not chosen(p, RequestView("/", {"x-tier": "free"}, {}), "k", never)
