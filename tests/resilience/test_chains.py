from hypothesis import given
from hypothesis import strategies as st

from turnout.config import config_from_mapping
from turnout.resilience.chains import region_order
from turnout.snapshot import build_snapshot


def _config(**route: object) -> dict[str, object]:
    return {
        "upstreams": [
            {"name": "a-us", "base_url": "http://a-us/v1", "labels": {"region": "us"}},
            {"name": "a-eu", "base_url": "http://a-eu/v1", "labels": {"region": "eu"}},
            {
                "name": "b-us",
                "base_url": "http://b-us/v1",
                "labels": {"region": "us"},
                "timeouts": {"first_byte": 7},
            },
            {"name": "b-eu", "base_url": "http://b-eu/v1", "labels": {"region": "eu"}},
        ],
        "routes": [
            {
                "name": "r",
                "variants": [
                    {
                        "name": "v",
                        "upstream": ["a-us", "a-eu"],
                        "fallbacks": [{"upstream": ["b-us", "b-eu"], "model": "small"}],
                    }
                ],
                **route,
            }
        ],
    }


def _names(steps: tuple[object, ...]) -> list[str]:
    return [s.target.name for s in steps]  # type: ignore[attr-defined]


def test_without_region_preference_the_chain_is_in_config_order() -> None:
    snap = build_snapshot(config_from_mapping(_config()))
    chain = snap.policies["r"].chains["v"]
    assert _names(chain.steps(None)) == ["a-us", "a-eu", "b-us", "b-eu"]
    assert _names(chain.steps("eu")) == ["a-us", "a-eu", "b-us", "b-eu"]
    assert [s.fallback for s in chain.steps(None)] == [0, 0, 1, 1]
    assert chain.steps(None)[2].model == "small" and chain.steps(None)[0].model is None


def test_the_requests_region_comes_first_within_each_step() -> None:
    snap = build_snapshot(config_from_mapping(_config(region={"order": ["us"]})))
    chain = snap.policies["r"].chains["v"]
    assert _names(chain.steps("eu")) == ["a-eu", "a-us", "b-eu", "b-us"]
    assert _names(chain.steps(None)) == ["a-us", "a-eu", "b-us", "b-eu"]
    assert _names(chain.steps("unknown")) == ["a-us", "a-eu", "b-us", "b-eu"]


def test_route_timeouts_override_per_field() -> None:
    snap = build_snapshot(config_from_mapping(_config(timeouts={"idle": 3})))
    steps = snap.policies["r"].chains["v"].steps(None)
    b_us = steps[2].target
    assert b_us.idle_timeout == 3 and b_us.first_byte_timeout == 7
    assert snap.upstreams["b-us"].idle_timeout == 60  # the upstream itself is untouched


@given(
    regions=st.lists(st.sampled_from(["us", "eu", "ap", None]), max_size=8),
    first=st.sampled_from(["us", "eu", "ap", "xx", None]),
    order=st.lists(st.sampled_from(["us", "eu", "ap"]), unique=True),
)
def test_region_order_is_a_stable_permutation_with_the_request_region_first(
    regions: list[str | None], first: str | None, order: list[str]
) -> None:
    idx = region_order(regions, first, order)
    assert sorted(idx) == list(range(len(regions)))
    ranked = [regions[i] for i in idx]
    if first is not None and first in regions:
        n = regions.count(first)
        assert ranked[:n] == [first] * n
    # Among candidates of equal rank, config order is kept.
    for r in set(regions):
        same = [i for i in idx if regions[i] == r]
        assert same == sorted(same)
