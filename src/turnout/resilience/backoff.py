"""How long to wait before a retry: exponential backoff with full jitter, and the
upstream's own ``Retry-After`` when it gives one."""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime


def backoff_delay(retry: int, base: float, cap: float, draw: float) -> float:
    """Seconds before retry number ``retry`` (1 for the first).

    Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
    retries of many clients hit by the same failure, instead of bunching them into
    synchronised waves. ``draw`` is a uniform number in [0, 1), passed in so the
    function stays pure.
    """
    if retry < 1:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(retry - 1, 62))
    return ceiling * min(max(draw, 0.0), 1.0)


def parse_retry_after(value: str | None, now_unix: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` (delta seconds, or an HTTP date) or
    ``retry-after-ms`` value; None when absent or unreadable. Never negative."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_unix
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
