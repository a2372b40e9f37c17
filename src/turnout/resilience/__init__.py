"""Pure logic of resilience routing: which upstream to try next, when to wait and
retry, when an upstream is ejected. No sockets and no clocks: the gateway's
dispatch loop (``turnout.gateway.dispatch``) passes ``now`` in and does the I/O."""

from turnout.resilience.backoff import backoff_delay, parse_retry_after
from turnout.resilience.budget import RetryBudget
from turnout.resilience.ejection import EjectionPolicy, HealthBook, UpstreamHealth

__all__ = [
    "EjectionPolicy",
    "HealthBook",
    "RetryBudget",
    "UpstreamHealth",
    "backoff_delay",
    "parse_retry_after",
]
