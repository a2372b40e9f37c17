from hypothesis import given
from hypothesis import strategies as st

from turnout.resilience import EjectionPolicy, HealthBook, UpstreamHealth
from turnout.resilience.ejection import CLOSED, EJECTED, HALF_OPEN

POLICY = EjectionPolicy(consecutive_failures=3, error_rate=None, cooldown=10.0, max_cooldown=40.0)


def fail(h: UpstreamHealth, n: int, now: float, policy: EjectionPolicy = POLICY) -> None:
    for _ in range(n):
        assert h.available(policy, now)
        h.failure(policy, now)


def test_consecutive_failures_eject_for_the_cooldown() -> None:
    h = UpstreamHealth()
    fail(h, 2, 0.0)
    assert h.state == CLOSED
    h.success(POLICY, 0.0)  # a success breaks the run
    fail(h, 2, 0.0)
    assert h.state == CLOSED
    fail(h, 1, 1.0)
    assert h.state == EJECTED
    assert not h.available(POLICY, 10.99)
    assert h.view(5.0)["ejected_for_s"] == 6.0


def test_half_open_lets_one_probe_through_and_a_success_closes() -> None:
    h = UpstreamHealth()
    fail(h, 3, 0.0)
    assert h.available(POLICY, 10.0)  # the probe
    assert h.state == HALF_OPEN
    assert not h.available(POLICY, 10.0)  # only one at a time
    h.success(POLICY, 10.5)
    assert h.state == CLOSED
    assert h.available(POLICY, 10.5) and h.available(POLICY, 10.5)


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    h = UpstreamHealth()
    fail(h, 3, 0.0)  # ejected until 10
    now, cooldowns = 10.0, []
    for _ in range(4):
        assert h.available(POLICY, now)
        h.failure(POLICY, now)
        cooldowns.append(h.ejected_until - now)
        now = h.ejected_until
    assert cooldowns == [20.0, 40.0, 40.0, 40.0]
    assert h.ejections == 5


def test_the_doubling_starts_over_after_a_long_healthy_spell() -> None:
    h = UpstreamHealth()
    fail(h, 3, 0.0)
    assert h.available(POLICY, 10.0)
    h.failure(POLICY, 10.0)  # 20 s now
    assert h.available(POLICY, 30.0)
    h.success(POLICY, 30.0)
    fail(h, 3, 30.0 + 41.0)  # more than max_cooldown later: the first cooldown again
    assert h.ejected_until - 71.0 == 10.0


def test_a_released_probe_frees_the_slot() -> None:
    h = UpstreamHealth()
    fail(h, 3, 0.0)
    assert h.available(POLICY, 10.0)
    h.release()
    assert h.available(POLICY, 10.0)


def test_error_rate_over_the_window_ejects() -> None:
    policy = EjectionPolicy(
        consecutive_failures=0, error_rate=0.5, min_requests=10, window=10.0, cooldown=5.0
    )
    h = UpstreamHealth()
    for i in range(9):  # alternate: 50% errors, never two in a row
        h.failure(policy, i * 0.1) if i % 2 else h.success(policy, i * 0.1)
    assert h.state == CLOSED  # under min_requests
    h.failure(policy, 1.0)  # 10 requests, 5 failures
    assert h.state == EJECTED


def test_old_failures_leave_the_window() -> None:
    policy = EjectionPolicy(
        consecutive_failures=0, error_rate=0.5, min_requests=4, window=10.0, cooldown=5.0
    )
    h = UpstreamHealth()
    h.failure(policy, 0.0)
    h.failure(policy, 0.5)
    h.success(policy, 1.0)
    # 20 s later the two failures are out of the window: 1 of 4 fails.
    for t in (21.0, 21.1, 21.2):
        h.success(policy, t)
    h.failure(policy, 21.3)
    assert h.state == CLOSED


def test_disabled_never_ejects() -> None:
    policy = EjectionPolicy(enabled=False)
    h = UpstreamHealth()
    fail(h, 100, 0.0, policy)
    assert h.state == CLOSED and h.available(policy, 0.0)


@given(st.lists(st.tuples(st.sampled_from(["ok", "fail", "ask", "release"]), st.floats(0, 3))))
def test_invariants_under_any_sequence(events: list[tuple[str, float]]) -> None:
    h = UpstreamHealth()
    now = 0.0
    for what, step in events:
        now += step
        if what == "ok":
            h.success(POLICY, now)
        elif what == "fail":
            h.failure(POLICY, now)
        elif what == "ask":
            allowed = h.available(POLICY, now)
            if h.state == EJECTED:
                assert not allowed and now < h.ejected_until
        else:
            h.release()
        assert h.state in (CLOSED, EJECTED, HALF_OPEN)
        assert (
            h.ejected_until - now <= POLICY.max_cooldown + 1e-9
        )  # now + cooldown - now, in floats
        if h.state == CLOSED:
            assert h.consecutive < POLICY.consecutive_failures


def test_health_book_keeps_one_state_per_upstream() -> None:
    book = HealthBook()
    assert book.of("a") is book.of("a")
    assert book.of("a") is not book.of("b")
    fail(book.of("a"), 3, 0.0)
    view = book.view(1.0)
    assert view["a"]["state"] == EJECTED and view["b"]["state"] == CLOSED
