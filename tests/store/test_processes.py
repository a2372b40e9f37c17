"""Two worker processes writing one database at once, from its creation on."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from tests.store.util import query, write_rows

from turnout.store.sqlite import MIGRATIONS

ROWS = 3000


def test_two_processes_write_one_database_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # not created yet: both race to create and migrate it
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"{name}.json" for name in ("a", "b")]
    procs = [
        ctx.Process(target=write_rows, args=(str(path), name, ROWS, barrier, str(out)))
        for name, out in zip(("a", "b"), outs, strict=True)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for out in outs:
        counters = json.loads(out.read_text())
        assert counters["written"] == ROWS
        assert counters["dropped"] == counters["lost"] == counters["write_errors"] == 0
    assert query(path, "SELECT count(*), count(DISTINCT request_id) FROM request_log") == [
        (2 * ROWS, 2 * ROWS)
    ]
    # One secret won the race, so both processes hashed the shared key alike.
    assert query(path, "SELECT count(DISTINCT key_hash) FROM request_log") == [(1,)]
    assert query(path, "SELECT count(*) FROM meta") == [(1,)]
    assert query(path, "SELECT max(version) FROM schema_version") == [(len(MIGRATIONS),)]
    # Whether the two writers' transactions interleave depends on the machine's load;
    # what must hold either way is checked above: nothing lost, one secret, one schema.
