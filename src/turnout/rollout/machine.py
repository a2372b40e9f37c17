"""A rollout as a pure state machine: (spec, state, time, judgement) -> transition.

No clocks, sockets or store here: the controller passes ``now`` in, gathers the
evidence when ``analysis_due`` says so, applies the traffic a transition asks for
and stores the new state. That keeps every rule below testable on its own and
makes a restart harmless: timers are absolute times in the state, so a restarted
controller resumes the same step with the same clock, and traffic is an absolute
weight, so applying a step again changes nothing.

Rules, in the words of the rollout guide (docs/rollouts.md):

- Weight and preview steps take effect at once; pause and analysis steps wait.
- An analysis passes, fails, is marginal, or has no data. Pass: next step. Fail:
  counted; ``failure_limit`` consecutive failures abort, a critical metric's
  failure aborts at once. Marginal: pause for a person. No data: the window is
  extended, ``max_extensions`` times, then the rollout pauses; it never fails.
- During pauses (timed or manual) the candidate is judged every window
  (``background``): failures abort as above, anything else waits.
- After the last step the candidate gets all the pair's traffic. With a
  ``rollback_window``, an abort during it switches back to stable at once.
- A person can abort at any time before completion (also while paused), promote
  (skip the remaining steps), resume a pause or a manual gate, and retry an
  aborted rollout from its first step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from turnout.analysis.judge import Judgement, Verdict
from turnout.config.rollout import AnalysisStep, PauseStep, PreviewStep, RolloutSpec, WeightStep
from turnout.exceptions import Conflict

__all__ = [
    "Command",
    "Event",
    "Phase",
    "RolloutState",
    "Transition",
    "analysis_due",
    "apply_command",
    "begin",
    "tick",
    "window_of",
]


class Phase(enum.StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"  # waiting for a person: marginal, no data, or a locked route
    PROMOTED = "promoted"  # candidate has all traffic; abort still switches back
    COMPLETED = "completed"
    ABORTED = "aborted"


ACTIVE = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED})


class Command(enum.StrEnum):
    ABORT = "abort"
    PROMOTE = "promote"
    RESUME = "resume"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Event:
    """A transition worth telling people about (history, webhooks)."""

    kind: str  # started, step, analysis, extended, paused, marginal, resumed, ...
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase
    step: int  # index into spec.steps; len(steps) once all are done
    weight: float  # the candidate's percent of the pair's traffic
    preview: bool  # the preview segment sends its requests to the candidate
    started_at: float
    step_started: float
    window_started: float  # start of the traffic the next analysis judges
    next_check: float | None  # when the next analysis is due; None: none is
    failures: int = 0  # consecutive failed analyses
    extensions: int = 0  # no-data extensions of the current window
    paused_reason: str | None = None
    finished_at: float | None = None
    reason: str | None = None  # why it ended (abort reason, promotion)
    last: dict[str, Any] | None = None  # the latest judgement, as evidence
    generation: int = 0  # bumped by every transition: stores save by compare-and-set

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "step": self.step,
            "weight": self.weight,
            "preview": self.preview,
            "started_at": self.started_at,
            "step_started": self.step_started,
            "window_started": self.window_started,
            "next_check": self.next_check,
            "failures": self.failures,
            "extensions": self.extensions,
            "paused_reason": self.paused_reason,
            "finished_at": self.finished_at,
            "reason": self.reason,
            "last": self.last,
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        return cls(**{**d, "phase": Phase(d["phase"])})


@dataclass(frozen=True, slots=True)
class Transition:
    state: RolloutState
    events: tuple[Event, ...] = ()
    traffic_changed: bool = False  # apply (state.weight, state.preview) to the route

    @property
    def changed(self) -> bool:
        return bool(self.events) or self.traffic_changed


def _window(spec: RolloutSpec, state: RolloutState) -> float:
    step = spec.steps[state.step] if state.step < len(spec.steps) else None
    if isinstance(step, AnalysisStep) and step.analysis.window is not None:
        return step.analysis.window
    return spec.analysis.window


def _failure_limit(spec: RolloutSpec, state: RolloutState) -> int:
    step = spec.steps[state.step] if state.step < len(spec.steps) else None
    if isinstance(step, AnalysisStep) and step.analysis.failure_limit is not None:
        return step.analysis.failure_limit
    return spec.analysis.failure_limit


def begin(spec: RolloutSpec, now: float) -> Transition:
    """A new rollout: the candidate starts with no traffic, then the first steps run."""
    state = RolloutState(Phase.PROGRESSING, 0, 0.0, False, now, now, now, None)
    events = [Event("started", f"rollout of {spec.candidate!r} over {spec.stable!r} started")]
    return _enter(spec, state, now, events, traffic=True)


def _enter(
    spec: RolloutSpec, state: RolloutState, now: float, events: list[Event], traffic: bool
) -> Transition:
    """Run steps from ``state.step`` until one has to wait, or promote after the last."""
    steps = spec.steps
    while state.step < len(steps):
        step = steps[state.step]
        if isinstance(step, WeightStep):
            state = replace(state, weight=step.weight, step=state.step + 1)
            events.append(Event("step", f"candidate weight set to {step.weight:g}%"))
            traffic = True
        elif isinstance(step, PreviewStep):
            state = replace(state, preview=True, step=state.step + 1)
            events.append(Event("step", "preview segment now goes to the candidate"))
            traffic = True
        else:
            window = _window(spec, state)
            background = isinstance(step, PauseStep) and spec.analysis.background
            due = now + window if isinstance(step, AnalysisStep) or background else None
            state = replace(
                state,
                step_started=now,
                window_started=now,
                next_check=due,
                extensions=0,
            )
            events.append(Event("waiting", _waiting_text(step, window)))
            return _done(state, events, traffic)
    return _promote(spec, state, now, events, "all steps passed")


def _waiting_text(step: PauseStep | AnalysisStep, window: float) -> str:
    if isinstance(step, AnalysisStep):
        return f"analysis over the next {window:g}s"
    if step.pause.duration is None:
        return "paused until a person resumes"
    return f"pause for {step.pause.duration:g}s"


def _done(state: RolloutState, events: list[Event], traffic: bool) -> Transition:
    return Transition(replace(state, generation=state.generation + 1), tuple(events), traffic)


def _promote(
    spec: RolloutSpec, state: RolloutState, now: float, events: list[Event], why: str
) -> Transition:
    hold = spec.rollback_window
    state = replace(
        state,
        phase=Phase.PROMOTED if hold else Phase.COMPLETED,
        step=len(spec.steps),
        weight=100.0,
        preview=False,
        next_check=now + hold if hold else None,
        paused_reason=None,
        finished_at=now,
        reason=why,
    )
    events.append(Event("promoted", f"candidate {spec.candidate!r} promoted: {why}"))
    if not hold:
        events.append(Event("completed", "rollout completed"))
    return _done(state, events, True)


def _abort(
    spec: RolloutSpec, state: RolloutState, now: float, events: list[Event], why: str
) -> Transition:
    state = replace(
        state,
        phase=Phase.ABORTED,
        weight=0.0,
        preview=False,
        next_check=None,
        paused_reason=None,
        finished_at=now,
        reason=why,
    )
    events.append(
        Event("aborted", f"rolled back to {spec.stable!r}: {why}", {"evidence": state.last})
    )
    return _done(state, events, True)


def analysis_due(spec: RolloutSpec, state: RolloutState, now: float) -> bool:
    """Whether the controller should judge now (and pass the judgement to ``tick``)."""
    if state.phase not in (Phase.PROGRESSING, Phase.PAUSED) or state.next_check is None:
        return False
    return now >= state.next_check


def window_of(state: RolloutState, now: float) -> tuple[float, float]:
    """The traffic the due analysis judges: both variants over the same interval."""
    return state.window_started, now


def tick(
    spec: RolloutSpec, state: RolloutState, now: float, judgement: Judgement | None = None
) -> Transition:
    """Advance by time and, when an analysis was due, by its judgement."""
    if state.phase is Phase.PROMOTED:
        if state.next_check is not None and now >= state.next_check:
            done = replace(state, phase=Phase.COMPLETED, next_check=None)
            return _done(
                done, [Event("completed", "rollback window over; rollout completed")], False
            )
        return Transition(state)
    if state.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return Transition(state)
    if judgement is not None:
        return _judged(spec, state, now, judgement)
    step = spec.steps[state.step] if state.step < len(spec.steps) else None
    if (
        state.phase is Phase.PROGRESSING
        and isinstance(step, PauseStep)
        and step.pause.duration is not None
        and now >= state.step_started + step.pause.duration
    ):
        nxt = replace(state, step=state.step + 1, failures=0)
        return _enter(spec, nxt, now, [Event("step", "pause over")], traffic=False)
    return Transition(state)


def _judged(spec: RolloutSpec, state: RolloutState, now: float, judgement: Judgement) -> Transition:
    evidence = judgement.to_dict()
    state = replace(state, last=evidence)
    window = _window(spec, state)
    step = spec.steps[state.step] if state.step < len(spec.steps) else None
    gate = isinstance(step, AnalysisStep) and state.phase is Phase.PROGRESSING
    verdict = judgement.verdict
    events: list[Event] = []
    summary = f"verdict {verdict.value}, score {judgement.score:.0f}"
    if verdict is Verdict.FAIL:
        limit = _failure_limit(spec, state)
        failures = state.failures + 1
        state = replace(state, failures=failures)
        events.append(Event("analysis", f"{summary} (failure {failures} of {limit})", evidence))
        if judgement.aborted_by is not None:
            why = f"critical metric {judgement.aborted_by} failed"
            return _abort(spec, state, now, events, why)
        if failures >= limit:
            return _abort(spec, state, now, events, f"{failures} failed analyses in a row")
        state = replace(state, window_started=now, next_check=now + window, extensions=0)
        return _done(state, events, False)
    if not gate:  # background judging during a pause only ever aborts
        if verdict is Verdict.PASS:
            state = replace(state, failures=0)
        events.append(Event("analysis", f"background {summary}", evidence))
        state = replace(state, window_started=now, next_check=now + window)
        return _done(state, events, False)
    if verdict is Verdict.PASS:
        events.append(Event("analysis", summary, evidence))
        nxt = replace(state, step=state.step + 1, failures=0)
        return _enter(spec, nxt, now, events, traffic=False)
    if verdict is Verdict.MARGINAL:
        events.append(Event("marginal", f"{summary}: waiting for a person", evidence))
        return _done(_pause(spec, state, now, "marginal analysis", window), events, False)
    # No data: never a failure. Extend the window (same start, later end).
    if state.extensions >= spec.analysis.max_extensions:
        why = f"not enough data after {state.extensions} extension(s)"
        events.append(Event("paused", f"{why}: waiting for a person", evidence))
        return _done(_pause(spec, state, now, why, window), events, False)
    extensions = state.extensions + 1
    state = replace(state, extensions=extensions, next_check=now + window)
    events.append(Event("extended", f"not enough data; window extended ({extensions})", evidence))
    return _done(state, events, False)


def _pause(
    spec: RolloutSpec, state: RolloutState, now: float, why: str, window: float
) -> RolloutState:
    # The candidate keeps its traffic while a person decides, so it stays judged
    # (background) and a failure still aborts.
    due = now + window if spec.analysis.background else None
    return replace(state, phase=Phase.PAUSED, paused_reason=why, window_started=now, next_check=due)


def apply_command(
    spec: RolloutSpec, state: RolloutState, now: float, command: Command, reason: str = ""
) -> Transition:
    """A person's command; Conflict when it makes no sense in the current phase."""
    why = reason or f"{command.value} by a person"
    if command is Command.ABORT:
        if state.phase not in ACTIVE:
            raise Conflict(
                f"rollout {spec.name!r} is {state.phase.value}; there is nothing to abort"
                + (" (use a config rollback)" if state.phase is Phase.COMPLETED else ""),
                code="rollout_not_active",
            )
        return _abort(spec, state, now, [], why)
    if command is Command.PROMOTE:
        if state.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            raise Conflict(
                f"rollout {spec.name!r} is {state.phase.value}; only a running one can be promoted",
                code="rollout_not_active",
            )
        return _promote(spec, replace(state, phase=Phase.PROGRESSING), now, [], why)
    if command is Command.RESUME:
        step = spec.steps[state.step] if state.step < len(spec.steps) else None
        gate = (
            state.phase is Phase.PROGRESSING
            and isinstance(step, PauseStep)
            and step.pause.duration is None
        )
        if state.phase is not Phase.PAUSED and not gate:
            raise Conflict(
                f"rollout {spec.name!r} is not paused or at a manual gate",
                code="rollout_not_paused",
            )
        resumed = replace(
            state, phase=Phase.PROGRESSING, paused_reason=None, step=state.step + 1, failures=0
        )
        return _enter(spec, resumed, now, [Event("resumed", why)], traffic=False)
    if state.phase is not Phase.ABORTED:
        raise Conflict(
            f"rollout {spec.name!r} is {state.phase.value}; only an aborted one can be retried",
            code="rollout_not_aborted",
        )
    fresh = begin(spec, now)
    restarted = replace(fresh.state, generation=state.generation + 1)
    return Transition(restarted, (Event("retried", why), *fresh.events), True)
