"""Outlier ejection per upstream: a circuit breaker with growing cooldowns.

States: *closed* (in use), *ejected* (skipped until its cooldown ends), *half-open*
(the cooldown ended; one probe request at a time is let through). An upstream is
ejected after ``consecutive_failures`` failures in a row, or when, over the last
``window`` seconds with at least ``min_requests`` requests, its failure rate
reaches ``error_rate``. A successful probe closes it; a failed one ejects it again
for twice as long (up to ``max_cooldown``). The doubling starts over once
``max_cooldown`` has passed since the last cooldown ended: an old outage is not
held against an upstream forever.

State is per process (as in Envoy): nothing to coordinate, and each worker
learns of an outage within a few requests of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import floor
from typing import Any

CLOSED = "closed"
EJECTED = "ejected"
HALF_OPEN = "half_open"
_SLOTS = 10  # the error-rate window is kept as this many counting slots


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    enabled: bool = True
    consecutive_failures: int = 5  # 0: not by consecutive failures
    error_rate: float | None = 0.5  # None: not by error rate
    min_requests: int = 20
    window: float = 30.0
    cooldown: float = 10.0
    max_cooldown: float = 300.0


class UpstreamHealth:
    """One upstream's ejection state. ``now`` is any monotonic clock, in seconds."""

    __slots__ = (
        "_epoch",
        "_fails",
        "_oks",
        "consecutive",
        "ejected_until",
        "ejections",
        "multiplier",
        "probing",
        "state",
    )

    def __init__(self) -> None:
        self.state = CLOSED
        self.consecutive = 0
        self.ejections = 0  # in all, for the stats
        self.multiplier = 0  # cooldown = cooldown * 2 ** (multiplier - 1)
        self.ejected_until = 0.0
        self.probing = False
        self._oks = [0] * _SLOTS
        self._fails = [0] * _SLOTS
        self._epoch = 0

    def available(self, policy: EjectionPolicy, now: float) -> bool:
        """May a request be sent now? In half-open state, True reserves the one
        probe: the caller must then report ``success``, ``failure`` or ``release``."""
        state = self.state
        if state == CLOSED or not policy.enabled:
            return True
        if state == EJECTED:
            if now < self.ejected_until:
                return False
            self.state = HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def release(self) -> None:
        """A reserved probe was not sent or its outcome says nothing (client gone)."""
        self.probing = False

    def success(self, policy: EjectionPolicy, now: float) -> None:
        self.consecutive = 0
        if self.state != CLOSED:
            self.state = CLOSED
            self.probing = False
            self._clear_window()
        self._count(policy, now, ok=True)

    def failure(self, policy: EjectionPolicy, now: float) -> None:
        self.consecutive += 1
        if not policy.enabled:
            return
        if self.state != CLOSED:  # a failed probe (or a late failure): eject again
            self._eject(policy, now)
            return
        fails, total = self._count(policy, now, ok=False)
        by_run = policy.consecutive_failures and self.consecutive >= policy.consecutive_failures
        by_rate = (
            policy.error_rate is not None
            and total >= policy.min_requests
            and fails >= policy.error_rate * total
        )
        if by_run or by_rate:
            self._eject(policy, now)

    def _eject(self, policy: EjectionPolicy, now: float) -> None:
        if self.multiplier and now - self.ejected_until >= policy.max_cooldown:
            self.multiplier = 0  # healthy for a long while since the last cooldown: start over
        self.multiplier += 1
        cooldown = min(policy.cooldown * 2.0 ** min(self.multiplier - 1, 62), policy.max_cooldown)
        self.state = EJECTED
        self.ejected_until = now + cooldown
        self.ejections += 1
        self.probing = False
        self.consecutive = 0
        self._clear_window()

    def _count(self, policy: EjectionPolicy, now: float, *, ok: bool) -> tuple[int, int]:
        """Count one outcome in the sliding window; the window's (failures, total)."""
        width = policy.window / _SLOTS
        epoch = floor(now / width)
        gap = epoch - self._epoch
        if gap > 0:
            for i in range(min(gap, _SLOTS)):
                slot = (self._epoch + 1 + i) % _SLOTS
                self._oks[slot] = self._fails[slot] = 0
            self._epoch = epoch
        slot = self._epoch % _SLOTS
        if ok:
            self._oks[slot] += 1
        else:
            self._fails[slot] += 1
        fails = sum(self._fails)
        return fails, fails + sum(self._oks)

    def _clear_window(self) -> None:
        self._oks[:] = [0] * _SLOTS
        self._fails[:] = [0] * _SLOTS

    def view(self, now: float) -> dict[str, Any]:
        state = self.state
        if state == EJECTED and now >= self.ejected_until:
            state = HALF_OPEN  # what the next request will find
        return {
            "state": state,
            "consecutive_failures": self.consecutive,
            "ejections": self.ejections,
            "ejected_for_s": max(self.ejected_until - now, 0.0) if state == EJECTED else 0.0,
            "window_requests": sum(self._oks) + sum(self._fails),
            "window_failures": sum(self._fails),
        }


class HealthBook:
    """Every upstream's health in one process; outlives config swaps, so an ejected
    upstream stays ejected when an unrelated setting changes."""

    def __init__(self) -> None:
        self.upstreams: dict[str, UpstreamHealth] = {}

    def of(self, name: str) -> UpstreamHealth:
        health = self.upstreams.get(name)
        if health is None:
            health = self.upstreams[name] = UpstreamHealth()
        return health

    def view(self, now: float) -> dict[str, dict[str, Any]]:
        return {name: h.view(now) for name, h in sorted(self.upstreams.items())}
