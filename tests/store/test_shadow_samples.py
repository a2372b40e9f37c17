"""Shadow disagreement samples: stored newest first, pruned per pair, redacted, clipped."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.store.util import query

from turnout.store.shadow_samples import (
    CLIP_MARK,
    MAX_TEXT_CHARS,
    DiffSample,
    Redactor,
    ShadowSampleStore,
)

EMAIL = "alice.secret@example.com"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShadowSampleStore]:
    s = ShadowSampleStore(tmp_path / "shadow.db")
    yield s
    s.close()


def sample(i: int, **fields: Any) -> DiffSample:
    values: dict[str, Any] = {
        "ts": 1000.0 + i,
        "route": "chat",
        "shadow": "candidate",
        "variant": "a",
        "request_id": f"req-{i}",
        "scores": {"exact": 0.0, "judge": None},
        "live_status": 200,
        "shadow_status": 200,
        "live_error": None,
        "shadow_error": None,
        "request_body": orjson.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}),
        "live_text": f"live {i}",
        "shadow_text": f"shadow {i}",
    }
    values.update(fields)
    return DiffSample(**values)


def scrub(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"[\w.]+@[\w.]+", "[email]", value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def scrub_emails(kind: str, body: Any) -> Any:
    return scrub(body)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["request_id"] for r in rows]


def test_stored_and_read_back_newest_first(store: ShadowSampleStore) -> None:
    assert store.add_many([sample(1), sample(2), sample(3)], keep=100) == (3, 0)
    rows = store.recent("chat")
    assert ids(rows) == ["req-3", "req-2", "req-1"]
    assert rows[0] == {
        "ts": 1003.0,
        "route": "chat",
        "shadow": "candidate",
        "variant": "a",
        "request_id": "req-3",
        "scores": {"exact": 0.0, "judge": None},
        "live_status": 200,
        "shadow_status": 200,
        "live_error": None,
        "shadow_error": None,
        "request": '{"messages":[{"role":"user","content":"q3"}]}',
        "live": "live 3",
        "shadow_text": "shadow 3",
    }
    assert ids(store.recent("chat", limit=2)) == ["req-3", "req-2"]
    assert store.recent("chat", limit=0) == []
    assert store.recent("other") == []


def test_errors_and_missing_answers_are_kept(store: ShadowSampleStore) -> None:
    failed = sample(
        1,
        shadow_status=502,
        shadow_error="upstream_error",
        shadow_text=None,
        request_body=None,
        scores={"exact": float("nan")},
    )
    assert store.add_many([failed], keep=10) == (1, 0)
    (row,) = store.recent("chat")
    assert (row["shadow_status"], row["shadow_error"], row["shadow_text"]) == (
        502,
        "upstream_error",
        None,
    )
    assert row["request"] is None
    assert row["scores"] == {"exact": None}  # not a number: stored as null


def test_filter_by_shadow(store: ShadowSampleStore) -> None:
    store.add_many([sample(1, shadow="x"), sample(2, shadow="y"), sample(3, shadow="x")], keep=10)
    assert ids(store.recent("chat", "x")) == ["req-3", "req-1"]
    assert ids(store.recent("chat", "y")) == ["req-2"]
    assert ids(store.recent("chat")) == ["req-3", "req-2", "req-1"]
    assert store.recent("chat", "z") == []


def test_prune_keeps_the_newest_per_pair_and_leaves_other_pairs(
    store: ShadowSampleStore,
) -> None:
    store.add_many([sample(i, shadow="other") for i in range(5)], keep=10)
    store.add_many([sample(i, route="other-route") for i in range(5)], keep=10)
    store.add_many([sample(i) for i in range(5)], keep=3)
    assert ids(store.recent("chat", "candidate")) == ["req-4", "req-3", "req-2"]
    store.add_many([sample(i) for i in range(5, 7)], keep=3)
    assert ids(store.recent("chat", "candidate")) == ["req-6", "req-5", "req-4"]
    # A smaller keep prunes older rows of the pair even when few are added.
    store.add_many([sample(7)], keep=2)
    assert ids(store.recent("chat", "candidate")) == ["req-7", "req-6"]
    assert len(store.recent("chat", "other")) == 5
    assert len(store.recent("other-route", "candidate")) == 5


def test_one_batch_over_keep_keeps_its_newest(store: ShadowSampleStore) -> None:
    assert store.add_many([sample(i) for i in range(10)], keep=4) == (10, 0)
    assert ids(store.recent("chat")) == ["req-9", "req-8", "req-7", "req-6"]


def db_bytes(tmp_path: Path) -> bytes:
    """Every file SQLite keeps for the database (main file, WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file())


def test_redaction_applies_to_request_and_both_answers(tmp_path: Path) -> None:
    store = ShadowSampleStore(tmp_path / "shadow.db")
    body = orjson.dumps({"messages": [{"role": "user", "content": f"I am {EMAIL}"}]})
    s = sample(
        1,
        request_body=body,
        live_text=f"Hello {EMAIL}!",
        shadow_text=f"Hi {EMAIL}",
        redact=scrub_emails,
    )
    assert store.add_many([s], keep=10) == (1, 0)
    (row,) = store.recent("chat")
    assert orjson.loads(row["request"]) == {
        "messages": [{"role": "user", "content": "I am [email]"}]
    }
    assert row["live"] == "Hello [email]!"
    assert row["shadow_text"] == "Hi [email]"
    assert EMAIL.encode() not in db_bytes(tmp_path)  # while open (WAL)
    store.close()
    assert EMAIL.encode() not in db_bytes(tmp_path)
    assert b"[email]" in db_bytes(tmp_path)


