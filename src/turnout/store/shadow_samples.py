"""Shadow disagreement samples: mirrored pairs whose answers differed, kept for review.

A shadow deployment sends a copy of live requests to another model and scores the
two answers against each other; the pairs that disagree are what a person wants to
read (``turnout shadow diff ROUTE``). They are few and written in small batches from
an executor, each batch in one transaction that also prunes every (route, shadow)
it touched down to its newest ``keep`` rows, so the table stays small without a
separate retention job.

Bodies get the same care as in the request log: when the route has a redaction
hook, the request and both answers go through it before anything is written, and
a sample that cannot be redacted is refused, never stored as it came. Answers are
plain text, so each is wrapped as a one-choice chat completion for the hook (the
shape it already knows from response bodies) and unwrapped afterwards.

Methods block; run them on an executor thread. A lock makes the one connection safe
from any thread; several processes may each have a store on the same file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import orjson

from turnout.store.sqlite import connect, rollback

__all__ = ["CLIP_MARK", "MAX_TEXT_CHARS", "DiffSample", "Redactor", "ShadowSampleStore"]

# The shape of turnout.snapshot.Redactor, defined here so the store does not import
# the snapshot (and everything it imports).
Redactor = Callable[[str, Any], Any]

MAX_TEXT_CHARS = 20_000
CLIP_MARK = "…[clipped]"


@dataclass(frozen=True, slots=True)
class DiffSample:
    """One mirrored pair. ``variant`` is the live variant; ``request_body`` is the
    client's raw JSON request body; a ``*_text`` is None when that side has no answer
    (it failed). ``redact`` is the route's redaction hook, if it has one."""

    ts: float
    route: str
    shadow: str
    variant: str
    request_id: str
    scores: Mapping[str, float | None]
    live_status: int
    shadow_status: int
    live_error: str | None
    shadow_error: str | None
    request_body: bytes | None
    live_text: str | None
    shadow_text: str | None
    redact: Redactor | None = None


_COLUMNS = (
    "ts, route, shadow, variant, request_id, scores, live_status, shadow_status,"
    " live_error, shadow_error, request, live, shadow_text"
)
_INSERT = f"INSERT INTO shadow_samples ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"
# Every row of the pair older than its ``keep`` newest (?3 = keep); nothing when it has
# no more than that (the subquery is NULL). Both halves walk the (route, shadow, id) index.
_PRUNE = (
    "DELETE FROM shadow_samples WHERE route = ?1 AND shadow = ?2 AND id <= ("
    "SELECT id FROM shadow_samples WHERE route = ?1 AND shadow = ?2"
    " ORDER BY id DESC LIMIT 1 OFFSET ?3)"
)
_SELECT = f"SELECT {_COLUMNS} FROM shadow_samples"


def _utf8(text: str) -> str:
    """``text``, with any lone surrogate (JSON allows ``"\\ud800"``) replaced: SQLite
    cannot bind one, and orjson refuses to serialise one for the hook."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + CLIP_MARK


def _request_text(raw: bytes | None, redact: Redactor | None) -> str | None:
    if raw is None:
        return None
    if redact is None:
        return raw.decode("utf-8", "replace")
    # The hook needs the parsed object; a body that is not a JSON object cannot be
    # redacted, so the sample is refused rather than stored as it came.
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("the request body is not a JSON object")
    return orjson.dumps(redact("request", body)).decode()


def _answer_text(text: str | None, redact: Redactor | None) -> str | None:
    if text is None:
        return None
    text = _utf8(text if type(text) is str else str(text))
    if redact is None:
        return text
    wrapped = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    redacted = redact("response", wrapped)
    # The text back out if the hook left the shape alone (the usual case); else the
    # whole redacted object, so nothing it kept is lost and nothing it removed is back.
    try:
        content = redacted["choices"][0]["message"]["content"]
    except (LookupError, TypeError):
        content = None
    if isinstance(content, str):
        return content
    return orjson.dumps(redacted).decode()


def _optional_str(value: Any) -> str | None:
    return None if value is None else _clip(_utf8(value if type(value) is str else str(value)))


def _row(s: DiffSample) -> tuple[Any, ...]:
    """The row for ``s``; raises if it cannot be redacted. Fields are coerced here so
    that a wrongly typed one fails this sample alone, not the whole batch."""
    scores = {str(k): None if v is None else float(v) for k, v in s.scores.items()}
    return (
        float(s.ts),
        str(s.route),
        str(s.shadow),
        str(s.variant),
        str(s.request_id),
        orjson.dumps(scores).decode(),  # NaN and infinities become null
        int(s.live_status),
        int(s.shadow_status),
        _optional_str(s.live_error),
        _optional_str(s.shadow_error),
        # Redact the whole text, then clip: clipping first could cut a request body
        # into JSON the hook cannot read, or a secret into a part it does not know.
        _clip(_request_text(s.request_body, s.redact)),
        _clip(_answer_text(s.live_text, s.redact)),
        _clip(_answer_text(s.shadow_text, s.redact)),
    )


class ShadowSampleStore:
    """Shadow disagreement samples in the shared database."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def add_many(self, samples: Sequence[DiffSample], keep: int) -> tuple[int, int]:
        """Store ``samples`` in one transaction, then prune each (route, shadow) they
        touch to its newest ``keep`` rows. Returns (stored, refused): a refused
        sample could not be redacted (or made into a row at all) and is not stored;
        the others are. ``keep <= 0`` stores nothing and deletes nothing."""
        if keep <= 0 or not samples:
            return 0, 0
        rows: list[tuple[Any, ...]] = []
        refused = 0
        for sample in samples:  # outside the lock: hooks and JSON are the slow part
            try:
                rows.append(_row(sample))
            except Exception:
                refused += 1
        if not rows:
            return 0, refused
        pairs = list(dict.fromkeys((row[1], row[2]) for row in rows))
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT, rows)
                for route, shadow in pairs:
                    db.execute(_PRUNE, (route, shadow, keep))
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
        return len(rows), refused

    def recent(
        self, route: str, shadow: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` samples of ``route`` (of one shadow, if given), newest
        first. ``shadow`` in each dict is the shadow's name and ``shadow_text`` its
        answer (``live`` is the live answer, ``request`` the request body)."""
        if limit <= 0:
            return []
        params: tuple[Any, ...]
        if shadow is None:
            sql, params = f"{_SELECT} WHERE route = ? ORDER BY id DESC LIMIT ?", (route, limit)
        else:
            sql = f"{_SELECT} WHERE route = ? AND shadow = ? ORDER BY id DESC LIMIT ?"
            params = (route, shadow, limit)
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        return [
            {
                "ts": ts,
                "route": r_route,
                "shadow": r_shadow,
                "variant": variant,
                "request_id": request_id,
                "scores": orjson.loads(scores),
                "live_status": live_status,
                "shadow_status": shadow_status,
                "live_error": live_error,
                "shadow_error": shadow_error,
                "request": request,
                "live": live,
                "shadow_text": shadow_text,
            }
            for (
                ts,
                r_route,
                r_shadow,
                variant,
                request_id,
                scores,
                live_status,
                shadow_status,
                live_error,
                shadow_error,
                request,
                live,
                shadow_text,
            ) in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
