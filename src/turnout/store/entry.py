"""One request log entry: its shape, its wire form, and how the writer makes a row.

An entry crosses from the gateway process to the writer process (``log_writer``) as
a plain tuple, ``EntryValues``: the ``LogEntry`` fields in order, the redaction hook
named by its import path. A tuple because the request path builds one in ~0.05 µs
(a ``LogEntry``, by keyword, ~0.7 µs) and ``marshal`` serialises it in C; a path
because a function cannot cross a process boundary: the writer imports it itself.

Everything else here runs in the writer process, never on the request path:
hashing the stickiness key, parsing, redacting and re-serialising sampled bodies.

Stickiness keys are stored as ``hmac-sha256(secret, key)``, never raw. A plain hash
would not do: keys are user ids, emails, session ids, and anyone holding the
database could hash every candidate and match. The secret is per database (created
once in ``meta``), so every process sharing the file, and every restart, produces
the same hash for the same key: log rows and feedback join on ``key_hash``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

__all__ = [
    "COLUMNS",
    "INSERT",
    "EntryValues",
    "KeyHasher",
    "LogEntry",
    "Redactor",
    "entry_values",
    "load_key_secret",
    "load_redactor",
    "redactor_spec",
    "to_row",
]

log = logging.getLogger("turnout.store")

Redactor = Callable[[Literal["request", "response"], dict[str, Any]], dict[str, Any]]
# The 17 LogEntry fields in order, then the redaction hook's "module:function" or None.
EntryValues = tuple[Any, ...]

COLUMNS = (
    "request_id, ts, route, variant, upstream, status, error_class, latency_ms, ttft_ms,"
    " input_tokens, output_tokens, cost_usd, key_hash, stream, attempts,"
    " request_body, response_body"
)
WIDTH = 17  # values a row binds: the columns above
_ROW = f"({', '.join('?' * WIDTH)})"
INSERT = f"INSERT INTO request_log ({COLUMNS}) VALUES {_ROW}"


def multi_insert(rows: int) -> str:
    """An INSERT of ``rows`` rows at once."""
    return f"INSERT INTO request_log ({COLUMNS}) VALUES {', '.join([_ROW] * rows)}"


_SECRET_KEY = "key_secret"


@dataclass(slots=True)
class LogEntry:
    """What the gateway knows about one request when it ends. ``key`` is the raw
    stickiness key, hashed in the writer; bodies are set only when sampled, and
    ``redact`` (if any) is applied to them, parsed, in the writer process: a hook
    given as a function must be importable by its ``__module__`` and
    ``__qualname__`` (see ``redactor_spec``), or it can be given as that path."""

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
    redact: Redactor | str | None = None


class Loggable(Protocol):
    """What can be submitted to the log as it is, to be made an entry later, when
    its batch is sealed (the gateway's ``Exchange``)."""

    def log_values(self) -> EntryValues: ...


def entry_values(e: LogEntry) -> EntryValues:
    """``e`` in its wire form."""
    redact = e.redact
    spec = redact if redact is None or isinstance(redact, str) else redactor_spec(redact)
    return (
        e.request_id, e.ts, e.route, e.variant, e.upstream, e.status, e.error_class,
        e.latency_ms, e.ttft_ms, e.input_tokens, e.output_tokens, e.cost_usd, e.key,
        e.stream, e.attempts, e.request_body, e.response_body, spec,
    )  # fmt: skip


_SPECS: dict[Any, str] = {}
_UNNAMEABLE = "!unnameable:"  # a spec no import succeeds on: the bodies are refused


def redactor_spec(fn: Redactor) -> str:
    """The import path the writer process loads ``fn`` by: ``module:qualname``,
    checked here to lead back to ``fn`` itself. A hook that has none (a lambda, a
    closure, a bound method) cannot run in the writer process; rather than store
    bodies unredacted, its entries keep no bodies (counted as redaction failures),
    and a warning says why, once. Hooks from a config are named by the path they
    were loaded from, so this is for entries built by hand."""
    try:
        return _SPECS[fn]
    except (KeyError, TypeError):  # TypeError: an unhashable callable object
        pass
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    spec = f"{module}:{qualname}"
    try:
        ok = isinstance(module, str) and isinstance(qualname, str)
        ok = ok and "<" not in spec and load_redactor(spec) is fn
    except Exception:
        ok = False
    if not ok:
        spec = f"{_UNNAMEABLE}{fn!r}"
        log.warning(
            "request log: the redaction hook %r has no import path, so the writer process"
            " cannot run it; bodies it would redact are not stored",
            fn,
        )
    with contextlib.suppress(TypeError):
        _SPECS[fn] = spec
    return spec


def load_redactor(spec: str) -> Redactor:
    """The hook at ``spec`` ("module:qualname"); raises if there is none."""
    module, _, qualname = spec.partition(":")
    if not module or not qualname or spec.startswith(_UNNAMEABLE):
        raise LookupError(f"{spec!r} is not an importable redaction hook")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    fn: Redactor = target
    return fn


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


def to_row(
    v: EntryValues, hasher: KeyHasher, redactor: Callable[[str], Redactor]
) -> tuple[tuple[Any, ...], bool]:
    """The row to insert for the entry ``v`` (its wire form), and whether its
    redaction failed, the hook included (then neither body is kept). ``redactor``
    turns the hook's path into the hook. Numbers are coerced here so that a wrongly
    typed field fails this entry alone, not the whole batch when SQLite binds it."""
    (request_id, ts, route, variant, upstream, status, error_class, latency, ttft,
     tokens_in, tokens_out, cost, key, stream, attempts, req, resp, spec) = v  # fmt: skip
    key_hash = None if key is None else hasher(key if type(key) is str else str(key))
    request_body = response_body = None
    redaction_failed = False
    if req is not None or resp is not None:
        try:
            redact = None if spec is None else redactor(spec)
            request_body = _body_text("request", req, redact)
            response_body = _body_text("response", resp, redact)
        except Exception:
            redaction_failed = True
            request_body = response_body = None
    # Inline checks rather than a call per field: this runs for every request, and
    # fields are nearly always of the right type already (only then is nothing done).
    row = (
        request_id if type(request_id) is str else str(request_id),
        ts if type(ts) is float else float(ts),
        route if route is None or type(route) is str else str(route),
        variant if variant is None or type(variant) is str else str(variant),
        upstream if upstream is None or type(upstream) is str else str(upstream),
        status if type(status) is int else int(status),
        error_class if error_class is None or type(error_class) is str else str(error_class),
        latency if type(latency) is float else float(latency),
        ttft if ttft is None or type(ttft) is float else float(ttft),
        tokens_in if tokens_in is None or type(tokens_in) is int else int(tokens_in),
        tokens_out if tokens_out is None or type(tokens_out) is int else int(tokens_out),
        cost if cost is None or type(cost) is float else float(cost),
        key_hash,
        1 if stream else 0,
        attempts if type(attempts) is int else int(attempts),
        request_body,
        response_body,
    )
    return row, redaction_failed
