"""Series over time: what each window holds, and exact merging across processes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.observe.exchange import Exchange
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
        s.record(exchange(t), 0, t)
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


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 3000), st.floats(0.001, 5), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_merged_exports_equal_one_process(events: list[tuple[float, float, bool]], k: int) -> None:
    events.sort()
    now = events[-1][0] + 1
    one = Registry()
    parts = [Registry() for _ in range(k)]
    for i, (t, latency, failed) in enumerate(events):
        x = exchange(t, latency, "timeout" if failed else None)
        for reg in (one, parts[i % k]):
            reg.variant_series("r", "v", t).record(x, 5, t)
    for window in ("60s", "300s", "3600s", "cumulative"):
        whole = Merged()
        whole.add(one.export(window, now))
        merged = Merged()
        for reg in parts:
            merged.add(reg.export(window, now))
        a = whole.variants[("r", "v")][0].to_dict()
        b = merged.variants[("r", "v")][0].to_dict()
        assert a == b, window