def test_the_hook_sees_the_answer_as_a_chat_completion(store: ShadowSampleStore) -> None:
    seen: list[tuple[str, Any]] = []

    def record(kind: str, body: Any) -> Any:
        seen.append((kind, body))
        return body

    store.add_many([sample(1, live_text="L", shadow_text=None, redact=record)], keep=10)
    assert seen == [
        ("request", {"messages": [{"role": "user", "content": "q1"}]}),
        (
            "response",
            {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "L"}}],
            },
        ),
    ]


def test_a_hook_that_reshapes_the_answer_stores_the_redacted_object(
    store: ShadowSampleStore,
) -> None:
    def drop_choices(kind: str, body: Any) -> Any:
        return {"redacted": True} if kind == "response" else body

    store.add_many([sample(1, redact=drop_choices)], keep=10)
    (row,) = store.recent("chat")
    assert orjson.loads(row["live"]) == {"redacted": True}
    assert orjson.loads(row["shadow_text"]) == {"redacted": True}


def test_a_failing_hook_refuses_that_sample_only(tmp_path: Path) -> None:
    def fail_on_secret(kind: str, body: Any) -> Any:
        if "secret" in orjson.dumps(body).decode():
            raise RuntimeError("cannot redact")
        return body

    store = ShadowSampleStore(tmp_path / "shadow.db")
    batch = [
        sample(1, redact=fail_on_secret),
        sample(2, shadow_text=f"the {EMAIL}", redact=fail_on_secret),  # refused
        sample(3, redact=fail_on_secret),
    ]
    assert store.add_many(batch, keep=10) == (2, 1)
    assert ids(store.recent("chat")) == ["req-3", "req-1"]
    store.close()
    assert EMAIL.encode() not in db_bytes(tmp_path)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"'])
def test_a_request_that_is_not_a_json_object_is_refused_with_a_hook(
    store: ShadowSampleStore, body: bytes
) -> None:
    redact: Redactor = scrub_emails
    assert store.add_many([sample(1, request_body=body, redact=redact)], keep=10) == (0, 1)
    assert store.recent("chat") == []
    # Without a hook it is kept as it came.
    assert store.add_many([sample(2, request_body=body)], keep=10) == (1, 0)
    assert store.recent("chat")[0]["request"] == body.decode()


def test_long_texts_are_clipped(store: ShadowSampleStore) -> None:
    long = "x" * (MAX_TEXT_CHARS + 500)
    exact = "y" * MAX_TEXT_CHARS
    body = orjson.dumps({"messages": [{"role": "user", "content": long}]})
    store.add_many(
        [sample(1, request_body=body, live_text=long, shadow_text=exact, live_error=long)],
        keep=10,
    )
    (row,) = store.recent("chat")
    assert row["live"] == "x" * MAX_TEXT_CHARS + CLIP_MARK
    assert row["live_error"] == "x" * MAX_TEXT_CHARS + CLIP_MARK
    assert row["shadow_text"] == exact  # at the limit: left alone
    assert len(row["request"]) == MAX_TEXT_CHARS + len(CLIP_MARK)
    assert row["request"].endswith(CLIP_MARK)


def test_clipping_comes_after_redaction(store: ShadowSampleStore) -> None:
    # A request over the limit is still parsed whole by the hook.
    long = "z" * MAX_TEXT_CHARS + EMAIL
    body = orjson.dumps({"messages": [{"role": "user", "content": long}]})
    assert store.add_many([sample(1, request_body=body, redact=scrub_emails)], keep=10) == (
        1,
        0,
    )
    assert EMAIL not in store.recent("chat")[0]["request"]


def test_keep_zero_stores_nothing(store: ShadowSampleStore) -> None:
    store.add_many([sample(1)], keep=10)
    assert store.add_many([sample(2), sample(3)], keep=0) == (0, 0)
    assert store.add_many([sample(4)], keep=-1) == (0, 0)
    assert store.add_many([], keep=10) == (0, 0)
    assert ids(store.recent("chat")) == ["req-1"]


def test_a_lone_surrogate_does_not_fail_the_batch(store: ShadowSampleStore) -> None:
    assert store.add_many([sample(1, live_text="bad \ud800 text"), sample(2)], keep=10) == (
        2,
        0,
    )
    assert store.recent("chat", limit=2)[1]["live"] == "bad ? text"


def test_two_stores_on_one_file_both_write(tmp_path: Path) -> None:
    path = tmp_path / "shadow.db"
    one, two = ShadowSampleStore(path), ShadowSampleStore(path)
    barrier = threading.Barrier(2)

    def write(s: ShadowSampleStore, prefix: str) -> None:
        barrier.wait(timeout=10)
        for i in range(20):
            s.add_many([sample(i, request_id=f"{prefix}-{i}", shadow=prefix)], keep=15)

    threads = [
        threading.Thread(target=write, args=(one, "one")),
        threading.Thread(target=write, args=(two, "two")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert ids(one.recent("chat", "two")) == [f"two-{i}" for i in range(19, 4, -1)]
        assert ids(two.recent("chat", "one")) == [f"one-{i}" for i in range(19, 4, -1)]
        count = query(path, "SELECT count(*) FROM shadow_samples")[0][0]
        assert count == 30
    finally:
        one.close()
        two.close()
