"""Request parsing and response bodies of the simulated upstream: no I/O, no sockets."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson
from aiohttp import web

from turnout.simulator.profiles import ModelProfile

_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request as the simulator saw it; header names are lower-cased."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def error_response(
    status: int, message: str, type_: str, code: str, param: str | None
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def simulated_error(profile: ModelProfile) -> web.Response:
    status = profile.error_status
    if status == 429:
        type_, code = "rate_limit_error", "rate_limit_exceeded"
    else:
        type_, code = ("server_error" if status >= 500 else "invalid_request_error"), "simulated"
    resp = error_response(status, f"simulated upstream error ({status})", type_, code, None)
    if profile.retry_after is not None:
        # Retry-After only takes whole seconds; OpenAI clients prefer the finer retry-after-ms.
        resp.headers["Retry-After"] = str(math.ceil(profile.retry_after))
        resp.headers["retry-after-ms"] = str(round(profile.retry_after * 1000))
    return resp


def text_of(content: object) -> str:
    """Text of a message ``content``: a string or a list of parts (only text parts count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"'{key}' must be a non-negative integer", key)
        return value
    return None


def parse_inputs(value: object, param: str) -> list[tuple[str, int, bytes]]:
    """(text, token count, hash key) per item of a ``prompt``/``input``: a string, a list
    of strings, a token id list or a list of those. Token ids have no text."""
    if isinstance(value, str):
        return [(value, len(value.split()), value.encode())]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(v, len(v.split()), v.encode()) for v in value]
        if all(isinstance(v, int) for v in value):
            return [("", len(value), orjson.dumps(value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [("", len(v), orjson.dumps(v)) for v in value]
    raise BadRequest(f"'{param}' must be a string, a list of strings or token id lists", param)


@dataclass(frozen=True, slots=True)
class Rendered:
    content: str
    n_words: int
    finish_reason: Literal["stop", "length"]
    chunks: tuple[tuple[int, bytes], ...]  # (words, JSON-encoded text) per streamed chunk


def render_answer(
    profile: ModelProfile, model: str, user: str, system: str, max_tokens: int | None
) -> Rendered:
    answer = profile.render_answer(
        model, last_user_message=user, system_prompt=system, max_tokens=max_tokens
    )
    words, size = answer.words, profile.words_per_chunk
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    texts = [(" " if i else "") + " ".join(g) for i, g in enumerate(groups)]
    chunks = tuple((len(g), orjson.dumps(t)) for g, t in zip(groups, texts, strict=True))
    return Rendered("".join(texts), len(words), answer.finish_reason, chunks)


# Benchmarks send the same few models over and over; a static answer renders once.
# Answers that depend only on the model are rendered once per (model, limits).
static_answer = lru_cache(maxsize=4096)(render_answer)


@lru_cache(maxsize=4096)
def embedding_of(key: bytes, dims: int) -> tuple[float, ...]:
    raw = hashlib.shake_256(key).digest(4 * dims)
    values = [v / 2147483648.0 - 1.0 for v in struct.unpack(f"<{dims}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)
