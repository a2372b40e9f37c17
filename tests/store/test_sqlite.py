"""Opening the database: pragmas, and migrations applied once, in order, atomically."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from turnout.store.sqlite import MIGRATIONS, Migration, connect, migrate, schema_version


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def test_connect_sets_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert {"schema_version", "meta", "request_log", "feedback"} <= tables(conn)
        assert schema_version(conn) == len(MIGRATIONS)
    finally:
        conn.close()


def test_migration_versions_are_contiguous_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_migrate_is_idempotent_and_applies_only_appended_steps(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db", migrate_schema=False)
    one = (Migration(1, "a", ("CREATE TABLE a (x INTEGER)",)),)
    two = (*one, Migration(2, "b", ("CREATE TABLE b (y INTEGER)", "INSERT INTO b VALUES (7)")))
    assert migrate(conn, one) == 1
    assert migrate(conn, one) == 1
    assert migrate(conn, two) == 2  # would fail if step 1 ran again: a exists
    assert migrate(conn, two) == 2
    assert conn.execute("SELECT y FROM b").fetchall() == [(7,)]
    versions = conn.execute("SELECT version, name FROM schema_version ORDER BY version")
    assert versions.fetchall() == [(1, "a"), (2, "b")]
    conn.close()


def test_a_failing_step_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db", migrate_schema=False)
    one = (Migration(1, "a", ("CREATE TABLE a (x INTEGER)",)),)
    migrate(conn, one)
    bad = (*one, Migration(2, "bad", ("CREATE TABLE c (z INTEGER)", "THIS IS NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, bad)
    assert schema_version(conn) == 1
    assert "c" not in tables(conn)
    assert not conn.in_transaction
    conn.close()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db", migrate_schema=False)
    steps = (Migration(1, "a", ("CREATE TABLE a (x INTEGER)",)),)
    migrate(conn, (*steps, Migration(2, "b", ("CREATE TABLE b (y INTEGER)",))))
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn, steps)
    conn.close()


def test_gaps_in_versions_are_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db", migrate_schema=False)
    with pytest.raises(ValueError, match="1, 2, 3"):
        migrate(conn, (Migration(2, "b", ("CREATE TABLE b (y INTEGER)",)),))
    conn.close()
