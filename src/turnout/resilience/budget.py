"""The retry budget: retries as a bounded share of traffic.

Every first attempt deposits ``ratio`` of a token, every retry withdraws one, so
over time retries stay under ``ratio`` of requests however many fail: a failing
upstream sees at most 1 + ratio times its normal load, never the 1 + max_retries
times that per-request retry counts alone would allow. A small reserve refilled at
``min_per_second`` lets a quiet route still retry. Deposits expire after
``window`` seconds, so a burst of retries cannot be paid for by traffic long gone.
(Finagle's RetryBudget works the same way.)
"""

from __future__ import annotations


class RetryBudget:
    __slots__ = ("_balance", "_last", "_reserve", "cap", "min_per_second", "ratio", "window")

    def __init__(self, ratio: float, min_per_second: float, window: float = 10.0) -> None:
        if ratio < 0 or min_per_second < 0 or window <= 0:
            raise ValueError("ratio and min_per_second must be >= 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self.cap = min_per_second * window  # the reserve's ceiling
        self._balance = 0.0  # deposits from traffic, decaying over the window
        self._reserve = self.cap
        self._last: float | None = None

    def _advance(self, now: float) -> None:
        last = self._last
        self._last = now
        if last is None or now <= last:
            return
        elapsed = now - last
        # Decay in proportion to the time passed; nothing is left after a quiet window.
        self._balance = max(0.0, self._balance - self._balance * min(elapsed / self.window, 1.0))
        self._reserve = min(self.cap, self._reserve + elapsed * self.min_per_second)

    def deposit(self, now: float) -> None:
        """A first attempt: earns ``ratio`` of a retry."""
        self._advance(now)
        self._balance = min(self._balance + self.ratio, self.ratio * 100_000)

    def withdraw(self, now: float) -> bool:
        """Take one retry; False when the budget is spent (do not retry)."""
        self._advance(now)
        if self._balance >= 1.0:
            self._balance -= 1.0
            return True
        if self._reserve >= 1.0:
            self._reserve -= 1.0
            return True
        return False

    @property
    def available(self) -> float:
        return self._balance + self._reserve
