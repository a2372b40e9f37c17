"""The embedded store: one SQLite file (WAL) shared by every worker process.

``RequestLog`` takes a row per request without blocking the event loop (a bounded
queue and a batching writer process); ``FeedbackStore`` records feedback signals and
summarises them per variant. ``store.sqlite`` opens the file and migrates its schema.
"""

from turnout.store.entry import KeyHasher, LogEntry, Redactor, load_key_secret
from turnout.store.feedback import FeedbackStore, FeedbackSummary
from turnout.store.requestlog import RequestLog
from turnout.store.sqlite import MIGRATIONS, Migration, connect, migrate

__all__ = [
    "MIGRATIONS",
    "FeedbackStore",
    "FeedbackSummary",
    "KeyHasher",
    "LogEntry",
    "Migration",
    "Redactor",
    "RequestLog",
    "connect",
    "load_key_secret",
    "migrate",
]
