from hypothesis import given
from hypothesis import strategies as st

from turnout.resilience import RetryBudget


def test_retries_are_bounded_by_a_share_of_traffic() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0)
    granted = 0
    for i in range(10_000):  # 1,000 requests a second, every one failing
        now = i / 1000
        budget.deposit(now)
        granted += budget.withdraw(now)
    # At most 20% of the requests (no reserve: min_per_second is 0).
    assert granted <= 0.2 * 10_000
    assert granted >= 0.15 * 10_000  # and the share is actually available


def test_a_quiet_route_still_gets_its_minimum() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=2.0, window=10.0)
    # Its reserve is full at first: 20 retries at once, then 2 a second.
    assert sum(budget.withdraw(0.0) for _ in range(50)) == 20
    assert sum(budget.withdraw(5.0) for _ in range(50)) == 10


def test_deposits_decay_so_old_traffic_pays_for_no_burst() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, window=10.0)
    for _ in range(100):
        budget.deposit(0.0)
    assert budget.available > 99
    budget.deposit(20.0)
    assert budget.available == 1.0  # the last deposit alone


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=300))
def test_never_grants_more_than_deposits_and_reserve(events: list[tuple[bool, float]]) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=1.0, window=10.0)
    now, deposited, granted, elapsed = 0.0, 0, 0, 0.0
    for is_request, step in events:
        now += step
        elapsed += step
        if is_request:
            budget.deposit(now)
            deposited += 1
        else:
            granted += budget.withdraw(now)
    assert granted <= 0.1 * deposited + budget.cap + elapsed * 1.0 + 1e-9
