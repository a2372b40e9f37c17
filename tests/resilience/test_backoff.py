from datetime import UTC, datetime
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from turnout.resilience import backoff_delay, parse_retry_after


@given(
    retry=st.integers(1, 200),
    base=st.floats(0, 10),
    cap=st.floats(0, 60),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_backoff_stays_under_its_exponential_ceiling(
    retry: int, base: float, cap: float, draw: float
) -> None:
    delay = backoff_delay(retry, base, cap, draw)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(retry - 1, 62)) + 1e-12


def test_backoff_doubles_then_caps() -> None:
    ceilings = [backoff_delay(r, 0.1, 1.0, 0.999999) for r in range(1, 7)]
    assert [round(c, 3) for c in ceilings] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(3, 0.1, 1.0, 0.0) == 0.0  # full jitter reaches zero
    assert backoff_delay(0, 0.1, 1.0, 0.5) == 0.0


def test_retry_after_seconds_date_and_garbage() -> None:
    assert parse_retry_after("3", 0.0) == 3.0
    assert parse_retry_after(" 1.5 ", 0.0) == 1.5
    assert parse_retry_after("-4", 0.0) == 0.0
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert abs((parse_retry_after(date, now) or 0) - 30) < 1.0
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"):
        assert parse_retry_after(bad, now) is None
