"""The upstream client alone: H1Transport against AiohttpTransport, client CPU per request.

    python3 bench/upstream_client.py           # 20,000 requests per cell, 3 rounds, ~35 s
    python3 bench/upstream_client.py --smoke   # seconds, no timing claims

The upstream is a minimal asyncio Protocol server in a child process (uvloop, pinned
to its own core when there are two), answering every POST at once with a fixed
OpenAI-like answer: a JSON body with content-length, or for ``"stream": true`` an SSE
body of 12 events in chunked encoding, with the headers OpenAI sends. So nearly all of
the bench process's CPU is the client: its ``time.process_time()`` over a cell, per
request, is what each transport costs the gateway. Cells: JSON and SSE, one request at
a time (sequential) and 32 in flight (concurrent); transports alternate within each
round and the median round is reported. The client runs on uvloop, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from turnout.config import config_from_mapping
from turnout.gateway.transport import AiohttpTransport, Transport
from turnout.gateway.upstream_client import H1Transport
from turnout.serve import loop_factory
from turnout.snapshot import UpstreamTarget, build_snapshot

CONCURRENCY = 32
_HEADERS = (
    "date: Wed, 25 Nov 2026 10:00:00 GMT\r\nx-request-id: req_0123456789abcdef\r\n"
    "openai-processing-ms: 212\r\nx-ratelimit-limit-requests: 10000\r\n"
    "x-ratelimit-remaining-requests: 9999\r\nx-ratelimit-reset-requests: 6ms\r\n"
    "cf-cache-status: DYNAMIC\r\nserver: bench\r\n"
)
_ANSWER = json.dumps(
    {
        "id": "chatcmpl-0123456789",
        "object": "chat.completion",
        "created": 1795000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32},
    }
).encode()
_EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"w"}}]}\n\n'
)
JSON_REPLY = (
    f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{_HEADERS}"
    f"content-length: {len(_ANSWER)}\r\n\r\n"
).encode() + _ANSWER
SSE_REPLY = (
    f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n{_HEADERS}"
    "transfer-encoding: chunked\r\n\r\n"
).encode() + b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in [_EVENT] * 11 + [b"data: [DONE]\n\n"])
SSE_REPLY += b"0\r\n\r\n"
PROMPT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "capital of France?"}]}


# --------------------------------------------------------------------------- upstream


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[: end + 2].lower()
            at = head.index(b"content-length:") + 15
            size = int(head[at : head.index(b"\r\n", at)])
            if len(self.buf) < end + 4 + size:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + size], self.buf[end + 4 + size :]
            self.transport.write(SSE_REPLY if b'"stream":true' in body else JSON_REPLY)


def serve() -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


# --------------------------------------------------------------------------- client


def target_for(port: int) -> UpstreamTarget:
    config = {
        "upstreams": [{"name": "u", "base_url": f"http://127.0.0.1:{port}/v1"}],
        "routes": [{"name": "r", "variants": [{"name": "v", "upstream": "u"}]}],
    }
    return build_snapshot(config_from_mapping(config)).upstreams["u"]


async def one(transport: Transport, target: UpstreamTarget, body: bytes, stream: bool) -> None:
    resp = await transport.send(target, "chat/completions", body, 10.0)
    if stream:
        async for _ in resp.chunks():
            pass
        resp.close()
    else:
        await resp.read()
    assert resp.status == 200


async def cell(
    transport: Transport, target: UpstreamTarget, n: int, stream: bool, concurrent: bool
) -> dict[str, float]:
    body = json.dumps({**PROMPT, "stream": stream}, separators=(",", ":")).encode()
    for _ in range(50):  # connections open, code warm
        await one(transport, target, body, stream)
    cpu, wall = time.process_time(), time.perf_counter()
    if concurrent:

        async def worker(count: int) -> None:
            for _ in range(count):
                await one(transport, target, body, stream)

        await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
        n = n // CONCURRENCY * CONCURRENCY
    else:
        for _ in range(n):
            await one(transport, target, body, stream)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us": cpu / n * 1e6, "rps": n / wall}


async def measure(port: int, n: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    target = target_for(port)
    makers: dict[str, type[Any]] = {"h1": H1Transport, "aiohttp": AiohttpTransport}
    runs: dict[str, list[dict[str, float]]] = {}
    for r in range(rounds):
        for name in list(makers)[r % 2 :] + list(makers)[: r % 2]:
            transport = makers[name]()
            try:
                for mode in ("json", "sse"):
                    for concurrent in (False, True):
                        key = f"{name} {mode} {'c=32' if concurrent else 'c=1'}"
                        got = await cell(transport, target, n, mode == "sse", concurrent)
                        runs.setdefault(key, []).append(got)
            finally:
                await transport.close()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, got in runs.items():
        name, rest = key.split(" ", 1)
        mid = sorted(got, key=lambda g: g["cpu_us"])[len(got) // 2]
        out.setdefault(rest, {})[name] = mid
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny load, seconds, no timing claims")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=20_000, help="requests per cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    if args.serve:
        return serve()
    n, rounds = (320, 1) if args.smoke else (args.n, args.rounds)
    cores = sorted(os.sched_getaffinity(0))
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        if len(cores) > 1:
            os.sched_setaffinity(server.pid, {cores[0]})
            os.sched_setaffinity(0, {cores[-1]})
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            table = runner.run(measure(port, n, rounds))
    finally:
        server.kill()
        server.wait()
    print(f"{'cell':12} {'h1 µs/req':>10} {'aiohttp µs/req':>15} {'h1 req/s':>9}", end="")
    print(f" {'aiohttp req/s':>14} {'CPU ratio':>9}")
    for key, row in table.items():
        h1, ai = row["h1"], row["aiohttp"]
        print(
            f"{key:12} {h1['cpu_us']:10.1f} {ai['cpu_us']:15.1f} {h1['rps']:9.0f}"
            f" {ai['rps']:14.0f} {h1['cpu_us'] / ai['cpu_us']:9.2f}"
        )
    if args.json:
        meta = {"python": platform.python_version(), "n": n, "rounds": rounds, "cores": cores}
        args.json.write_text(json.dumps({"meta": meta, "cells": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
