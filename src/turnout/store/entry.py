"""One request log entry: its shape, and how the writer turns it into a row.

Everything here runs in the writer thread, never on the request path: hashing the
stickiness key, parsing, redacting and re-serialising sampled bodies.

Stickiness keys are stored as ``hmac-sha256(secret, key)``, never raw. A plain hash
would not do: keys are user ids, emails, session ids, and anyone holding the
database could hash every candidate and match. The secret is per database (created
once in ``meta``), so every process sharing the file, and every restart, produces
the same hash for the same key: log rows and feedback join on ``key_hash``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["COLUMNS", "INSERT", "KeyHasher", "LogEntry", "Redactor", "load_key_secret", "to_row"]

Redactor = Callable[[Literal["request", "response"], dict[str, Any]], dict[str, Any]]

COLUMNS = (
    "request_id, ts, route, variant, upstream, status, error_class, latency_ms, ttft_ms,"
    " input_tokens, output_tokens, cost_usd, key_hash, stream, attempts,"
    " request_body, response_body"
)
_ROW = f"({', '.join('?' * 17)})"
INSERT = f"INSERT INTO request_log ({COLUMNS}) VALUES {_ROW}"


def multi_insert(rows: int) -> str:
    """An INSERT of ``rows`` rows at once."""
    return f"INSERT INTO request_log ({COLUMNS}) VALUES {', '.join([_ROW] * rows)}"


_SECRET_KEY = "key_secret"


@dataclass(slots=True)
class LogEntry:
    """What the gateway knows about one request when it ends. ``key`` is the raw
    stickiness key, hashed in the writer; bodies are set only when sampled, and
    ``redact`` (if any) is applied to them, parsed, in the writer."""

    request_id: str
    ts: float
    route: str | None
    variant: str | None
    upstream: str | None
    status: int
    error_class: str | None
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    key: str | None
    stream: bool
    attempts: int = 1
    request_body: bytes | None = None
    response_body: bytes | None = None
    redact: Redactor | None = None


def load_key_secret(conn: sqlite3.Connection) -> bytes:
    """This database's key-hashing secret, created on first use. Race-safe across
    processes: every one offers a random secret, the first insert wins, all read it."""
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (_SECRET_KEY, os.urandom(32))
    )
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_SECRET_KEY,)).fetchone()
    return bytes(row[0])


class KeyHasher:
    """``hmac-sha256(secret, key)`` as 32 hex characters (128 bits: no collisions in
    practice, half the storage). The keyed state is built once and copied per key."""

    __slots__ = ("_base", "_cache")

    # The same users come back request after request: remembering their hashes saves
    # an HMAC per row. Bounded, and dropped whole when full (cheaper than LRU order).
    CACHE_LIMIT = 65_536

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a key-hashing secret needs at least 16 bytes")
        self._base = hmac.new(secret, digestmod=hashlib.sha256)
        self._cache: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        h = self._base.copy()
        h.update(key.encode("utf-8", "surrogateescape"))
        digest = h.hexdigest()[:32]
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = digest
        return digest


def _body_text(
    kind: Literal["request", "response"], raw: bytes | None, redact: Redactor | None
) -> str | None:
    if raw is None:
        return None
    if redact is None:
        return raw.decode("utf-8", "replace")
    # A hook needs the parsed object; a body that is not a JSON object cannot be
    # redacted, so it is refused rather than stored as it came.
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError(f"the {kind} body is not a JSON object")
    return orjson.dumps(redact(kind, body)).decode()


def to_row(e: LogEntry, hasher: KeyHasher) -> tuple[tuple[Any, ...], bool]:
    """The row to insert for ``e``, and whether its redaction hook failed (in which
    case neither body is kept). Numbers are coerced here so that a wrongly typed
    field fails this entry alone, not the whole batch when SQLite binds it."""
    key = e.key
    key_hash = None if key is None else hasher(key if type(key) is str else str(key))
    request_body = response_body = None
    redaction_failed = False
    if e.request_body is not None or e.response_body is not None:
        try:
            request_body = _body_text("request", e.request_body, e.redact)
            response_body = _body_text("response", e.response_body, e.redact)
        except Exception:
            redaction_failed = True
            request_body = response_body = None
    # Inline checks rather than a call per field: this runs for every request, and
    # fields are nearly always of the right type already (only then is nothing done).
    route, variant, upstream, error_class = e.route, e.variant, e.upstream, e.error_class
    ttft, tokens_in, tokens_out, cost = e.ttft_ms, e.input_tokens, e.output_tokens, e.cost_usd
    row = (
        e.request_id if type(e.request_id) is str else str(e.request_id),
        e.ts if type(e.ts) is float else float(e.ts),
        route if route is None or type(route) is str else str(route),
        variant if variant is None or type(variant) is str else str(variant),
        upstream if upstream is None or type(upstream) is str else str(upstream),
        e.status if type(e.status) is int else int(e.status),
        error_class if error_class is None or type(error_class) is str else str(error_class),
        e.latency_ms if type(e.latency_ms) is float else float(e.latency_ms),
        ttft if ttft is None or type(ttft) is float else float(ttft),
        tokens_in if tokens_in is None or type(tokens_in) is int else int(tokens_in),
        tokens_out if tokens_out is None or type(tokens_out) is int else int(tokens_out),
        cost if cost is None or type(cost) is float else float(cost),
        key_hash,
        1 if e.stream else 0,
        e.attempts if type(e.attempts) is int else int(e.attempts),
        request_body,
        response_body,
    )
    return row, redaction_failed
