"""The routing engine: pure functions and immutable structures, no I/O.

A config compiles into a ``Router``; ``decide`` picks route and variant for a
``RequestView``; ``apply_variant`` rewrites the body for the chosen variant.
"""

from turnout.routing.bucketing import BUCKETS, HASH_VERSION, bucket
from turnout.routing.request import RequestView
from turnout.routing.router import Decision, Router
from turnout.routing.transform import apply_variant

__all__ = [
    "BUCKETS",
    "HASH_VERSION",
    "Decision",
    "RequestView",
    "Router",
    "apply_variant",
    "bucket",
]
