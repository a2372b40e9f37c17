"""Windowed: which values each window holds, expiry, odd clocks, flat memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.observe import DDSketch, Windowed


@dataclass
class Tally:
    """A test aggregate that remembers exactly which values it holds."""

    values: list[float] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.values.extend(other.values)

    def clear(self) -> None:
        self.values.clear()


@dataclass
class RequestStats:
    """The shape a caller would use: counters beside sketches, in one slot."""

    requests: int = 0
    errors: int = 0
    latency: DDSketch = field(default_factory=DDSketch)

    def merge(self, other: RequestStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)

    def clear(self) -> None:
        self.requests = self.errors = 0
        self.latency.clear()


def record(w: Windowed[Tally], now: float, value: float) -> None:
    w.current(now).values.append(value)


def test_defaults() -> None:
    w = Windowed(Tally)
    assert (w.interval, w.horizon, w.slot_count) == (10.0, 3600.0, 361)


def test_values_land_in_the_right_windows() -> None:
    w = Windowed(Tally, interval=10.0, horizon=300.0)
    for t in range(0, 300, 5):  # one value every 5 s, the value is its time
        record(w, 1000.0 + t, float(t))
    now = 1000.0 + 299.0  # head interval [1290, 1300)
    # 60 s: the head and the 6 intervals before it, [1230, 1299].
    assert sorted(w.window(now, 60).values) == [float(t) for t in range(230, 300, 5)]
    assert w.window_span(now, 60) == pytest.approx(69.0)
    # Partial intervals round up to whole ones: 15 s is the head plus 2.
    assert sorted(w.window(now, 15).values) == [float(t) for t in range(270, 300, 5)]
    assert sorted(w.window(now, 300).values) == [float(t) for t in range(0, 300, 5)]
    # The span starts where the series did, not before.
    assert w.window_span(now, 300) == pytest.approx(299.0)
    assert sorted(w.cumulative().values) == [float(t) for t in range(0, 300, 5)]
    assert w.cumulative_span(now) == pytest.approx(299.0)


def test_values_expire_once_the_window_passes() -> None:
    w = Windowed(Tally, interval=10.0, horizon=60.0)
    record(w, 5.0, 1.0)
    assert w.window(5.0, 60).values == [1.0]
    assert w.window(65.0, 60).values == [1.0]  # interval 0 is 6 before interval 6
    assert w.window(70.0, 60).values == []
    assert w.window(70.0, 10).values == []
    assert w.cumulative().values == [1.0]  # cumulative keeps everything


def test_window_returns_a_new_aggregate() -> None:
    w = Windowed(Tally, interval=1.0, horizon=10.0)
    record(w, 0.5, 1.0)
    out = w.window(0.5, 5)
    out.values.append(99.0)
    assert w.window(0.5, 5).values == [1.0]
    assert w.cumulative() is not w.cumulative()


def test_idle_gap_expires_everything_but_cumulative() -> None:
    w = Windowed(Tally, interval=10.0, horizon=3600.0)
    for t in range(0, 600, 7):
        record(w, float(t), float(t))
    later = 600.0 + 5 * 3600.0
    assert w.window(later, 3600).values == []
    assert len(w.cumulative().values) == len(range(0, 600, 7))
    record(w, later, -1.0)
    assert w.window(later, 60).values == [-1.0]
    assert w.window_span(later, 60) == pytest.approx(60.0 + later % 10)


def test_clock_going_back_records_into_the_head() -> None:
    w = Windowed(Tally, interval=10.0, horizon=60.0)
    record(w, 100.0, 1.0)
    record(w, 135.0, 2.0)
    record(w, 20.0, 3.0)  # far back: treated as still in the head interval [130, 140)
    assert sorted(w.window(135.0, 10).values) == [2.0, 3.0]
    # Asking with the old time answers as of the head: nothing is lost or double counted.
    assert sorted(w.window(20.0, 60).values) == [1.0, 2.0, 3.0]
    assert w.window_span(20.0, 10) == pytest.approx(10.0)  # from 120 to the head's start
    record(w, 145.0, 4.0)
    assert sorted(w.window(145.0, 10).values) == [2.0, 3.0, 4.0]
    assert sorted(w.cumulative().values) == [1.0, 2.0, 3.0, 4.0]


def test_span_uses_the_given_start() -> None:
    w = Windowed(Tally, interval=10.0, horizon=600.0, start=0.0)
    record(w, 250.0, 1.0)
    assert w.window_span(255.0, 600) == pytest.approx(255.0)
    assert w.window_span(255.0, 60) == pytest.approx(65.0)  # from 190
    assert w.cumulative_span(255.0) == pytest.approx(255.0)


def test_empty_windowed() -> None:
    w = Windowed(Tally, interval=10.0, horizon=60.0)
    assert w.cumulative().values == []
    assert w.window(50.0, 60).values == []
    assert w.window_span(50.0, 60) == 0.0


@pytest.mark.parametrize("seconds", [0.0, -1.0, 61.0, math.nan])
def test_window_rejects_out_of_range(seconds: float) -> None:
    w = Windowed(Tally, interval=10.0, horizon=60.0)
    with pytest.raises(ValueError):
        w.window(0.0, seconds)
    with pytest.raises(ValueError):
        w.window_span(0.0, seconds)


@pytest.mark.parametrize("kwargs", [{"interval": 0.0}, {"interval": 10.0, "horizon": 5.0}])
def test_constructor_rejects_bad_sizes(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Windowed(Tally, **kwargs)


def test_slot_objects_and_memory_stay_flat_over_ten_hours() -> None:
    w = Windowed(RequestStats)  # 10 s slots, 1 h horizon
    seen: set[int] = set()
    n = math.ceil(10 * 3600.0 / 3.3)
    latency = 0.05
    for i in range(n):
        slot = w.current(i * 3.3)
        seen.add(id(slot))
        slot.requests += 1
        slot.latency.add(latency)
        latency = latency * 1.37 % 3.0 + 0.001
        if i == n // 2:
            halfway = len(seen)
    # The same slot objects, reused: no more after five hours than after ten.
    assert halfway == len(seen) == w.slot_count
    now = (n - 1) * 3.3
    total = w.cumulative()
    assert total.requests == total.latency.count == n
    assert total.latency.bin_count <= total.latency.max_bins
    hour = w.window(now, 3600)
    assert 3600 / 3.3 - 2 <= hour.requests <= 3610 / 3.3 + 2


def test_windowed_sketches_match_one_sketch_of_the_same_values() -> None:
    w = Windowed(DDSketch, interval=10.0, horizon=300.0)
    direct = DDSketch()
    for i in range(3000):
        t = i * 0.2  # 600 s of data
        value = 0.01 * (1 + i % 97)
        w.current(t).add(value)
        if math.floor(t / 10.0) >= 53:  # the 60 s window at 599.8: intervals 53 to 59
            direct.add(value)
    assert w.window(599.8, 60).to_dict() == direct.to_dict()


# -- a model: every value goes to the newest interval seen so far -------------------------


events = st.lists(
    st.tuples(
        st.one_of(
            st.floats(min_value=0.0, max_value=25.0),  # small steps forward
            st.floats(min_value=-80.0, max_value=0.0),  # the clock going back
            st.floats(min_value=100.0, max_value=2000.0),  # idle gaps
        ),
        st.booleans(),  # record a value, or query the windows
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(steps=events, start=st.floats(min_value=0.0, max_value=1e6))
def test_windows_agree_with_a_model(steps: list[tuple[float, bool]], start: float) -> None:
    interval, horizon = 10.0, 120.0
    w = Windowed(Tally, interval=interval, horizon=horizon)
    recorded: list[tuple[int, float]] = []  # (interval it counts in, value)
    head: int | None = None
    now = start
    for i, (step, is_record) in enumerate(steps):
        now = max(0.0, now + step)
        # The head moves when now reaches its end, to the interval now falls in.
        if head is None:
            head = math.floor(now / interval)
        elif now >= (head + 1) * interval:
            head = max(head, math.floor(now / interval))
        if is_record:
            w.current(now).values.append(float(i))
            recorded.append((head, float(i)))
            continue
        for seconds in (10.0, 35.0, 60.0, 120.0):
            k = math.ceil(seconds / interval)
            want = sorted(v for e, v in recorded if e >= head - k)
            assert sorted(w.window(now, seconds).values) == want
            span = w.window_span(now, seconds)
            assert 0.0 <= span <= (k + 1) * interval + 1e-6
        assert sorted(w.cumulative().values) == [v for _, v in recorded]
