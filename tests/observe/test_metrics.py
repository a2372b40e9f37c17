"""Series over time: what each window holds, and exact merging across processes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.observe.exchange import ERROR_INDEX, Exchange
from turnout.observe.metrics import Merged, Registry, Series


def exchange(t: float, latency: float = 0.1, error: str | None = None) -> Exchange:
    x = Exchange("r", 0.0, t, route="r", variant="v", upstream="u")
    x.sent, x.upstream_done, x.end = t + 0.001, t + latency - 0.001, t + latency
    x.error_class = error
    x.input_tokens, x.output_tokens = 3, 7
    return x


def test_windows_hold_what_they_should() -> None:
    s = Series(0.0)
    for t in (0.0, 100.0, 2000.0, 3990.0, 4000.0):
        s.record(exchange(t))
    now = 4005.0
    assert s.window("60s", now)[0].requests == 2
    assert s.window("300s", now)[0].requests == 2
    assert s.window("3600s", now)[0].requests == 3  # 2000, 3990, 4000
    assert s.window("cumulative", now)[0].requests == 5
    # Much later, with nothing recorded in between, the windows are empty again.
    later = 20_000.0
    assert s.window("60s", later)[0].requests == 0
    assert s.window("3600s", later)[0].requests == 0
    assert s.window("cumulative", later)[0].requests == 5


EVENT = st.tuples(
    st.floats(0, 3000),  # when
    st.floats(0.001, 5),  # latency
    st.sampled_from([None, "timeout", "upstream_5xx"]),  # error class
    st.sampled_from(["v", "w"]),  # variant
    st.sampled_from(["u1", "u2"]),  # upstream that answered
    st.booleans(),  # an attempt before it failed on the other upstream (a fallback)
)
Event = tuple[float, float, str | None, str, str, bool]


def play(reg: Registry, t: float, latency: float, error: str | None, v: str, u: str,
         fell_back: bool) -> None:  # fmt: skip
    x = exchange(t, latency, error)
    if fell_back:
        reg.track("r", v, "u2" if u == "u1" else "u1", t).absorb("connection", t)
    x.cost_nano = 5
    reg.track("r", v, u, t).record(x)


@settings(max_examples=50, deadline=None)
@given(st.lists(EVENT, min_size=1, max_size=60), st.integers(1, 4))
def test_merged_exports_equal_one_process(events: list[Event], k: int) -> None:
    events.sort(key=lambda e: e[0])
    # After every request's end, as a real clock is: a request recorded at its end
    # (t + latency), later than the export, would land in a slot the export
    # does not see yet in one process and does in another.
    now = max(t + latency for t, latency, *_ in events) + 1
    one = Registry()
    parts = [Registry() for _ in range(k)]
    for i, event in enumerate(events):
        for reg in (one, parts[i % k]):
            play(reg, *event)
    for window in ("60s", "300s", "3600s", "cumulative"):
        whole = Merged()
        whole.add(one.export(window, now))
        merged = Merged()
        for reg in parts:
            merged.add(reg.export(window, now))
        for table in ("variants", "upstreams"):
            a = {key: s.to_dict() for key, (s, _, _) in getattr(whole, table).items()}
            b = {key: s.to_dict() for key, (s, _, _) in getattr(merged, table).items()}
            assert a == b, (window, table)


@settings(max_examples=50, deadline=None)
@given(st.lists(EVENT, min_size=1, max_size=60))
def test_variant_and_upstream_views_count_each_request_where_it_belongs(
    events: list[Event],
) -> None:
    # Recorded once, in its track, a request shows in its variant's numbers and its
    # upstream's; a failed attempt before a fallback is an absorbed error of the
    # variant and a failed request of the upstream it failed on.
    events.sort(key=lambda e: e[0])
    now = events[-1][0] + 1
    reg = Registry()
    for event in events:
        play(reg, *event)
    got = Merged()
    got.add(reg.export("cumulative", now))
    for v in ("v", "w"):
        mine = [e for e in events if e[3] == v]
        if not mine:
            assert ("r", v) not in got.variants
            continue
        stats = got.variants[("r", v)][0]
        assert stats.requests == len(mine)
        assert stats.latency.count == len(mine)
        assert sum(stats.errors) == sum(1 for e in mine if e[2] is not None)
        assert stats.absorbed[ERROR_INDEX["connection"]] == sum(1 for e in mine if e[5])
    for u, other in (("u1", "u2"), ("u2", "u1")):
        served = [e for e in events if e[4] == u]
        failed_here = [e for e in events if e[5] and e[4] == other]
        if not served and not failed_here:
            assert u not in got.upstreams
            continue
        stats = got.upstreams[u][0]
        assert stats.requests == len(served) + len(failed_here)
        assert stats.latency.count == len(served)
        assert stats.errors[ERROR_INDEX["connection"]] == len(failed_here)
        assert sum(stats.errors) == len(failed_here) + sum(1 for e in served if e[2] is not None)
        assert sum(stats.absorbed) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(EVENT, min_size=1, max_size=200), st.integers(0, 3))
def test_batched_recording_equals_recording_each_request(events: list[Event], exports: int) -> None:
    # Registry.record queues requests and folds them BATCH at a time, per track, split
    # where a 10 s slot ends; the numbers must be those of recording each at once. An
    # export between (``exports`` of them) folds what is queued so far.
    finished = [(exchange(t, latency, error), v, u) for t, latency, error, v, u, _ in events]
    finished.sort(key=lambda item: item[0].end)
    direct, batched = Registry(), Registry()
    marks = {len(finished) * (i + 1) // (exports + 1) for i in range(exports)}
    for i, (x, v, u) in enumerate(finished):
        x.cost_nano = i
        direct.track("r", v, u, x.start).record(x)
        x.track = batched.track("r", v, u, x.start)
        batched.record(x)
        if i in marks:
            batched.export("60s", x.end)
    now = finished[-1][0].end + 1
    for window in ("60s", "300s", "3600s", "cumulative"):
        assert batched.export(window, now) == direct.export(window, now), window
