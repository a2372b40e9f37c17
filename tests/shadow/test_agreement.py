"""Agreement tallies: known counts and intervals, exact merges, transport between processes."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.analysis.intervals import mean_interval, wilson_interval
from turnout.shadow.agreement import COUNTERS, ScoreStats, Tally, disagrees

# -- ScoreStats ----------------------------------------------------------------------


def stats_of(*values: float | None) -> ScoreStats:
    stats = ScoreStats()
    for value in values:
        stats.add(value)
    return stats


def test_binary_scores_read_as_a_rate_with_a_wilson_interval() -> None:
    view = stats_of(1.0, 0.0, 1.0, None).view()
    assert view == {
        "count": 3,
        "mean": pytest.approx(2 / 3),
        "ci95": list(wilson_interval(2, 3)),
        "is_rate": True,
        "not_applicable": 1,
    }


def test_other_scores_read_as_a_mean_with_a_t_interval() -> None:
    view = stats_of(0.5, 0.75, 1.0).view()
    assert view["is_rate"] is False
    assert view["mean"] == pytest.approx(0.75)
    assert view["ci95"] == pytest.approx(list(mean_interval(3, 2.25, 0.25 + 0.5625 + 1.0)))
    # Against the textbook: t(0.975, 2) = 4.3027, s = 0.25.
    half = 4.302653 * 0.25 / math.sqrt(3)
    assert view["ci95"] == pytest.approx([0.75 - half, 0.75 + half], abs=1e-6)


def test_one_value_that_is_not_binary_has_no_interval() -> None:
    # mean_interval gives (-inf, inf) for one value, which is not JSON.
    assert stats_of(0.5).view() == {
        "count": 1,
        "mean": 0.5,
        "ci95": None,
        "is_rate": False,
        "not_applicable": 0,
    }


def test_one_binary_value_has_a_wilson_interval() -> None:
    assert stats_of(1.0).view()["ci95"] == list(wilson_interval(1, 1))


def test_no_scores_yet() -> None:
    assert stats_of(None, None).view() == {
        "count": 0,
        "mean": None,
        "ci95": None,
        "is_rate": False,
        "not_applicable": 2,
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e200])
def test_values_that_would_poison_the_sums_count_as_not_applicable(bad: float) -> None:
    stats = stats_of(1.0, bad)
    assert (stats.count, stats.total, stats.not_applicable, stats.binary) == (1, 1.0, 1, True)


def test_one_non_binary_value_ends_the_rate_for_good() -> None:
    stats = stats_of(1.0, 0.5, 1.0)
    assert not stats.binary
    merged = stats_of(0.0)
    merged.merge(stats)
    assert not merged.binary


# -- Tally ---------------------------------------------------------------------------


def test_record_pair_and_view() -> None:
    tally = Tally(selected=10, dropped=2, sent=8, failed=1)
    tally.record_pair([("exact", 1.0), ("similarity", 0.9)], disagree=False)
    tally.record_pair([("exact", 0.0), ("similarity", 0.4)], disagree=True)
    tally.record_pair([("exact", None), ("similarity", None)], disagree=True)
    tally.samples_kept += 1
    tally.samples_dropped += 1
    view = tally.view()
    assert {key: view[key] for key in COUNTERS} == {
        "selected": 10,
        "dropped": 2,
        "sent": 8,
        "failed": 1,
        "pairs": 3,
        "abandoned": 0,
        "disagreements": 2,
        "samples_kept": 1,
        "samples_dropped": 1,
    }
    assert view["drop_rate"] == 0.2
    assert list(view["agreement"]) == ["exact", "similarity"]
    assert view["agreement"]["exact"]["mean"] == 0.5
    assert view["agreement"]["exact"]["is_rate"] is True
    assert view["agreement"]["similarity"]["mean"] == pytest.approx(0.65)
    assert view["agreement"]["similarity"]["not_applicable"] == 1
    # JSON without NaN or infinities.
    json.dumps(view, allow_nan=False)


def test_empty_tally_view() -> None:
    view = Tally().view()
    assert view["drop_rate"] is None
    assert view["agreement"] == {}
    assert all(view[key] == 0 for key in COUNTERS)


def test_merge_adds_and_does_not_share_state() -> None:
    ours, theirs = Tally(selected=1), Tally(selected=2, failed=1)
    theirs.record_pair([("exact", 1.0)], disagree=False)
    ours.merge(theirs)
    assert (ours.selected, ours.failed, ours.pairs) == (3, 1, 1)
    ours.record_pair([("exact", 0.0)], disagree=True)
    assert theirs.scores["exact"].count == 1
    assert ours.scores["exact"].count == 2


def test_from_dict_tolerates_missing_and_unknown_keys() -> None:
    assert Tally.from_dict({}) == Tally()
    tally = Tally.from_dict({"sent": 3, "future_counter": 9, "scores": {"exact": {"count": 1}}})
    assert tally == Tally(sent=3, scores={"exact": ScoreStats(count=1)})


@pytest.mark.parametrize(
    "data",
    [
        {"sent": "3"},
        {"sent": -1},
        {"sent": True},
        {"scores": []},
        {"scores": {"exact": 1}},
        {"scores": {"exact": {"count": 1.5}}},
        {"scores": {"exact": {"total": "x"}}},
        {"scores": {"exact": {"total_sq": math.inf}}},
        {"scores": {"exact": {"binary": 1}}},
    ],
)
def test_from_dict_refuses_wrong_types(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be|bad entry"):
        Tally.from_dict(data)


@pytest.mark.parametrize(
    ("scores", "live_ok", "shadow_ok", "expected"),
    [
        ([("exact", 1.0)], True, True, False),
        ([("exact", 0.0)], True, True, True),
        ([("similarity", 0.8)], True, True, False),  # at the threshold: agrees
        ([("similarity", 0.79)], True, True, True),
        ([("exact", None), ("similarity", 0.9)], True, True, False),
        ([("exact", 1.0), ("json_valid", 0.0)], True, True, True),
        ([], True, True, False),
        ([("exact", None)], True, False, True),  # only the shadow failed
        ([("exact", None)], False, True, True),  # only the live side failed
        ([("exact", 0.0)], False, False, False),  # both failed: not the shadow's fault
    ],
)
def test_disagrees(
    scores: list[tuple[str, float | None]], live_ok: bool, shadow_ok: bool, expected: bool
) -> None:
    got = disagrees(iter(scores), below=0.8, live_ok=live_ok, shadow_ok=shadow_ok)
    assert got is expected


# -- properties ----------------------------------------------------------------------

score_values = st.one_of(
    st.none(),
    st.sampled_from([0.0, 1.0]),
    st.floats(min_value=0.0, max_value=1.0),
)
pairs = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from(["exact", "similarity", "judge"]), score_values)),
        st.booleans(),
    ),
    max_size=40,
)
counter_bumps = st.lists(st.sampled_from(COUNTERS), max_size=20)


def tally_of(
    recorded: list[tuple[list[tuple[str, float | None]], bool]], bumps: list[str]
) -> Tally:
    tally = Tally()
    for scores, disagree in recorded:
        tally.record_pair(scores, disagree)
    for key in bumps:
        setattr(tally, key, getattr(tally, key) + 1)
    return tally


def assert_same(got: Tally, want: Tally) -> None:
    assert {k: getattr(got, k) for k in COUNTERS} == {k: getattr(want, k) for k in COUNTERS}
    assert got.scores.keys() == want.scores.keys()
    for name, stats in want.scores.items():
        other = got.scores[name]
        assert (other.count, other.binary, other.not_applicable) == (
            stats.count,
            stats.binary,
            stats.not_applicable,
        )
        assert other.total == pytest.approx(stats.total, abs=1e-9)
        assert other.total_sq == pytest.approx(stats.total_sq, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    recorded=pairs,
    bumps=counter_bumps,
    cuts=st.lists(st.integers(min_value=0), max_size=4),
    transport=st.booleans(),
)
def test_merging_parts_equals_recording_everything_in_one(
    recorded: list[tuple[list[tuple[str, float | None]], bool]],
    bumps: list[str],
    cuts: list[int],
    transport: bool,
) -> None:
    bounds = [0, *sorted(c % (len(recorded) + 1) for c in cuts), len(recorded)]
    bump_bounds = [0, *sorted(c % (len(bumps) + 1) for c in cuts), len(bumps)]
    merged = Tally()
    for (a, b), (c, d) in zip(pairwise(bounds), pairwise(bump_bounds), strict=True):
        part = tally_of(recorded[a:b], bumps[c:d])
        if transport:  # as between processes: through JSON
            part = Tally.from_dict(orjson.loads(orjson.dumps(part.to_dict())))
        merged.merge(part)
    assert_same(merged, tally_of(recorded, bumps))


@settings(max_examples=200, deadline=None)
@given(recorded=pairs, bumps=counter_bumps)
def test_to_dict_from_dict_round_trip(
    recorded: list[tuple[list[tuple[str, float | None]], bool]], bumps: list[str]
) -> None:
    tally = tally_of(recorded, bumps)
    assert Tally.from_dict(tally.to_dict()) == tally
    assert Tally.from_dict(orjson.loads(orjson.dumps(tally.to_dict()))) == tally


@settings(max_examples=300, deadline=None)
@given(st.lists(score_values, max_size=60))
def test_interval_contains_the_mean(values: list[float | None]) -> None:
    view = stats_of(*values).view()
    if view["ci95"] is None:
        assert view["count"] == 0 or (view["count"] == 1 and not view["is_rate"])
        return
    lo, hi = view["ci95"]
    assert lo <= view["mean"] <= hi
    if view["is_rate"]:
        assert 0.0 <= lo <= hi <= 1.0
    json.dumps(view, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=60))
def test_rates_read_exactly_as_wilson(values: list[float]) -> None:
    view = stats_of(*values).view()
    assert view["is_rate"] is True
    assert view["ci95"] == list(wilson_interval(sum(values), len(values)))
