"""The rollout state machine, pure: steps, analyses, pauses, commands, promotion."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.analysis.judge import Judgement, Verdict
from turnout.config.rollout import RolloutSpec
from turnout.exceptions import ConfigError, Conflict
from turnout.rollout.controller import parse_spec
from turnout.rollout.machine import (
    Command,
    Phase,
    RolloutState,
    analysis_due,
    apply_command,
    begin,
    tick,
    window_of,
)

PASS = Judgement(Verdict.PASS, 100.0)
FAIL = Judgement(Verdict.FAIL, 0.0)
CRITICAL = Judgement(Verdict.FAIL, 90.0, aborted_by="error_rate")
MARGINAL = Judgement(Verdict.MARGINAL, 80.0)
NO_DATA = Judgement(Verdict.NO_DATA, 0.0)


def spec(*steps: dict[str, Any], **extra: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "name": "r",
            "route": "chat",
            "stable": "a",
            "candidate": "b",
            "steps": list(steps),
            **extra,
        }
    )


CANARY = spec(
    {"weight": 5},
    {"analysis": {"window": 10}},
    {"weight": 25},
    {"pause": {"duration": 30}},
    {"weight": 50},
    {"analysis": {}},
    analysis={"window": 60},
)


def test_begin_applies_the_first_weight_and_waits_for_the_analysis() -> None:
    t = begin(CANARY, 1000.0)
    s = t.state
    assert (s.phase, s.step, s.weight, s.next_check) == (Phase.PROGRESSING, 1, 5.0, 1010.0)
    assert t.traffic_changed
    assert [e.kind for e in t.events] == ["started", "step", "waiting"]
    assert not analysis_due(CANARY, s, 1009.9)
    assert analysis_due(CANARY, s, 1010.0)
    assert window_of(s, 1010.0) == (1000.0, 1010.0)


def test_a_passing_canary_walks_every_step_and_is_promoted() -> None:
    s = begin(CANARY, 0.0).state
    t = tick(CANARY, s, 10.0, PASS)
    assert (t.state.step, t.state.weight, t.traffic_changed) == (3, 25.0, True)
    # The timed pause: background judging is due every window (60 s) but the pause
    # ends first; nothing happens before its end.
    assert not tick(CANARY, t.state, 39.9).changed
    t = tick(CANARY, t.state, 40.0)
    assert (t.state.step, t.state.weight, t.state.next_check) == (5, 50.0, 100.0)
    t = tick(CANARY, t.state, 100.0, PASS)
    assert (t.state.phase, t.state.weight, t.state.finished_at) == (Phase.COMPLETED, 100.0, 100.0)
    assert [e.kind for e in t.events][-2:] == ["promoted", "completed"]


def test_a_failed_analysis_aborts_at_the_failure_limit_and_not_before() -> None:
    two = spec({"weight": 10}, {"analysis": {}}, analysis={"window": 5, "failure_limit": 2})
    s = begin(two, 0.0).state
    t = tick(two, s, 5.0, FAIL)
    assert (t.state.phase, t.state.failures, t.state.weight) == (Phase.PROGRESSING, 1, 10.0)
    assert window_of(t.state, 10.0) == (5.0, 10.0)  # a fresh window after a failure
    t = tick(two, t.state, 10.0, FAIL)
    assert (t.state.phase, t.state.weight, t.traffic_changed) == (Phase.ABORTED, 0.0, True)
    assert "2 failed analyses" in (t.state.reason or "")


def test_a_pass_between_failures_resets_the_count() -> None:
    two = spec({"analysis": {}}, {"analysis": {}}, {"analysis": {}}, analysis={"failure_limit": 2})
    s = begin(two, 0.0).state
    s = tick(two, s, 60, FAIL).state
    s = tick(two, s, 120, PASS).state
    s = tick(two, s, 180, FAIL).state
    assert (s.phase, s.failures, s.step) == (Phase.PROGRESSING, 1, 1)


def test_a_critical_failure_aborts_at_once_with_the_evidence() -> None:
    two = spec({"weight": 10}, {"analysis": {}}, analysis={"failure_limit": 5})
    t = tick(two, begin(two, 0.0).state, 60.0, CRITICAL)
    assert t.state.phase is Phase.ABORTED
    assert "error_rate" in (t.state.reason or "")
    aborted = next(e for e in t.events if e.kind == "aborted")
    assert aborted.detail["evidence"]["verdict"] == "fail"


def test_no_data_extends_the_window_then_pauses_and_never_fails() -> None:
    s = spec({"weight": 1}, {"analysis": {}}, analysis={"window": 10, "max_extensions": 2})
    state = begin(s, 0.0).state
    for i, now in enumerate((10.0, 20.0), start=1):
        t = tick(s, state, now, NO_DATA)
        state = t.state
        assert (state.phase, state.extensions, state.next_check) == (Phase.PROGRESSING, i, now + 10)
        assert window_of(state, now + 10) == (0.0, now + 10)  # same start: the window grows
    t = tick(s, state, 30.0, NO_DATA)
    assert t.state.phase is Phase.PAUSED and "not enough data" in (t.state.paused_reason or "")
    assert t.state.weight == 1.0 and not t.traffic_changed


def test_marginal_pauses_for_a_person_and_resume_goes_on() -> None:
    s = spec({"weight": 5}, {"analysis": {}}, {"weight": 50}, {"analysis": {}})
    state = tick(s, begin(s, 0.0).state, 60.0, MARGINAL).state
    assert state.phase is Phase.PAUSED and state.paused_reason == "marginal analysis"
    t = apply_command(s, state, 70.0, Command.RESUME, "looks fine to me")
    assert (t.state.phase, t.state.weight, t.state.step) == (Phase.PROGRESSING, 50.0, 3)


def test_a_manual_gate_waits_until_resumed_and_can_be_aborted_meanwhile() -> None:
    s = spec({"weight": 20}, {"pause": {}}, {"weight": 60})
    state = begin(s, 0.0).state
    for now in (10.0, 1e6):
        assert tick(s, state, now).state == state
    aborted = apply_command(s, state, 50.0, Command.ABORT, "bad vibes")
    assert (aborted.state.phase, aborted.state.weight, aborted.state.reason) == (
        Phase.ABORTED,
        0.0,
        "bad vibes",
    )
    resumed = apply_command(s, state, 50.0, Command.RESUME)
    assert resumed.state.phase is Phase.COMPLETED and resumed.state.weight == 100.0


def test_background_analysis_during_a_pause_aborts_on_failure_only() -> None:
    s = spec({"weight": 20}, {"pause": {"duration": 3600}}, analysis={"window": 60})
    state = begin(s, 0.0).state
    assert analysis_due(s, state, 60.0)
    for verdict in (PASS, MARGINAL, NO_DATA):
        t = tick(s, state, 60.0, verdict)
        assert t.state.phase is Phase.PROGRESSING and t.state.next_check == 120.0
    assert tick(s, state, 60.0, FAIL).state.phase is Phase.ABORTED
    quiet = spec({"weight": 20}, {"pause": {"duration": 3600}}, analysis={"background": False})
    assert not analysis_due(quiet, begin(quiet, 0.0).state, 1e9)


def test_rollback_window_keeps_abort_possible_after_promotion() -> None:
    s = spec(
        {"preview": {"attr": "header:x-beta", "exists": True}},
        {"weight": 100},
        rollback_window="10m",
    )
    t = begin(s, 0.0)
    assert (t.state.phase, t.state.weight, t.state.preview) == (Phase.PROMOTED, 100.0, False)
    back = apply_command(s, t.state, 300.0, Command.ABORT, "users complain")
    assert (back.state.phase, back.state.weight, back.traffic_changed) == (Phase.ABORTED, 0.0, True)
    done = tick(s, t.state, 600.0)
    assert done.state.phase is Phase.COMPLETED
    with pytest.raises(Conflict):
        apply_command(s, done.state, 601.0, Command.ABORT)


def test_preview_then_switch_is_blue_green() -> None:
    s = spec(
        {"preview": {"attr": "header:x-beta", "equals": "1"}},
        {"analysis": {"window": 30}},
        {"weight": 100},
    )
    t = begin(s, 0.0)
    assert (t.state.preview, t.state.weight, t.state.step) == (True, 0.0, 1)
    t = tick(s, t.state, 30.0, PASS)
    assert (t.state.phase, t.state.weight, t.state.preview) == (Phase.COMPLETED, 100.0, False)


def test_commands_refused_where_they_make_no_sense() -> None:
    s = spec({"weight": 5}, {"analysis": {}})
    running = begin(s, 0.0).state
    with pytest.raises(Conflict):
        apply_command(s, running, 1.0, Command.RETRY)
    with pytest.raises(Conflict):
        apply_command(s, running, 1.0, Command.RESUME)  # an analysis, not a gate
    aborted = apply_command(s, running, 1.0, Command.ABORT).state
    for cmd in (Command.ABORT, Command.PROMOTE, Command.RESUME):
        with pytest.raises(Conflict):
            apply_command(s, aborted, 2.0, cmd)
    again = apply_command(s, aborted, 3.0, Command.RETRY)
    assert (again.state.phase, again.state.weight, again.state.started_at) == (
        Phase.PROGRESSING,
        5.0,
        3.0,
    )
    assert again.state.generation > aborted.generation


def test_promote_skips_the_remaining_steps() -> None:
    s = spec({"weight": 5}, {"analysis": {}}, {"weight": 50}, {"pause": {}})
    t = apply_command(s, begin(s, 0.0).state, 5.0, Command.PROMOTE, "ship it")
    assert (t.state.phase, t.state.weight, t.state.reason) == (Phase.COMPLETED, 100.0, "ship it")


def test_state_round_trips_through_its_dict() -> None:
    s = tick(CANARY, begin(CANARY, 0.0).state, 10.0, FAIL).state
    assert RolloutState.from_dict(s.to_dict()) == s


VERDICTS = st.sampled_from([PASS, FAIL, CRITICAL, MARGINAL, NO_DATA, None])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 500), VERDICTS, st.sampled_from([None, *Command])), max_size=30)
)
def test_any_sequence_keeps_the_invariants(moves: list[tuple[float, Any, Any]]) -> None:
    """Whatever happens: weights stay in [0, 100], generations only grow, a finished
    rollout gives all to one side, and time only moves the way the rules say."""
    now = 0.0
    state = begin(CANARY, now).state
    for dt, verdict, command in moves:
        now += dt
        before = state
        if command is not None:
            try:
                state = apply_command(CANARY, state, now, command).state
            except Conflict:
                assert state == before
        else:
            judgement = verdict if analysis_due(CANARY, state, now) else None
            state = tick(CANARY, state, now, judgement).state
        assert 0.0 <= state.weight <= 100.0
        assert state.generation >= before.generation
        if state.phase is Phase.ABORTED:
            assert state.weight == 0.0 and not state.preview
        if state.phase in (Phase.COMPLETED, Phase.PROMOTED):
            assert state.weight == 100.0
        if state.phase is Phase.PROGRESSING:
            assert state.step < len(CANARY.steps)


def test_kind_is_only_for_feedback_metrics() -> None:
    base = {"name": "r", "route": "c", "stable": "a", "candidate": "b", "steps": [{"weight": 5}]}
    ok = {"metrics": [{"metric": "feedback:thumbs", "kind": "rate"}]}
    assert parse_spec({**base, "analysis": ok}).analysis.metrics[0].kind == "rate"
    bad = {"metrics": [{"metric": "latency_ms", "kind": "rate"}]}
    with pytest.raises(ConfigError) as exc:
        parse_spec({**base, "analysis": bad})
    assert "analysis.metrics[0]" in str(exc.value) and "feedback" in str(exc.value)
