"""The rollout controller: the I/O around the pure state machine.

Every ``interval`` seconds the controller renews its lease (only the holder acts,
so two turnout processes sharing a store never both move a rollout), starts the
rollouts the live config declares and the store has never seen, and ticks every
active one: judge when an analysis is due, save the transition, then apply the
traffic it asks for through the control plane, the one path by which the live
config changes. People's commands (abort, promote, resume, retry) take the same
path under the same lock, so a command and a tick never interleave.

State is saved *before* traffic is applied. A crash between the two leaves the
stored state ahead of the live config, and the next leader re-applies it (an
absolute weight, so applying it again changes nothing). A change the plane
refuses (a locked route) is recorded once and retried every round, and the
rollout does not advance meanwhile: nothing is judged on traffic it does not
have. An abort overrides locks: giving stable its traffic back must always work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from turnout.analysis.judge import judge
from turnout.config.checks import rollout_variant_errors
from turnout.config.load import field_errors
from turnout.config.rollout import RolloutSpec
from turnout.control.plane import ControlPlane
from turnout.exceptions import ConfigError, Conflict, GatewayError, NotFound
from turnout.rollout.evidence import Evidence, metric_specs, thresholds
from turnout.rollout.machine import (
    ACTIVE,
    Command,
    Phase,
    RolloutState,
    Transition,
    analysis_due,
    apply_command,
    begin,
    tick,
    window_of,
)
from turnout.rollout.status import status_view
from turnout.rollout.traffic import with_traffic
from turnout.rollout.webhooks import Notifier, resolve_secret
from turnout.store.rollouts import RolloutStore, StoredRollout

__all__ = ["RolloutController"]

log = logging.getLogger("turnout.rollout")

LEASE = "rollout-controller"
_RESTARTABLE = frozenset({Phase.COMPLETED.value, Phase.ABORTED.value})


def parse_spec(document: Any) -> RolloutSpec:
    """A rollout spec from JSON, or a ConfigError with every field path."""
    try:
        return RolloutSpec.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(field_errors(exc)) from None


class RolloutController:
    def __init__(
        self,
        plane: ControlPlane,
        path: Path,
        base_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
        lease_ttl: float = 10.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.plane = plane
        self.base_dir = base_dir
        self.store = RolloutStore(path)
        self.evidence = Evidence(path)
        self.notifier = notifier if notifier is not None else Notifier(base_dir)
        self.clock = clock
        self.interval = interval
        self.lease_ttl = lease_ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="turnout-rollouts")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._applied: dict[str, int] = {}  # rollout -> generation whose traffic is live
        self._blocked: dict[str, str] = {}  # rollout -> why its traffic could not be applied
        self._failing: dict[str, str] = {}  # rollout -> why its last round failed

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.notifier.start()
        self._task = asyncio.create_task(self._loop(), name="turnout-rollouts")

    async def close(self) -> None:
        """Stop ticking and give the lease up at once; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leader:
            await self._run(self.store.release, LEASE, self.holder)
        await self.notifier.close()
        await self._run(self.store.close)
        await self._run(self.evidence.close)
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # the controller must outlive any one bad tick
                log.exception("rollout controller tick failed")
            await asyncio.sleep(self.interval)

    async def step(self) -> None:
        """One round: lease, declared rollouts, then every active rollout."""
        async with self._lock:
            now = self.clock()
            leader = await self._run(self.store.acquire, LEASE, self.holder, now, self.lease_ttl)
            if not leader:
                self.leader = False
                self._applied.clear()  # another holder may change traffic meanwhile
                return
            self.leader = True
            # One rollout's trouble (a bad declared spec, a judge error) must not
            # stall the others: each is tried on its own, failures logged once.
            for spec in self.plane.snapshot.config.rollouts:
                if await self._run(self.store.get, spec.name) is None:
                    await self._guarded(spec.name, self._start(spec, "config", now))
            for stored in await self._run(self.store.all):
                if stored.state["phase"] in ACTIVE:
                    await self._guarded(stored.name, self._advance(stored, now))

    async def _guarded(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if self._failing.get(name) != why:
                self._failing[name] = why
                log.exception("rollout %s: round failed", name)
            return
        self._failing.pop(name, None)

    # -- ticking ---------------------------------------------------------------------

    async def _advance(self, stored: StoredRollout, now: float) -> None:
        spec = RolloutSpec.model_validate(stored.spec)
        state = RolloutState.from_dict(stored.state)
        if self._applied.get(spec.name) != stored.generation and not await self._apply(
            spec, state, force=False
        ):
            return  # not live yet (a locked route): its timers and analyses wait too
        judgement = None
        if analysis_due(spec, state, now):
            start, end = window_of(state, now)
            observed = await self._run(self.evidence.observations, spec, start, end)
            # Off the loop: at the 20k-sample cap the rank tests take ~0.4 s
            # (bench/stats_micro.py), and in one process this loop also serves traffic.
            judgement = await self._run(
                judge, metric_specs(spec.analysis), observed, thresholds(spec.analysis)
            )
        transition = tick(spec, state, now, judgement)
        if transition.changed:
            await self._commit(spec, stored.generation, transition, now, force=False)

    async def _commit(
        self, spec: RolloutSpec, expected: int, t: Transition, now: float, *, force: bool
    ) -> None:
        events = [(e.kind, e.message, e.detail or None) for e in t.events]
        saved = await self._run(
            self.store.save, spec.name, t.state.to_dict(), t.state.generation, expected, now, events
        )
        if not saved:
            raise Conflict(
                f"rollout {spec.name!r} changed meanwhile; try again", code="rollout_changed"
            )
        self._announce(spec, t, now)
        if t.traffic_changed:
            await self._apply(spec, t.state, force=force)
        elif self._applied.get(spec.name) == expected:
            self._applied[spec.name] = t.state.generation

    async def _apply(self, spec: RolloutSpec, state: RolloutState, *, force: bool) -> bool:
        """Make the live config split the route as ``state`` says."""
        try:
            doc = with_traffic(self.plane.document, spec, state.weight, state.preview, state.step)
            outcome = await self.plane.apply(
                doc,
                author=f"rollout:{spec.name}",
                reason=f"rollout {spec.name}: {state.phase.value}, candidate at {state.weight:g}%",
                source="rollout",
                action="rollout",
                force=force,
            )
        except (GatewayError, ConfigError) as exc:
            why = str(exc)
            if self._blocked.get(spec.name) != why:
                self._blocked[spec.name] = why
                log.warning("rollout %s: traffic not applied: %s", spec.name, why)
                await self._run(
                    self.store.record, spec.name, self.clock(), "blocked", f"not applied: {why}"
                )
            return False
        self._blocked.pop(spec.name, None)
        self._applied[spec.name] = state.generation
        if outcome.changed:
            log.info("rollout %s: config version %d", spec.name, outcome.version)
        return True

    def _announce(self, spec: RolloutSpec, t: Transition, now: float) -> None:
        for e in t.events:
            log.info("rollout %s: %s: %s", spec.name, e.kind, e.message)
            if spec.webhooks:
                self.notifier.notify(
                    spec.webhooks,
                    {
                        "event": e.kind,
                        "rollout": spec.name,
                        "route": spec.route,
                        "stable": spec.stable,
                        "candidate": spec.candidate,
                        "message": e.message,
                        "phase": t.state.phase.value,
                        "step": t.state.step,
                        "weight": t.state.weight,
                        "at": now,
                        "detail": e.detail,
                    },
                )

    # -- commands (admin API, CLI) ---------------------------------------------------

    def _check(self, spec: RolloutSpec) -> None:
        """A spec must fit the live config and its webhook secrets must resolve."""
        routes = {r.name: r for r in self.plane.snapshot.config.routes}
        route = routes.get(spec.route)
        if route is None:
            raise ConfigError.single("route", f"the live config has no route {spec.route!r}")
        problems = list(rollout_variant_errors(spec.stable, spec.candidate, route))
        if problems:
            raise ConfigError(problems)
        for hook in spec.webhooks:
            resolve_secret(hook, self.base_dir)

    async def _start(self, spec: RolloutSpec, author: str, now: float) -> StoredRollout:
        self._check(spec)
        for other in await self._run(self.store.all):
            if (
                other.name != spec.name
                and other.state["phase"] in ACTIVE
                and other.spec["route"] == spec.route
            ):
                raise Conflict(
                    f"rollout {other.name!r} is already moving route {spec.route!r};"
                    " finish or abort it first",
                    code="route_in_rollout",
                )
        existing: StoredRollout | None = await self._run(self.store.get, spec.name)
        if existing is not None and existing.state["phase"] not in _RESTARTABLE:
            raise Conflict(
                f"rollout {spec.name!r} is already {existing.state['phase']}",
                code="rollout_exists",
            )
        t = begin(spec, now)
        events: list[tuple[str, str, dict[str, Any] | None]] = [
            ("created", f"started by {author}", None)
        ]
        events += [(e.kind, e.message, e.detail or None) for e in t.events]
        created = await self._run(
            lambda: self.store.create(
                spec.name,
                spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                t.state.to_dict(),
                t.state.generation,
                now,
                events,
                replace_if=_RESTARTABLE,
            )
        )
        if not created:
            raise Conflict(f"rollout {spec.name!r} already exists", code="rollout_exists")
        self._announce(spec, t, now)
        await self._apply(spec, t.state, force=False)
        stored: StoredRollout = await self._run(self.store.get, spec.name)
        return stored

    async def start_rollout(self, document: Any, author: str) -> dict[str, Any]:
        spec = parse_spec(document)
        async with self._lock:
            await self._start(spec, author, self.clock())
        return await self.status(spec.name)

    async def command(
        self, name: str, command: Command, author: str, reason: str
    ) -> dict[str, Any]:
        async with self._lock:
            stored = await self._get(name)
            spec = RolloutSpec.model_validate(stored.spec)
            state = RolloutState.from_dict(stored.state)
            now = self.clock()
            t = apply_command(spec, state, now, command, reason or f"{command.value} by {author}")
            force = command is Command.ABORT  # stable gets its traffic back, locked or not
            await self._commit(spec, stored.generation, t, now, force=force)
        return await self.status(name)

    async def _get(self, name: str) -> StoredRollout:
        stored: StoredRollout | None = await self._run(self.store.get, name)
        if stored is None:
            raise NotFound(f"no rollout {name!r}", code="unknown_rollout")
        return stored

    async def status(self, name: str) -> dict[str, Any]:
        stored = await self._get(name)
        events = await self._run(self.store.events, name, 20)
        return status_view(
            stored, events, self.plane.document, self.clock(), self._blocked.get(name)
        )

    async def list(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for stored in await self._run(self.store.all):
            out.append(
                status_view(stored, [], self.plane.document, now, self._blocked.get(stored.name))
            )
        return out
