"""Rollouts in the shared SQLite file: spec, state, history, and the controller lease.

A rollout's state is saved by compare-and-set on its ``generation``: a save names
the generation it started from and succeeds only if that is still the stored one,
so two controllers (or a controller and a person's command racing it) can never
both apply a transition; the loser re-reads and tries again. The new state and the
events that explain it are written in one transaction.

The lease makes one controller the one that acts: ``acquire`` succeeds for the
current holder (renewal) or when the lease has expired, decided under the write
lock. Methods block; run them on an executor thread. A lock makes the one
connection safe from any thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from turnout.store.configs import canonical_json
from turnout.store.sqlite import connect, rollback

__all__ = ["RolloutEvent", "RolloutStore", "StoredRollout"]


@dataclass(frozen=True, slots=True)
class StoredRollout:
    name: str
    spec: dict[str, Any]
    state: dict[str, Any]
    generation: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    id: int
    rollout: str
    ts: float
    kind: str
    message: str
    detail: dict[str, Any] | None


class RolloutStore:
    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredRollout:
        name, spec, state, generation, created, updated = row
        return StoredRollout(
            name, json.loads(spec), json.loads(state), generation, created, updated
        )

    def get(self, name: str) -> StoredRollout | None:
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT name, spec, state, generation, created_at, updated_at"
                    " FROM rollouts WHERE name = ?",
                    (name,),
                )
                .fetchone()
            )
        return None if row is None else self._row(row)

    def all(self) -> list[StoredRollout]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT name, spec, state, generation, created_at, updated_at"
                    " FROM rollouts ORDER BY created_at, name"
                )
                .fetchall()
            )
        return [self._row(r) for r in rows]

    def create(
        self,
        name: str,
        spec: dict[str, Any],
        state: dict[str, Any],
        generation: int,
        now: float,
        events: Sequence[tuple[str, str, dict[str, Any] | None]] = (),
        *,
        replace_if: frozenset[str] = frozenset(),
    ) -> bool:
        """Store a new rollout; False if one of that name exists, unless its stored
        phase is in ``replace_if`` (a finished rollout started again)."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT state FROM rollouts WHERE name = ?", (name,)).fetchone()
                if row is not None and json.loads(row[0]).get("phase") not in replace_if:
                    db.execute("ROLLBACK")
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO rollouts"
                    " (name, spec, state, generation, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, canonical_json(spec), canonical_json(state), generation, now, now),
                )
                self._events(db, name, now, events)
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
        return True

    def save(
        self,
        name: str,
        state: dict[str, Any],
        generation: int,
        expected: int,
        now: float,
        events: Sequence[tuple[str, str, dict[str, Any] | None]] = (),
    ) -> bool:
        """Replace the state if the stored generation is still ``expected``."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "UPDATE rollouts SET state = ?, generation = ?, updated_at = ?"
                    " WHERE name = ? AND generation = ?",
                    (canonical_json(state), generation, now, name, expected),
                )
                if cur.rowcount != 1:
                    db.execute("ROLLBACK")
                    return False
                self._events(db, name, now, events)
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
        return True

    def record(
        self, name: str, now: float, kind: str, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        """An event that changes no state (e.g. a step that could not be applied)."""
        with self._lock:
            self._events(self._db(), name, now, [(kind, message, detail)])

    @staticmethod
    def _events(
        db: sqlite3.Connection,
        name: str,
        now: float,
        events: Sequence[tuple[str, str, dict[str, Any] | None]],
    ) -> None:
        db.executemany(
            "INSERT INTO rollout_events (rollout, ts, kind, message, detail)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (name, now, kind, msg, None if detail is None else canonical_json(detail))
                for kind, msg, detail in events
            ],
        )

    def events(self, name: str, limit: int = 100) -> list[RolloutEvent]:
        """The newest ``limit`` events of a rollout, oldest first."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT id, rollout, ts, kind, message, detail FROM rollout_events"
                    " WHERE rollout = ? ORDER BY id DESC LIMIT ?",
                    (name, limit),
                )
                .fetchall()
            )
        return [
            RolloutEvent(i, r, ts, k, m, None if d is None else json.loads(d))
            for i, r, ts, k, m, d in reversed(rows)
        ]

    def acquire(self, lease: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew ``lease`` for ``holder`` until ``now + ttl``; False if another
        holder's lease has not expired."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT holder, expires FROM leases WHERE name = ?", (lease,)
                ).fetchone()
                if row is not None and row[0] != holder and row[1] > now:
                    db.execute("ROLLBACK")
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO leases (name, holder, expires) VALUES (?, ?, ?)",
                    (lease, holder, now + ttl),
                )
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
        return True

    def release(self, lease: str, holder: str) -> None:
        with self._lock:
            self._db().execute("DELETE FROM leases WHERE name = ? AND holder = ?", (lease, holder))
