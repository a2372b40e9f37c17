"""Config versions, their audit trail and route locks, in the shared SQLite file.

Every config the control plane applies becomes a numbered version (1, 2, 3, ...)
whose document is kept as canonical JSON: sorted keys, no whitespace, ASCII only,
no NaN or infinity. Two equal documents are then equal as text, so "is this the
config we already run?" is a string comparison; ``add_version`` still stores what
it is given, deciding that is the caller's business.

A version and the audit entry that explains it are written in one transaction:
a reader never sees a version without its entry, and a failure between the two
inserts leaves neither. Lock and unlock are audited the same way.

Several processes may open the file (gateway workers read, the control plane
writes). Writes take the write lock up front (``BEGIN IMMEDIATE``), so the "max
plus one" version number is decided under the lock even if a second writer
appears by mistake. Methods block: run them on the caller's store thread. A lock
makes the one connection safe from any thread all the same.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from typing import Any, Literal, overload

from turnout.exceptions import RouteLocked
from turnout.store.sqlite import connect, rollback

__all__ = [
    "AuditEntry",
    "ConfigStore",
    "Lock",
    "RouteLocked",
    "StoredVersion",
    "VersionInfo",
    "canonical_json",
]


def canonical_json(value: Any) -> str:
    """The canonical text of a JSON value: sorted keys, no whitespace, ASCII.

    ASCII because a lone surrogate (legal in a JSON string, not in UTF-8) would
    otherwise fail only at insert time. NaN and infinity raise ``ValueError``:
    they are not JSON, and NaN != NaN would break "equal configs are equal text".
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One config version. ``document`` is a fresh dict parsed from the stored text,
    so it is what any later ``get`` returns and mutating it changes nothing stored."""

    version: int
    document: dict[str, Any]
    author: str
    reason: str
    created_at: float
    source: str  # e.g. "file", "api", "rollback", "file-watch"

    @property
    def info(self) -> VersionInfo:
        return VersionInfo(self.version, self.author, self.reason, self.created_at, self.source)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version without its document, for history listings."""

    version: int
    author: str
    reason: str
    created_at: float
    source: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited event. ``version`` is the config version it created or concerns,
    None for events that made none (a refused change, a lock)."""

    id: int
    ts: float
    actor: str
    action: str
    detail: dict[str, Any] | None
    version: int | None


@dataclass(frozen=True, slots=True)
class Lock:
    """A route that config changes must leave alone, who locked it and why."""

    route: str
    actor: str
    reason: str
    ts: float


_VERSION_COLUMNS = "version, author, reason, created_at, source"


class ConfigStore:
    """Versions, audit and locks in the database at ``path`` (created and migrated
    on first use). ``clock`` gives every timestamp written, in unix seconds."""

    def __init__(
        self, path: str | PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # Opened lazily, like the other stores: constructing one never blocks.
        if self._closed:
            raise RuntimeError("this ConfigStore is closed")
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed if the block returns, rolled back if it
        raises (anything, including a refusal raised on purpose)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

    def close(self) -> None:
        """Close the connection. Idempotent; any later call raises RuntimeError."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- versions ------------------------------------------------------------------

    def add_version(
        self,
        document: Mapping[str, Any],
        *,
        author: str,
        reason: str,
        source: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
    ) -> StoredVersion:
        """Store ``document`` as the next version (the highest so far plus one), with
        an audit entry (``action`` by ``author``, ``detail``) in the same transaction.
        Raises ``ValueError``/``TypeError`` before touching the file if either is not
        plain JSON."""
        if not isinstance(document, Mapping):
            raise TypeError(f"a config document must be a mapping, not {type(document).__name__}")
        # Serialised before the transaction: a bad document never holds the write lock.
        text = canonical_json(document)
        detail_text = _detail_text(detail)
        with self._transaction() as conn:
            now = self._clock()
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM config_versions"
            ).fetchone()
            conn.execute(
                "INSERT INTO config_versions (version, document, author, reason, created_at,"
                " source) VALUES (?, ?, ?, ?, ?, ?)",
                (version, text, author, reason, now, source),
            )
            _insert_audit(conn, now, author, action, detail_text, version)
        return StoredVersion(int(version), json.loads(text), author, reason, now, source)

    def latest(self) -> StoredVersion | None:
        """The newest version; None before the first."""
        rows = self._rows(
            f"SELECT {_VERSION_COLUMNS}, document FROM config_versions"
            " ORDER BY version DESC LIMIT 1"
        )
        return _stored(rows[0]) if rows else None

    def get(self, version: int) -> StoredVersion | None:
        rows = self._rows(
            f"SELECT {_VERSION_COLUMNS}, document FROM config_versions WHERE version = ?",
            (version,),
        )
        return _stored(rows[0]) if rows else None

    @overload
    def versions(
        self, limit: int = ..., before: int | None = ..., *, documents: Literal[False] = ...
    ) -> list[VersionInfo]: ...

    @overload
    def versions(
        self, limit: int = ..., before: int | None = ..., *, documents: Literal[True]
    ) -> list[StoredVersion]: ...

    @overload
    def versions(
        self, limit: int = ..., before: int | None = ..., *, documents: bool
    ) -> list[VersionInfo] | list[StoredVersion]: ...

    def versions(
        self, limit: int = 50, before: int | None = None, *, documents: bool = False
    ) -> list[VersionInfo] | list[StoredVersion]:
        """Up to ``limit`` versions older than ``before`` (all, if None), newest first.
        Without ``documents`` the (possibly large) documents are neither read nor
        parsed; page on with ``before=`` the last version returned."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        columns = f"{_VERSION_COLUMNS}, document" if documents else _VERSION_COLUMNS
        rows = self._rows(
            f"SELECT {columns} FROM config_versions WHERE (?1 IS NULL OR version < ?1)"
            " ORDER BY version DESC LIMIT ?2",
            (before, limit),
        )
        if documents:
            return [_stored(row) for row in rows]
        return [_info(row) for row in rows]

    # -- audit ---------------------------------------------------------------------

    def record(
        self,
        action: str,
        actor: str,
        detail: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> AuditEntry:
        """Audit an event that adds no version: a refused change, a failed reload."""
        detail_text = _detail_text(detail)
        with self._transaction() as conn:
            now = self._clock()
            entry_id = _insert_audit(conn, now, actor, action, detail_text, version)
        return AuditEntry(entry_id, now, actor, action, _parse_detail(detail_text), version)

    def audit(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Up to ``limit`` entries with an id below ``before`` (all, if None), newest
        first; page on with ``before=`` the last entry's id."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        rows = self._rows(
            "SELECT id, ts, actor, action, detail, version FROM audit"
            " WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
            (before, limit),
        )
        return [
            AuditEntry(int(i), ts, actor, action, _parse_detail(detail), version)
            for i, ts, actor, action, detail, version in rows
        ]

    # -- route locks ---------------------------------------------------------------

    def lock(self, route: str, actor: str, reason: str, *, replace: bool = False) -> Lock:
        """Lock ``route``, audited as "lock". The same actor locking again updates the
        reason; a lock held by someone else raises ``RouteLocked`` unless ``replace``
        (the entry then names the lock replaced). A refused lock writes nothing: the
        caller may ``record`` it."""
        with self._transaction() as conn:
            now = self._clock()
            previous = _current_lock(conn, route)
            if previous is not None and previous.actor != actor and not replace:
                raise RouteLocked(previous)
            conn.execute(
                "INSERT OR REPLACE INTO route_locks (route, actor, reason, ts) VALUES (?, ?, ?, ?)",
                (route, actor, reason, now),
            )
            detail: dict[str, Any] = {"route": route, "reason": reason}
            if previous is not None:
                detail["replaced"] = _lock_detail(previous)
            _insert_audit(conn, now, actor, "lock", _detail_text(detail), None)
        return Lock(route, actor, reason, now)

    def unlock(self, route: str, actor: str) -> Lock | None:
        """Remove the lock on ``route``, whoever holds it, audited as "unlock" with the
        lock removed (so unlocking someone else's lock is on the record). Returns that
        lock; None, with nothing written, if the route was not locked."""
        with self._transaction() as conn:
            previous = _current_lock(conn, route)
            if previous is None:
                return None
            now = self._clock()
            conn.execute("DELETE FROM route_locks WHERE route = ?", (route,))
            detail = {"route": route, "removed": _lock_detail(previous)}
            _insert_audit(conn, now, actor, "unlock", _detail_text(detail), None)
        return previous

    def locks(self) -> dict[str, Lock]:
        """Every locked route, by name (in name order)."""
        rows = self._rows("SELECT route, actor, reason, ts FROM route_locks ORDER BY route")
        return {row[0]: Lock(*row) for row in rows}


# -- helpers --------------------------------------------------------------------------


def _detail_text(detail: Mapping[str, Any] | None) -> str | None:
    if detail is None:
        return None
    if not isinstance(detail, Mapping):
        raise TypeError(f"an audit detail must be a mapping, not {type(detail).__name__}")
    return canonical_json(detail)


def _parse_detail(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def _insert_audit(
    conn: sqlite3.Connection,
    ts: float,
    actor: str,
    action: str,
    detail: str | None,
    version: int | None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO audit (ts, actor, action, detail, version) VALUES (?, ?, ?, ?, ?)",
        (ts, actor, action, detail, version),
    )
    assert cursor.lastrowid is not None  # set by every successful INSERT
    return cursor.lastrowid


def _current_lock(conn: sqlite3.Connection, route: str) -> Lock | None:
    row = conn.execute(
        "SELECT route, actor, reason, ts FROM route_locks WHERE route = ?", (route,)
    ).fetchone()
    return None if row is None else Lock(*row)


def _lock_detail(lock: Lock) -> dict[str, Any]:
    return {"actor": lock.actor, "reason": lock.reason, "ts": lock.ts}


def _info(row: tuple[Any, ...]) -> VersionInfo:
    version, author, reason, created_at, source = row[:5]
    return VersionInfo(int(version), author, reason, created_at, source)


def _stored(row: tuple[Any, ...]) -> StoredVersion:
    version, author, reason, created_at, source, document = row
    return StoredVersion(int(version), json.loads(document), author, reason, created_at, source)
