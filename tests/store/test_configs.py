"""Config versions, audit trail and route locks: durable, atomic, readable elsewhere."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from turnout.store.configs import (
    AuditEntry,
    ConfigStore,
    Lock,
    RouteLocked,
    StoredVersion,
    VersionInfo,
    canonical_json,
)

DOC: dict[str, Any] = {
    "version": 1,
    "upstreams": [{"name": "openai", "base_url": "https://api.openai.com/v1"}],
    "routes": [
        {
            "name": "main",
            "variants": [
                {"name": "stable", "upstream": "openai", "weight": 95.0},
                {"name": "canary", "upstream": "openai", "weight": 5.0, "model": "gpt-4o-mini"},
            ],
        }
    ],
}


def doc(weight: float) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(json.dumps(DOC))
    d["routes"][0]["variants"][0]["weight"] = 100.0 - weight
    d["routes"][0]["variants"][1]["weight"] = weight
    return d


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "turnout.db"


@pytest.fixture
def store(path: Path) -> Iterator[ConfigStore]:
    s = ConfigStore(path, clock=Clock())
    yield s
    s.close()


def add(store: ConfigStore, weight: float, **kw: Any) -> StoredVersion:
    fields: dict[str, Any] = {
        "author": "alice",
        "reason": f"canary {weight}%",
        "source": "api",
        "action": "apply",
    }
    fields.update(kw)
    return store.add_version(doc(weight), **fields)


def raw(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- versions -------------------------------------------------------------------------


def test_an_empty_store_has_no_versions(store: ConfigStore) -> None:
    assert store.latest() is None
    assert store.get(1) is None
    assert store.versions() == []
    assert store.audit() == []
    assert store.locks() == {}


def test_versions_number_up_from_one_with_their_audit_entry(store: ConfigStore) -> None:
    v1 = add(store, 5.0, detail={"changes": 2})
    v2 = add(store, 25.0, author="bob", source="file")
    assert (v1.version, v2.version) == (1, 2)
    assert v1 == StoredVersion(1, doc(5.0), "alice", "canary 5.0%", 1001.0, "api")
    assert v2.created_at == 1002.0  # the clock is asked once per write transaction
    assert store.latest() == v2
    assert store.get(1) == v1
    assert store.get(3) is None
    assert store.audit() == [
        AuditEntry(2, 1002.0, "bob", "apply", None, 2),
        AuditEntry(1, 1001.0, "alice", "apply", {"changes": 2}, 1),
    ]


def test_versions_lists_newest_first_and_pages(store: ConfigStore) -> None:
    stored = [add(store, float(w)) for w in range(1, 8)]
    infos = store.versions()
    assert [v.version for v in infos] == [7, 6, 5, 4, 3, 2, 1]
    assert all(isinstance(v, VersionInfo) for v in infos)
    assert infos[0] == stored[-1].info
    assert [v.version for v in store.versions(limit=3)] == [7, 6, 5]
    assert [v.version for v in store.versions(limit=3, before=5)] == [4, 3, 2]
    assert store.versions(limit=0) == []
    with_docs = store.versions(limit=2, documents=True)
    assert with_docs == [stored[6], stored[5]]
    with pytest.raises(ValueError):
        store.versions(limit=-1)


def test_versions_survive_reopening_the_file(path: Path) -> None:
    first = ConfigStore(path)
    v1 = add(first, 5.0)
    first.lock("main", "alice", "experiment running")
    first.close()
    again = ConfigStore(path)
    try:
        assert again.latest() == v1
        assert add(again, 10.0).version == 2  # numbering carries on after a restart
        assert [e.action for e in again.audit()] == ["apply", "lock", "apply"]
        assert set(again.locks()) == {"main"}
    finally:
        again.close()


def test_documents_are_canonical_json(store: ConfigStore, path: Path) -> None:
    shuffled = {"routes": DOC["routes"], "version": 1, "upstreams": DOC["upstreams"]}
    add(store, 10.0)
    store.add_version(shuffled, author="a", reason="r", source="file", action="apply")
    store.add_version(DOC, author="a", reason="r", source="file", action="apply")
    texts = [t for (t,) in raw(path, "SELECT document FROM config_versions ORDER BY version")]
    assert texts[1] == texts[2] == canonical_json(DOC)  # key order does not matter
    assert texts[0] != texts[1]
    assert " " not in texts[0] and "\n" not in texts[0]
    assert json.loads(texts[1]) == DOC
    # No deduplication: equal documents still make a version each.
    assert [v.version for v in store.versions()] == [3, 2, 1]
    assert canonical_json({"b": [1, {"y": 2, "x": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"x":"\\u00e9","y":2}]}'
    )


def test_a_document_that_is_not_json_is_refused_before_anything_is_written(
    store: ConfigStore,
) -> None:
    with pytest.raises(ValueError):
        store.add_version(
            {"weight": float("nan")}, author="a", reason="r", source="api", action="apply"
        )
    with pytest.raises(TypeError):
        store.add_version({"x": object()}, author="a", reason="r", source="api", action="apply")
    with pytest.raises(TypeError):
        store.add_version([1], author="a", reason="r", source="api", action="apply")  # type: ignore[arg-type]
    assert store.latest() is None and store.audit() == []


def test_the_returned_document_is_a_copy(store: ConfigStore) -> None:
    v = add(store, 5.0)
    v.document["routes"].clear()
    latest = store.latest()
    assert latest is not None and latest.document == doc(5.0)


# -- atomicity ------------------------------------------------------------------------


def fail_inserts_into(path: Path, table: str) -> None:
    """Make every insert into ``table`` fail, from inside SQLite, mid-transaction."""
    conn = sqlite3.connect(path)
    conn.execute(
        f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
        " BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    conn.commit()
    conn.close()


def heal(path: Path, table: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"DROP TRIGGER fail_{table}")
    conn.commit()
    conn.close()


def test_a_version_is_not_written_without_its_audit_entry(store: ConfigStore, path: Path) -> None:
    add(store, 5.0)
    fail_inserts_into(path, "audit")  # the version row is in when the audit insert fails
    with pytest.raises(sqlite3.IntegrityError, match="simulated failure"):
        add(store, 25.0)
    assert raw(path, "SELECT max(version), count(*) FROM config_versions") == [(1, 1)]
    assert raw(path, "SELECT count(*) FROM audit") == [(1,)]
    heal(path, "audit")
    assert add(store, 25.0).version == 2  # the connection is usable, and no number was used
    assert [e.version for e in store.audit()] == [2, 1]


def test_a_failing_clock_writes_nothing(path: Path) -> None:
    def broken() -> float:
        raise OSError("no time")

    s = ConfigStore(path, clock=broken)
    try:
        with pytest.raises(OSError):
            add(s, 5.0)
        with pytest.raises(OSError):
            s.lock("main", "a", "r")
        assert s.latest() is None and s.locks() == {} and s.audit() == []
    finally:
        s.close()


def test_a_lock_is_not_written_without_its_audit_entry(store: ConfigStore, path: Path) -> None:
    store.lock("main", "alice", "experiment")
    fail_inserts_into(path, "audit")
    with pytest.raises(sqlite3.IntegrityError):
        store.lock("other", "alice", "x")
    with pytest.raises(sqlite3.IntegrityError):
        store.unlock("main", "bob")
    heal(path, "audit")
    assert set(store.locks()) == {"main"}
    assert [e.action for e in store.audit()] == ["lock"]


# -- audit and locks ------------------------------------------------------------------


def test_record_audits_events_without_a_version(store: ConfigStore) -> None:
    v = add(store, 5.0)
    refused = store.record("refused", "bob", {"why": "route main is locked", "routes": ["main"]})
    note = store.record("rollback-requested", "carol", None, version=v.version)
    assert refused == AuditEntry(
        2, 1002.0, "bob", "refused", {"routes": ["main"], "why": "route main is locked"}, None
    )
    assert note.version == 1 and note.detail is None
    assert store.audit()[:2] == [note, refused]
    assert [e.id for e in store.audit(limit=2)] == [3, 2]
    assert [e.id for e in store.audit(before=3)] == [2, 1]


def test_locks(store: ConfigStore) -> None:
    lock = store.lock("main", "alice", "experiment running")
    assert lock == Lock("main", "alice", "experiment running", 1001.0)
    assert store.locks() == {"main": lock}
    with pytest.raises(RouteLocked) as info:
        store.lock("main", "bob", "mine now")
    assert info.value.lock == lock
    again = store.lock("main", "alice", "until friday")  # the holder may update the reason
    taken = store.lock("main", "bob", "incident", replace=True)
    assert store.locks() == {"main": taken}
    store.lock("billing", "carol", "audit")
    assert list(store.locks()) == ["billing", "main"]
    assert store.unlock("main", "alice") == taken  # anyone may unlock; it is on the record
    assert store.unlock("main", "alice") is None  # not locked: nothing happens, nothing written
    assert set(store.locks()) == {"billing"}
    entries = store.audit()
    assert [(e.action, e.actor) for e in entries] == [
        ("unlock", "alice"),
        ("lock", "carol"),
        ("lock", "bob"),
        ("lock", "alice"),
        ("lock", "alice"),
    ]
    assert entries[0].detail == {
        "route": "main",
        "removed": {"actor": "bob", "reason": "incident", "ts": taken.ts},
    }
    assert entries[2].detail == {
        "route": "main",
        "reason": "incident",
        "replaced": {"actor": "alice", "reason": "until friday", "ts": again.ts},
    }
    assert all(e.version is None for e in entries)


def test_locks_survive_reopening(path: Path) -> None:
    s = ConfigStore(path, clock=lambda: 5.0)
    s.lock("main", "alice", "experiment")
    s.close()
    s = ConfigStore(path)
    try:
        assert s.locks() == {"main": Lock("main", "alice", "experiment", 5.0)}
    finally:
        s.close()


def test_a_closed_store_refuses_calls(path: Path) -> None:
    s = ConfigStore(path)
    add(s, 5.0)
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.latest()


# -- other processes ------------------------------------------------------------------


def watch_versions(path: str, last: int, out: str, ready: Any) -> None:
    """In another process: poll the store until version ``last`` shows up, checking
    that every version seen already has its audit entry; write what was seen."""
    store = ConfigStore(path)
    store.latest()  # opened: the writer may start
    ready.set()
    seen: list[int] = []
    unaudited: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        latest = store.latest()
        if latest is not None and (not seen or seen[-1] != latest.version):
            seen.append(latest.version)
            if latest.version not in {e.version for e in store.audit(limit=1000)}:
                unaudited.append(latest.version)
            if latest.document["routes"][0]["variants"][1]["weight"] != latest.version:
                unaudited.append(-latest.version)
        if seen and seen[-1] == last:
            break
        time.sleep(0.001)
    store.close()
    Path(out).write_text(json.dumps({"seen": seen, "unaudited": unaudited}))


def test_another_process_reads_committed_versions(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writer = ConfigStore(path)
    add(writer, 1.0)  # the file exists and is migrated before the reader opens it
    out = tmp_path / "seen.json"
    last = 40
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    reader = ctx.Process(target=watch_versions, args=(str(path), last, str(out), ready))
    reader.start()
    try:
        assert ready.wait(30)
        for version in range(2, last + 1):
            assert add(writer, float(version)).version == version
            time.sleep(0.005)
        reader.join(30)
        assert reader.exitcode == 0
    finally:
        if reader.is_alive():
            reader.kill()
        writer.close()
    result = json.loads(out.read_text())
    assert result["seen"][-1] == last
    assert len(result["seen"]) > 1  # it watched the versions come, not only the last one
    assert result["seen"] == sorted(result["seen"])
    assert result["unaudited"] == []
