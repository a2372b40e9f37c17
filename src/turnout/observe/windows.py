"""Sliding time windows over mergeable aggregates, with an injected clock.

A ``Windowed`` keeps a ring of per-interval slots plus the merge of every finished
slot, so recording costs one compare (``current(now)``) and memory is fixed at
construction: ``slot_count + 1`` aggregates, reused forever.

Time is the caller's: every method takes ``now`` in seconds (a monotonic clock is
the right one) and none reads a clock. Interval ``e`` is ``[e * interval, (e + 1) *
interval)``; the newest interval seen is the *head*, the slot being recorded into.

Window semantics. ``window(now, seconds)`` merges the head and the ``k = ceil(seconds
/ interval)`` intervals before it, whole intervals only, so it covers at least
``seconds`` and less than ``seconds + interval``: a 60 s window at 10 s slots spans
60 to 70 s. ``window_span`` gives the exact length covered (shortened when the
series started more recently), the denominator for rates such as requests/s.

Clock oddities. A ``now`` earlier than the head interval (a clock stepping back)
records into the head slot, as if no time had passed. A ``now`` far ahead (an idle
gap) clears every slot it skips, lazily, at the next call; the cost is bounded by
the slot count, and each slot is cleared once per trip round the ring.

Not thread-safe. A slot returned by ``current`` is valid until the next call with a
later ``now``: record into it straight away rather than keeping it.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil, floor, inf
from typing import Generic, Protocol, Self, TypeVar

__all__ = ["Aggregate", "Windowed"]


class Aggregate(Protocol):
    """What a slot must do. The empty aggregate comes from the factory given to
    ``Windowed``, e.g. ``DDSketch`` or a dataclass of counters and sketches."""

    def merge(self, other: Self, /) -> None:
        """Add ``other``'s contents into this one, leaving ``other`` unchanged."""

    def clear(self) -> None:
        """Return to the empty state, keeping storage for reuse."""


A = TypeVar("A", bound=Aggregate)


class Windowed(Generic[A]):
    """A ring of ``ceil(horizon / interval) + 1`` slots and a cumulative total."""

    __slots__ = (
        "_closed",
        "_head",
        "_head_slot",
        "_horizon",
        "_interval",
        "_new",
        "_next_rotation",
        "_origin",
        "_slots",
    )

    def __init__(
        self,
        new: Callable[[], A],
        *,
        interval: float = 10.0,
        horizon: float = 3600.0,
        start: float | None = None,
    ) -> None:
        """``new()`` makes an empty aggregate. ``horizon`` is the longest window that
        ``window`` will serve. ``start`` is when the series began, for spans; by default
        the first ``now`` any method sees."""
        if not interval > 0.0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        if not horizon >= interval:
            raise ValueError(f"horizon must be >= interval, got {horizon!r}")
        self._new = new
        self._interval = float(interval)
        self._horizon = float(horizon)
        # One more than the longest window's whole intervals: the head is partial.
        n = _intervals(self._horizon, self._interval) + 1
        self._slots: list[A] = [new() for _ in range(n)]
        self._closed: A = new()
        self._origin = start
        self._head: int | None = None
        self._head_slot: A = self._slots[0]
        # -inf sends the first call through _rotate, which sets the head.
        self._next_rotation = -inf

    def current(self, now: float) -> A:
        """The slot to record into at ``now``; rotates expired slots first."""
        if now < self._next_rotation:
            return self._head_slot
        return self._rotate(now)

    def _rotate(self, now: float) -> A:
        epoch = floor(now / self._interval)
        head = self._head
        if head is None:
            if self._origin is None:
                self._origin = now
        elif epoch <= head:
            # Float rounding at an interval boundary; the head stays.
            return self._head_slot
        else:
            slots = self._slots
            n = len(slots)
            self._closed.merge(self._head_slot)
            # The skipped slots were merged into _closed when they stopped being the
            # head; clearing them is all that expiry needs.
            for e in range(head + 1, min(epoch, head + n) + 1):
                slots[e % n].clear()
        self._head = epoch
        self._head_slot = self._slots[epoch % len(self._slots)]
        self._next_rotation = (epoch + 1) * self._interval
        return self._head_slot

    def window(self, now: float, seconds: float) -> A:
        """A new aggregate of the head interval and the ``ceil(seconds / interval)``
        before it. ``seconds`` may be at most ``horizon``."""
        k = self._window_intervals(seconds)
        self.current(now)
        out = self._new()
        head = self._head
        assert head is not None  # current() has set it
        slots = self._slots
        n = len(slots)
        for e in range(head - k, head + 1):
            out.merge(slots[e % n])
        return out

    def window_span(self, now: float, seconds: float) -> float:
        """Seconds that ``window(now, seconds)`` covers: from the start of its oldest
        interval, or the series' start if later, to ``now`` (or the head's start, if
        the clock went back before it)."""
        k = self._window_intervals(seconds)
        self.current(now)
        assert self._head is not None and self._origin is not None
        begin = max((self._head - k) * self._interval, self._origin)
        return max(0.0, self._end(now) - begin)

    def cumulative(self) -> A:
        """A new aggregate of everything recorded since construction."""
        out = self._new()
        out.merge(self._closed)
        out.merge(self._head_slot)
        return out

    def cumulative_span(self, now: float) -> float:
        """Seconds from the series' start to ``now``: the denominator for lifetime rates."""
        self.current(now)
        assert self._origin is not None
        return max(0.0, self._end(now) - self._origin)

    def _end(self, now: float) -> float:
        assert self._head is not None
        return max(now, self._head * self._interval)

    def _window_intervals(self, seconds: float) -> int:
        if not 0.0 < seconds <= self._horizon:
            raise ValueError(f"window must be in (0, {self._horizon}] seconds, got {seconds!r}")
        return _intervals(seconds, self._interval)

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def horizon(self) -> float:
        return self._horizon

    @property
    def slot_count(self) -> int:
        """Slot objects in the ring (one more aggregate holds the finished ones)."""
        return len(self._slots)


def _intervals(seconds: float, interval: float) -> int:
    # The tolerance keeps a quotient a rounding error above a whole number (0.7 / 0.1
    # is 7.000000000000001) from costing one more interval.
    return max(1, ceil(seconds / interval - 1e-9))
