"""Opening the embedded database, and the schema as an ordered list of steps.

One SQLite file is shared by every worker process of a gateway: WAL mode lets
readers run beside the single writer of the moment, and a busy timeout turns
"another process holds the write lock" into a short wait instead of an error.
``synchronous=NORMAL`` is the usual WAL pairing: a power cut may lose the last
transactions, never corrupt the file; that is the right trade for a request log.

Schema changes are *appended* to ``MIGRATIONS``, never edited once released: the
``schema_version`` table records which steps a file has had, and ``migrate`` runs
the missing ones in order, in one write transaction, so several processes starting
at once apply each step exactly once (the second waits for the lock, then sees the
new version).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from os import PathLike

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "Migration",
    "connect",
    "migrate",
    "rollback",
    "schema_version",
]

BUSY_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version (1, 2, ... with no gaps) and its DDL statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "meta, request log, feedback",
        (
            # Small per-database settings, e.g. the secret that keys stickiness-key
            # hashes, which every process sharing the file must agree on.
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
            # key_hash, never the raw key. Bodies are JSON text, NULL when the
            # request was not sampled. No UNIQUE on request_id: one bad duplicate
            # must not fail a whole batch.
            """CREATE TABLE request_log (
                id INTEGER PRIMARY KEY,
                request_id TEXT NOT NULL,
                ts REAL NOT NULL,
                route TEXT,
                variant TEXT,
                upstream TEXT,
                status INTEGER NOT NULL,
                error_class TEXT,
                latency_ms REAL NOT NULL,
                ttft_ms REAL,
                input_tokens INTEGER,
                output_tokens INTEGER,
                cost_usd REAL,
                key_hash TEXT,
                stream INTEGER NOT NULL,
                attempts INTEGER NOT NULL,
                request_body TEXT,
                response_body TEXT
            )""",
            # ts: retention deletes the oldest rows and "recent" reads the newest.
            "CREATE INDEX request_log_ts ON request_log (ts)",
            "CREATE INDEX request_log_route_ts ON request_log (route, ts)",
            "CREATE INDEX request_log_request_id ON request_log (request_id)",
            # No foreign key to request_log: feedback may arrive for a request whose
            # row was dropped under load or already aged out.
            """CREATE TABLE feedback (
                id INTEGER PRIMARY KEY,
                request_id TEXT,
                key_hash TEXT,
                route TEXT NOT NULL,
                variant TEXT NOT NULL,
                name TEXT NOT NULL,
                value REAL NOT NULL,
                ts REAL NOT NULL
            )""",
            "CREATE INDEX feedback_route_ts ON feedback (route, ts)",
            "CREATE INDEX feedback_ts ON feedback (ts)",
        ),
    ),
    Migration(
        2,
        "config versions, audit trail, route locks",
        (
            # Documents are canonical JSON (sorted keys, no whitespace), so two equal
            # configs are equal as text. Written by the control plane only.
            """CREATE TABLE config_versions (
                version INTEGER PRIMARY KEY,
                document TEXT NOT NULL,
                author TEXT,
                reason TEXT,
                created_at REAL,
                source TEXT
            )""",
            # version: the config version an entry created or concerns; NULL for
            # events that made none (refused changes, locks). No foreign key, so an
            # entry about a version cannot block some later pruning of versions.
            """CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                ts REAL,
                actor TEXT,
                action TEXT,
                detail TEXT,
                version INTEGER
            )""",
            "CREATE INDEX audit_version ON audit (version)",
            "CREATE TABLE route_locks (route TEXT PRIMARY KEY, actor TEXT, reason TEXT, ts REAL)",
        ),
    ),
    Migration(
        3,
        "request log: one index fewer",
        (
            # Every index is paid for on each of the many inserts; recent(route) is a
            # debugging read that can scan the ts index and filter instead.
            "DROP INDEX IF EXISTS request_log_route_ts",
        ),
    ),
    Migration(
        4,
        "rollouts, their history, controller leases",
        (
            # spec and state are JSON; generation is bumped by every saved
            # transition so two writers can never both apply one (compare-and-set).
            """CREATE TABLE rollouts (
                name TEXT PRIMARY KEY,
                spec TEXT NOT NULL,
                state TEXT NOT NULL,
                generation INTEGER NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            """CREATE TABLE rollout_events (
                id INTEGER PRIMARY KEY,
                rollout TEXT NOT NULL,
                ts REAL NOT NULL,
                kind TEXT NOT NULL,
                message TEXT NOT NULL,
                detail TEXT
            )""",
            "CREATE INDEX rollout_events_rollout ON rollout_events (rollout, id)",
            # One row per singleton job (the rollout controller): who acts, until when.
            "CREATE TABLE leases"
            " (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL)",
        ),
    ),
    Migration(
        5,
        "shadow disagreement samples",
        (
            # Pairs whose live and shadow answers disagreed, kept for a person to
            # review. variant is the live variant; scores is a JSON object (evaluator
            # name -> number or null). Texts are redacted and clipped before storing.
            """CREATE TABLE shadow_samples (
                id INTEGER PRIMARY KEY,
                ts REAL NOT NULL,
                route TEXT NOT NULL,
                shadow TEXT NOT NULL,
                variant TEXT NOT NULL,
                request_id TEXT NOT NULL,
                scores TEXT NOT NULL,
                live_status INTEGER NOT NULL,
                shadow_status INTEGER NOT NULL,
                live_error TEXT,
                shadow_error TEXT,
                request TEXT,
                live TEXT,
                shadow_text TEXT
            )""",
            # Reading the newest of one pair, and pruning each pair to its newest N.
            "CREATE INDEX shadow_samples_route_shadow ON shadow_samples (route, shadow, id)",
        ),
    ),
)


def connect(
    path: str | PathLike[str], *, migrate_schema: bool = True, timeout: float = BUSY_TIMEOUT_S
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with a busy timeout and foreign keys on, and bring
    its schema up to date.

    The connection is in autocommit mode (``isolation_level=None``): transactions are
    explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``, so a writer takes the write lock up
    front instead of failing to upgrade a read lock. ``check_same_thread`` is off
    because connections are opened on one thread and handed to another; each
    connection is still used by one thread at a time (the owner guarantees it).
    """
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        # The busy timeout first: switching to WAL needs a lock another process
        # opening the same new file may hold for a moment.
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _set_wal(conn, timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if migrate_schema:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL, retrying "database is locked" until ``timeout``: SQLite does not
    call the busy handler for this switch, so processes opening a new file together
    would otherwise fail at once (measured: tests/store/test_processes.py)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            continue
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL (got {mode!r})")
        return


def schema_version(conn: sqlite3.Connection) -> int:
    """The last step applied to this database; 0 for a new file."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, steps: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the steps this database has not had yet; return the version it is at.

    Refuses a database that is *newer* than this code (a downgrade): guessing at a
    schema it does not know could lose data.
    """
    for i, step in enumerate(steps, start=1):
        if step.version != i:
            raise ValueError(f"migration versions must be 1, 2, 3...; got {step.version} at {i}")
    latest = len(steps)
    if schema_version(conn) == latest:  # the common case, without the write lock
        return latest
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = schema_version(conn)  # again, under the lock: another process may have won
        if current > latest:
            raise RuntimeError(
                f"the database is at schema version {current}, newer than this turnout"
                f" ({latest}); refusing to use it"
            )
        for step in steps[current:]:
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return latest


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends some on its own (disk
    full, I/O error), and a second ROLLBACK would hide the error that caused it."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
