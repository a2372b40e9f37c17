"""Feedback summaries: exact aggregates, rates told from means, filters."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.store.util import query

from turnout.analysis import mean_interval, wilson_interval
from turnout.store import FeedbackStore, FeedbackSummary


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    s = FeedbackStore(tmp_path / "fb.db")
    yield s
    s.close()


def add_all(
    store: FeedbackStore,
    variant: str,
    name: str,
    values: list[float],
    route: str = "chat",
    ts: float = 1000.0,
) -> None:
    for v in values:
        store.add("req-1", "h" * 32, route, variant, name, v, ts)


def test_summary_numbers_are_exact(store: FeedbackStore) -> None:
    add_all(store, "a", "rating", [1, 2, 3, 4, 5])
    add_all(store, "b", "rating", [4, 4, 5, 5])
    a, b = store.summary()
    assert (a.route, a.variant, a.name, a.count, a.mean, a.total, a.total_sq) == (
        "chat",
        "a",
        "rating",
        5,
        3.0,
        15.0,
        55.0,
    )
    assert not a.is_rate
    half = 2.776445105 * math.sqrt(2.5 / 5)  # t(0.975, 4) * s / sqrt(n)
    assert a.ci95 == (pytest.approx(3 - half, abs=1e-8), pytest.approx(3 + half, abs=1e-8))
    assert (b.count, b.mean, b.total, b.total_sq) == (4, 4.5, 18.0, 82.0)
    assert b.ci95 == mean_interval(4, 18.0, 82.0)


def test_all_zero_one_values_are_a_rate_with_a_wilson_interval(store: FeedbackStore) -> None:
    add_all(store, "a", "thumbs_up", [1, 0, 1, 1, 0.0, 1.0])
    add_all(store, "a", "score", [1, 0, 0.5])
    add_all(store, "a", "all_zero", [0, 0, 0])
    by_name = {s.name: s for s in store.summary()}
    up = by_name["thumbs_up"]
    assert up.is_rate
    assert (up.count, up.mean) == (6, 4 / 6)
    assert up.ci95 == wilson_interval(4, 6)
    assert not by_name["score"].is_rate
    zero = by_name["all_zero"]
    assert zero.is_rate
    assert zero.ci95 == (0.0, wilson_interval(0, 3)[1])


def test_summary_filters_by_route_and_since(store: FeedbackStore) -> None:
    add_all(store, "a", "rating", [1, 2], route="chat", ts=100.0)
    add_all(store, "a", "rating", [3, 5], route="chat", ts=200.0)
    add_all(store, "a", "rating", [9], route="embed", ts=200.0)
    assert [(s.route, s.count) for s in store.summary()] == [("chat", 4), ("embed", 1)]
    assert [(s.route, s.count) for s in store.summary(route="chat")] == [("chat", 4)]
    (recent,) = store.summary(route="chat", since=200.0)  # inclusive
    assert (recent.count, recent.mean) == (2, 4.0)
    assert store.summary(since=300.0) == []
    assert store.summary(route="nothing") == []


def test_one_value_has_an_unbounded_interval(store: FeedbackStore) -> None:
    add_all(store, "a", "latency_score", [0.7])
    (s,) = store.summary()
    assert s == FeedbackSummary(
        "chat", "a", "latency_score", 1, 0.7, (-math.inf, math.inf), False, 0.7, 0.7 * 0.7
    )


def test_rows_keep_what_was_given_and_refuse_nan(store: FeedbackStore) -> None:
    store.add(None, None, "chat", "a", "x", 2, 5.0)
    store.add("req-9", "ab" * 16, "chat", "b", "x", -1.5, 6.0)
    with pytest.raises(ValueError, match="finite"):
        store.add(None, None, "chat", "a", "x", math.nan, 7.0)
    with pytest.raises(ValueError, match="finite"):
        store.add(None, None, "chat", "a", "x", math.inf, 7.0)
    rows = query(
        Path(store.path),
        "SELECT request_id, key_hash, route, variant, name, value, ts FROM feedback ORDER BY id",
    )
    assert rows == [
        (None, None, "chat", "a", "x", 2.0, 5.0),
        ("req-9", "ab" * 16, "chat", "b", "x", -1.5, 6.0),
    ]
