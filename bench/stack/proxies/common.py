"""What every thin proxy shares, so the stacks differ only in server/client.

Configuration comes from the environment the harness sets:
  BENCH_PORT        port to listen on (always 127.0.0.1)
  BENCH_UPSTREAM_A  base URL of variant "a" (gets 90%)
  BENCH_UPSTREAM_B  base URL of variant "b" (gets 10%)
  BENCH_SALT        salt of the user hash
"""

from __future__ import annotations

import hashlib
import os

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    import json

    _loads = json.loads

HOST = "127.0.0.1"
PORT = int(os.environ.get("BENCH_PORT", "18090"))
SALT = os.environ.get("BENCH_SALT", "turnout-bench").encode()
UPSTREAM = {
    "a": os.environ.get("BENCH_UPSTREAM_A", "http://127.0.0.1:18081"),
    "b": os.environ.get("BENCH_UPSTREAM_B", "http://127.0.0.1:18082"),
}
PATH = "/v1/chat/completions"
BUCKETS = 10_000
SPLIT_A = 9_000  # buckets [0, 9000) -> "a", [9000, 10000) -> "b"
# Request headers passed on to the upstream (a real gateway passes more).
FORWARD = ("content-type", "authorization", "x-user-id")


def variant_for(user_id: str) -> str:
    """turnout's hash contract v1 (src/turnout/routing/bucketing.py):
    uint64_be(sha256(salt || 0x00 || key)[0:8]) mod 10000 -> buckets [0, 9000) are "a"."""
    digest = hashlib.sha256(SALT + b"\x00" + user_id.encode()).digest()
    return "a" if int.from_bytes(digest[:8], "big") % BUCKETS < SPLIT_A else "b"


def wants_stream(body: bytes) -> bool:
    """Parse the JSON body (as a gateway must) and read its "stream" flag."""
    doc = _loads(body) if body else {}
    return bool(doc.get("stream")) if isinstance(doc, dict) else False


def forward_headers(get) -> dict[str, str]:
    """`get` is the case-insensitive header lookup of the server's request."""
    out = {}
    for name in FORWARD:
        value = get(name)
        if value is not None:
            out[name] = value
    return out


def aiohttp_session():
    """The pooled keep-alive client every aiohttp-client proxy uses."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        timeout=aiohttp.ClientTimeout(total=30),
    )


def new_loop(use_uvloop: bool):
    import asyncio

    if use_uvloop:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
