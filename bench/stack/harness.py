#!/usr/bin/env python3
"""Stack benchmark for turnout: which Python HTTP server/client stack to build on.

Run through `bash bench/stack/run.sh [--smoke] [options]`, which installs what is
needed and then runs this file with the bench venv's python. Stdlib only.

One run does, with the same pinning and load for every target:
  * starts nginx (pinned to core 0) as the mock upstream: two variants ("a", "b")
    for plain JSON answers and two for SSE answers, each on its own port, each
    logging the x-user-id of every request it serves;
  * for each target (a proxy pinned to core 1, or "direct" = no proxy at all):
    checks it answers and routes right, then for each load (1 and 32 connections,
    JSON and SSE) runs wrk (1 thread, pinned to core 0) and records requests/s,
    latency percentiles, errors, the target's CPU time, and from the upstream logs
    how many requests each variant got and whether any went to the wrong one;
  * writes bench/results/stack.{md,json} (stack-smoke.* in --smoke mode).

To add a target, write one function decorated with @target below (see README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROXIES = HERE / "proxies"
RESULTS = ROOT / "bench" / "results"
LUA = HERE / "load.lua"

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
SALT = "turnout-bench"
AUTH = "Bearer sk-bench-000000000000"  # the Authorization load.lua sends (LiteLLM's master key)
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"  # run.sh installs LiteLLM there, apart
USERS = 10_000  # distinct x-user-id values the load cycles through: user-0 .. user-9999
PROXY_CORE, LOAD_CORE = "1", "0"  # proxy alone on core 1; wrk + nginx upstream on core 0

# --------------------------------------------------------------------------- split rules


def sha256_split(user_id: str, salt: str = SALT) -> str:
    """turnout's hash contract v1, as the thin proxies implement it (proxies/common.py):
    uint64_be(sha256(salt || 0x00 || key)[0:8]) mod 10000; buckets [0, 9000) -> "a"."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + user_id.encode()).digest()
    return "a" if int.from_bytes(digest[:8], "big") % 10_000 < 9_000 else "b"


def _murmur2(data: bytes) -> int:
    """nginx's ngx_murmur_hash2 (seed 0), as used by split_clients."""
    m, length = 0x5BD1E995, len(data)
    h = length & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
        i += 4
    rest = length - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def nginx_split(user_id: str, salt: str = SALT) -> str:
    """nginx `split_clients "${salt}${http_x_user_id}" { 90% a; * b; }`."""
    return "a" if _murmur2((salt + user_id).encode()) < 9_000 * 0xFFFFFFFF // 10_000 else "b"


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass
class Ctx:
    """What a target's start function gets."""

    port: int  # the port the target must listen on (127.0.0.1)
    upstream_a: int  # nginx mock port of variant "a" (90%) for this mode
    upstream_b: int  # ... of variant "b" (10%)
    stream: bool  # True while the SSE loads run
    workdir: Path  # empty scratch dir of this start, for config/state files (deleted after the run)
    python: str  # the venv's python
    salt: str = SALT

    def url(self, variant: str) -> str:
        return f"http://{HOST}:{self.upstream_a if variant == 'a' else self.upstream_b}"

    def bin(self, name: str) -> str:
        """A console script of the venv (e.g. "uvicorn", "granian", "turnout")."""
        return str(Path(self.python).parent / name)

    def write(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)


@dataclasses.dataclass
class Target:
    name: str
    start: Callable[[Ctx], list[str]] | None  # argv to start it; None: wrk hits the upstream
    about: str
    split: Callable[[str], str] | None  # user id -> expected variant; None: not checked
    requires: tuple[str, ...]  # python modules that must import in the venv, else skipped
    smoke: bool  # also run in --smoke mode
    variant_header: str | None  # response header naming the variant, checked before loading
    # Share of requests variant b must get when no per-request rule can be checked (split
    # None: random routing): the b share is then checked against binomial bounds.
    expected_b_share: float | None = None
    exact_body: bool = True  # False: the target re-serialises answers; compare their content
    files: tuple[str, ...] = ()  # files (e.g. another venv's console script) it needs, else skipped
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # extra environment
    start_timeout: float = 20.0  # seconds for it to listen
    mirrored_to_b: bool = False  # b also gets copies (turnout's shadow), counted by its admin
    # Seconds per load in --smoke mode at the least: a target whose answers can take over
    # a second under load (LiteLLM's SSE at 32 connections: p50 ~1 s on a slow day)
    # must have time to complete some, or the smoke fails it for completing none.
    smoke_seconds: int = 1


TARGETS: list[Target] = []


def target(name, *, about, split=sha256_split, requires=(), smoke=True, variant_header="x-variant",
           expected_b_share=None, exact_body=True, files=(), env=None, start_timeout=20.0,
           mirrored_to_b=False, smoke_seconds=1):
    """Register a target. The function gets a Ctx and returns the argv that starts it.

    The harness runs that argv pinned to the proxy core, with cwd=bench/stack/proxies
    and the environment BENCH_PORT, BENCH_UPSTREAM_A/B (base URLs), BENCH_SALT,
    PYTHONPATH=bench/stack/proxies (+ `env`); it is started once per mode (JSON, SSE)
    and stopped with SIGTERM to its process group.
    """

    def register(fn):
        TARGETS.append(Target(name, fn, about, split, tuple(requires), smoke, variant_header,
                              expected_b_share, exact_body, tuple(files), dict(env or {}),
                              start_timeout, mirrored_to_b, smoke_seconds))
        return fn

    return register


TARGETS.append(
    Target("direct", None, "wrk -> nginx mock, no proxy: the limit", None, (), True, None)
)


@target("nginx-split", about="nginx split_clients + proxy_pass keepalive (C reference)",
        split=nginx_split)
def _nginx_split(ctx: Ctx) -> list[str]:
    conf = f"""
worker_processes 1;
daemon off;
pid {ctx.workdir}/split.pid;
error_log {ctx.workdir}/split-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {_nginx_temp_paths(ctx.workdir)}
  keepalive_requests 1000000;
  split_clients "{ctx.salt}${{http_x_user_id}}" $variant {{ 90% a; * b; }}
  upstream up_a {{ server {HOST}:{ctx.upstream_a}; keepalive 256; keepalive_requests 1000000; }}
  upstream up_b {{ server {HOST}:{ctx.upstream_b}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen {HOST}:{ctx.port};
    location = {PATH} {{
      proxy_pass http://up_$variant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      add_header x-variant $variant always;
    }}
  }}
}}
"""
    return [_nginx_bin(), "-p", str(ctx.workdir), "-e", f"{ctx.workdir}/split-error.log",
            "-c", ctx.write("split.conf", conf)]


@target("aiohttp", about="aiohttp server + aiohttp client, asyncio loop", requires=["aiohttp"])
def _aiohttp(ctx: Ctx) -> list[str]:
    return [ctx.python, "aiohttp_proxy.py"]


@target("aiohttp-uvloop", about="aiohttp server + aiohttp client, uvloop",
        requires=["aiohttp", "uvloop"])
def _aiohttp_uvloop(ctx: Ctx) -> list[str]:
    return [ctx.python, "aiohttp_proxy.py", "--uvloop"]


@target("starlette-uvicorn", about="Starlette on uvicorn (uvloop, httptools) + aiohttp client",
        requires=["starlette", "uvicorn", "uvloop", "httptools", "aiohttp"])
def _starlette_uvicorn(ctx: Ctx) -> list[str]:
    return [ctx.python, "-m", "uvicorn", "starlette_app:app", "--host", HOST, "--port",
            str(ctx.port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning"]


@target("asgi-uvicorn", about="bare ASGI app on uvicorn (uvloop, httptools) + aiohttp client",
        requires=["uvicorn", "uvloop", "httptools", "aiohttp"])
def _asgi_uvicorn(ctx: Ctx) -> list[str]:
    return [ctx.python, "-m", "uvicorn", "asgi_app:app", "--host", HOST, "--port",
            str(ctx.port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning"]


@target("httptools-protocol", about="hand-written asyncio Protocol on httptools, uvloop + aiohttp client",
        requires=["httptools", "uvloop", "aiohttp"])
def _httptools(ctx: Ctx) -> list[str]:
    return [ctx.python, "httptools_proxy.py"]


@target("granian-asgi", about="bare ASGI app on granian (1 worker, uvloop) + aiohttp client",
        requires=["granian", "uvloop", "aiohttp"])
def _granian(ctx: Ctx) -> list[str]:
    return [ctx.bin("granian"), "--interface", "asgi", "--host", HOST, "--port", str(ctx.port),
            "--workers", "1", "--loop", "uvloop", "--http", "1", "--no-ws",
            "--log-level", "warning", "--no-access-log", "asgi_app:app"]


@target("aiohttp-httpx", about="aiohttp server (uvloop) + httpx client",
        requires=["aiohttp", "uvloop", "httpx"])
def _aiohttp_httpx(ctx: Ctx) -> list[str]:
    return [ctx.python, "httpx_proxy.py"]


# The gateway itself (run.sh installs the project into the bench venv). Five flavours,
# so that each feature's cost shows: all features on (metrics and request log), the
# request log off, everything off, all on plus a shadow mirroring every request, and
# two worker processes.
SHADOW_SLOTS = 8  # the shadow's max_concurrency (turnout's default)
_SHADOW = f"""
    shadows:
      - {{name: mirror, upstream: b, max_concurrency: {SHADOW_SLOTS}}}
"""


def _turnout_config(ctx: Ctx, metrics: bool, request_log: bool, shadow: bool = False) -> str:
    return ctx.write("turnout.yaml", f"""
version: 1
gateway: {{host: 127.0.0.1, port: {ctx.port}}}
admin: {{host: 127.0.0.1, port: {ctx.port + 1}}}
store: {{path: {ctx.workdir}/turnout.db}}
metrics: {{enabled: {str(metrics).lower()}}}
request_log: {{enabled: {str(request_log).lower()}}}
upstreams:
  - {{name: a, base_url: "{ctx.url('a')}/v1"}}
  - {{name: b, base_url: "{ctx.url('b')}/v1"}}
routes:
  - name: bench
    salt: {ctx.salt}
    sticky: {{key: "header:x-user-id"}}
    variants:
      - {{name: a, upstream: a, weight: 90}}
      - {{name: b, upstream: b, weight: 10}}
{_SHADOW if shadow else ""}""")


def _turnout_target(
    name: str, about: str, metrics: bool, log: bool, workers: int = 1, shadow: bool = False
) -> None:
    def start(ctx: Ctx) -> list[str]:
        cfg = _turnout_config(ctx, metrics, log, shadow)
        return [ctx.bin("turnout"), "serve", "--config", cfg, "--workers", str(workers),
                "--from-file"]

    target(name, about=about, requires=["turnout"], variant_header="x-turnout-variant",
           mirrored_to_b=shadow)(start)


_turnout_target("turnout", "turnout, 1 worker: metrics and request log on", True, True)
_turnout_target("turnout-nolog", "turnout, 1 worker: metrics on, request log off", True, False)
_turnout_target("turnout-bare", "turnout, 1 worker: metrics and request log off", False, False)
_turnout_target(
    "turnout-shadow",
    "turnout, 1 worker: metrics and request log on, every request mirrored to a shadow on b",
    True, True, shadow=True,
)
_turnout_target("turnout-2w", "turnout, 2 workers (both pinned to the proxy core)", True, True, 2)


# LiteLLM proxy, the alternative users would pick (run.sh installs it into its own venv,
# bench/.venv-litellm). The same 90/10 split as the other targets: two deployments of
# the model load.lua asks for, weighted, "simple-shuffle" (a weighted random pick per
# request, not sticky), so only the b share is checked. No database, cache, callbacks,
# retries or cooldowns; the master key is the bearer token load.lua sends (LiteLLM
# refuses to start without one), so the key check is on the path as in any deployment.
def _litellm_config(ctx: Ctx) -> str:
    deployments = "".join(f"""
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: "{ctx.url(v)}/v1"
      api_key: sk-upstream-{v}
      weight: {w}
      stream_timeout: 30
      timeout: 30
      max_retries: 0""" for v, w in (("a", 90), ("b", 10)))
    return ctx.write("litellm.yaml", f"""
model_list:{deployments}
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 0
  disable_cooldowns: true
litellm_settings:
  set_verbose: false
  json_logs: false
  telemetry: false
  num_retries: 0
  request_timeout: 30
  cache: false
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: {AUTH.split()[1]}
""")


@target("litellm", about="LiteLLM proxy (uvicorn, 1 worker), weighted simple-shuffle 90/10",
        split=None, variant_header=None, expected_b_share=0.10, exact_body=False,
        files=[str(LITELLM_VENV / "bin" / "litellm")], start_timeout=90.0, smoke_seconds=5,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price map at start
             "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION",
             "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true", "DISABLE_SCHEMA_UPDATE": "true"})
def _litellm(ctx: Ctx) -> list[str]:
    return [str(LITELLM_VENV / "bin" / "litellm"), "--config", _litellm_config(ctx),
            "--host", HOST, "--port", str(ctx.port), "--num_workers", "1"]


# --------------------------------------------------------------------------- mock upstream

JSON_BODY = (
    '{"id":"chatcmpl-bench-%s","object":"chat.completion","created":1700000000,'
    '"model":"gpt-4o-mini","system_fingerprint":"upstream-%s","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"Prince Hamlet avenges his father, and '
    'almost everyone dies."},"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":28,"completion_tokens":12,"total_tokens":40}}'
)
SSE_WORDS = ("Prince Hamlet feigns madness to expose his uncle, who murdered his father; "
             "the revenge ends with nearly everyone dead.").split()[:18]


def sse_body(variant: str) -> str:
    """~20 SSE events of an OpenAI chat.completion.chunk stream, then [DONE]."""
    head = ('{"id":"chatcmpl-bench-%s","object":"chat.completion.chunk","created":1700000000,'
            '"model":"gpt-4o-mini","system_fingerprint":"upstream-%s","choices":[{"index":0,'
            % (variant, variant))
    events = [head + '"delta":{"role":"assistant","content":""},"finish_reason":null}]}']
    events += [head + '"delta":{"content":%s},"finish_reason":null}]}' % json.dumps(w + " ")
               for w in SSE_WORDS]
    events.append(head + '"delta":{},"finish_reason":"stop"}]}')
    return "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"


def _nginx_bin() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise SystemExit("nginx not found (bench/stack/run.sh installs it)")
    return found


def _nginx_temp_paths(wd: Path) -> str:
    return " ".join(f"{k}_temp_path {wd}/tmp-{k};"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def _nginx_str(text: str) -> str:
    assert "$" not in text, "nginx would expand it as a variable"
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclasses.dataclass
class Upstream:
    ports: dict[tuple[str, str], int]  # (mode, variant) -> port; mode "json"/"sse"

    def log(self, workdir: Path, mode: str, variant: str) -> Path:
        return workdir / f"up-{mode}-{variant}.log"


def upstream_conf(up: Upstream, wd: Path) -> str:
    # Bodies are held in constant `map` values (an nginx token is at most 4 KiB, so
    # the ~4.4 KB SSE body is cut in pieces) and sent by `return 200`: from memory.
    maps, servers = [], []
    for (mode, variant), port in up.ports.items():
        body = JSON_BODY % (variant, variant) if mode == "json" else sse_body(variant)
        ctype = "application/json" if mode == "json" else "text/event-stream"
        names = []
        for i in range(0, len(body), 2000):
            names.append(f"$body_{mode}_{variant}_{i // 2000}")
            maps.append(f'  map "" {names[-1]} {{ default {_nginx_str(body[i:i + 2000])}; }}')
        servers.append(f"""
  server {{
    listen {HOST}:{port} backlog=4096;
    access_log {up.log(wd, mode, variant)} uid buffer=64k flush=100ms;
    location = {PATH} {{ default_type {ctype}; return 200 "{''.join(names)}"; }}
  }}""")
    return f"""
worker_processes 1;
daemon off;
pid {wd}/upstream.pid;
error_log {wd}/upstream-error.log warn;
events {{ worker_connections 8192; }}
http {{
  {_nginx_temp_paths(wd)}
  log_format uid '$http_x_user_id';
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
{chr(10).join(maps)}
{''.join(servers)}
}}
"""


# --------------------------------------------------------------------------- processes


class Proc:
    """A process group we started; stopped by its own pgid only."""

    def __init__(self, argv, *, core: str | None, cwd=None, env=None, log: Path):
        self.argv = argv
        full = (["taskset", "-c", core] if core is not None else []) + list(argv)
        self.log = log
        self._out = open(log, "ab")
        self.p = subprocess.Popen(full, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 8.0) -> None:
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
            except ProcessLookupError:
                pass
        # workers a supervisor left behind keep our group id alive: kill the rest of it
        if _group_members(self.p.pid):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._out.close()

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """utime+stime of the process and all its live descendants."""
        tck = os.sysconf("SC_CLK_TCK")
        children: dict[int, list[int]] = {}
        stats: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on
            pid = int(entry)
            stats[pid] = fields
            children.setdefault(int(fields[1]), []).append(pid)
        total, todo = 0, [self.p.pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                total += int(stats[pid][11]) + int(stats[pid][12])  # utime, stime
            todo.extend(children.get(pid, []))
        return total / tck


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[2]) == pgid:
                pids.append(int(entry))
    return pids


def wait_port(port: int, proc: Proc | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"exited with {proc.p.returncode}:\n{proc.tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout:.0f}s"
                       + (f":\n{proc.tail()}" if proc else ""))


def port_free(port: int) -> bool:
    """Free to listen on, as servers do it (SO_REUSEADDR: TIME_WAIT leftovers are fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


# --------------------------------------------------------------------------- checks


def request_body(stream: bool) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": stream, "messages": [
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]}).encode()


def sse_events(text: str) -> list:
    """The data payloads of an SSE body, JSON-decoded where they are JSON."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def same_answer(body: str, variant: str, stream: bool, exact: bool = True) -> bool:
    """Is `body` upstream `variant`'s answer? (Re-framed or re-serialised is fine.)

    exact=False, for gateways that rebuild the answer (LiteLLM): the same assistant text
    and the upstream's system_fingerprint, the stream ending with [DONE]."""
    try:
        if stream:
            got, want = sse_events(body), sse_events(sse_body(variant))
            if exact:
                return got == want
            return bool(got) and got[-1] == "[DONE]" and _gist(got[:-1]) == _gist(want[:-1])
        got, want = json.loads(body), json.loads(JSON_BODY % (variant, variant))
        if exact:
            return got == want
        return _gist([got]) == _gist([want])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


def _gist(events: list) -> tuple[str, set]:
    """The assistant text of an answer (or of a stream's chunks) and its fingerprints."""
    text = "".join((c.get("message") or c.get("delta") or {}).get("content") or ""
                   for e in events for c in e.get("choices", []))
    return text, {e.get("system_fingerprint") for e in events if e.get("system_fingerprint")}


def preflight(t: Target, port: int, stream: bool) -> list[str]:
    """One request per variant; returns the problems found (empty: fine)."""
    problems = []
    if t.split is None:  # no rule to predict with: the answer itself says where it went
        users = ["user-0", "user-1", "user-2"]
    else:
        users = [next(f"user-{i}" for i in range(USERS) if t.split(f"user-{i}") == v) for v in "ab"]
    for user in users:
        req = urllib.request.Request(
            f"http://{HOST}:{port}{PATH}", data=request_body(stream), method="POST",
            headers={"content-type": "application/json", "x-user-id": user,
                     "authorization": AUTH})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, headers, body = resp.status, resp.headers, resp.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            problems.append(f"{user}: request failed: {exc}")
            continue
        want = t.split(user) if t.split else next(
            (v for v in "ab" if same_answer(body, v, stream, t.exact_body)), "a")
        if status != 200:
            problems.append(f"{user}: status {status}")
        if not same_answer(body, want, stream, t.exact_body):
            problems.append(f"{user}: body is not upstream {want}'s ({body[:80]!r}...)")
        ctype = headers.get("content-type", "")
        if not ctype.startswith("text/event-stream" if stream else "application/json"):
            problems.append(f"{user}: content-type {ctype!r}")
        if t.variant_header and headers.get(t.variant_header) != want:
            problems.append(f"{user}: {t.variant_header}={headers.get(t.variant_header)!r}, want {want!r}")
    return problems


class LogWindow:
    """Counts the x-user-id lines the upstreams logged between start() and read()."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths
        self.offsets: dict[str, int] = {}

    def start(self) -> None:
        self.offsets = {v: p.stat().st_size if p.exists() else 0 for v, p in self.paths.items()}

    def read(self) -> dict[str, Counter]:
        out = {}
        for v, p in self.paths.items():
            with open(p, "rb") as f:
                f.seek(self.offsets[v])
                out[v] = Counter(f.read().decode(errors="replace").splitlines())
        return out


# --------------------------------------------------------------------------- load


def run_wrk(port: int, conns: int, seconds: int, stream: bool, timeout_s: int = 5) -> dict:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
            f"--timeout={timeout_s}s", "-s", str(LUA), f"http://{HOST}:{port}{PATH}",
            "--", "1" if stream else "0", str(USERS)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in res.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"wrk printed no result (rc {res.returncode}):\n{res.stdout}\n{res.stderr}")


def summarise_split(t: Target, counts: dict[str, Counter]) -> dict:
    got = {v: sum(c.values()) for v, c in counts.items()}
    total = sum(got.values())
    out = {"a": got["a"], "b": got["b"], "b_share": got["b"] / total if total else None}
    if t.start is None:
        return out  # direct: everything goes to "a" by construction
    if t.split is None:
        out["misrouted"] = None
        out["expected_b_share"] = t.expected_b_share
        return out
    bad = unknown = 0
    cache: dict[str, str] = {}
    for v, counter in counts.items():
        for user, n in counter.items():
            if not user.startswith("user-"):
                unknown += n
                continue
            want = cache.get(user) or cache.setdefault(user, t.split(user))
            if want != v:
                bad += n
    # misrouted is None (unchecked) when the upstreams never saw the x-user-id
    out["misrouted"] = bad if unknown < total else None
    out["unidentified"] = unknown
    pool = [t.split(f"user-{i}") for i in range(USERS)]
    out["expected_b_share"] = pool.count("b") / USERS
    return out


def core_times() -> dict[str, tuple[float, float]]:
    """Per core: (seconds busy in user+nice+system, seconds stolen by the hypervisor)."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0].startswith("cpu") and f[0] != "cpu":
            out[f[0][3:]] = ((int(f[1]) + int(f[2]) + int(f[3])) / tck, int(f[8]) / tck)
    return out


def proc_table() -> dict[int, tuple[int, bool, int]]:
    """pid -> (ppid, is a kernel thread, CPU ticks incl. reaped children)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2 :].split()  # f[0] is field 3 (state)
        out[int(entry)] = (int(f[1]), bool(int(f[6]) & 0x00200000),
                           int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]))
    return out


def other_cpu_seconds(before: dict, after: dict) -> float:
    """CPU used between two proc_table()s by user processes outside this harness's tree."""
    ours: set[int] = set()
    for table in (before, after):
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            kids.setdefault(ppid, []).append(pid)
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            ours.add(pid)
            todo.extend(kids.get(pid, []))
    ticks = 0
    for pid, (_, kthread, cpu) in after.items():
        if pid not in ours and not kthread:
            ticks += cpu - (before[pid][2] if pid in before else 0)
    return max(0, ticks) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Quiet:
    """Waits, within a time budget for the whole run, for the machine to be idle.

    Other work on this machine (a test suite, a build) skews every figure, so each
    cell first waits until both cores are idle and is measured again if, during it,
    other processes (or the hypervisor) took more than `threshold_pct` of a core.
    """

    def __init__(self, budget_s: float, threshold_pct: float = 5.0):
        self.left = budget_s
        self.threshold = threshold_pct

    def busy_pct(self, seconds: float = 0.5) -> float:
        a = core_times()
        time.sleep(seconds)
        b = core_times()
        return max(100 * (b[c][0] - a[c][0]) / seconds for c in a)

    def wait(self) -> float:
        """Busy % of the busier core while nothing of ours runs, after waiting for calm."""
        t0 = time.monotonic()
        busy = self.busy_pct()
        while busy > 2 * self.threshold and self.left - (time.monotonic() - t0) > 0:
            time.sleep(2.0)
            busy = self.busy_pct()
        self.left -= time.monotonic() - t0
        return round(busy, 1)


def measure(t: Target, proc: Proc | None, nginx: Proc, port: int, conns: int, stream: bool,
            window: LogWindow, args) -> dict:
    if args.warmup:
        run_wrk(port, conns, args.warmup, stream)
    time.sleep(0.3)  # let the upstream's buffered access log flush (flush=100ms)
    sent0 = mirrored_so_far(port) if t.mirrored_to_b else 0
    window.start()
    cores0, procs0 = core_times(), proc_table()
    kids0, ng0 = children_cpu(), nginx.cpu_seconds()
    cpu0, t0 = (proc.cpu_seconds() if proc else 0.0), time.monotonic()
    seconds = max(args.duration, t.smoke_seconds) if args.smoke else args.duration
    w = run_wrk(port, conns, seconds, stream)
    cpu1, t1 = (proc.cpu_seconds() if proc else 0.0), time.monotonic()
    kids1, ng1 = children_cpu(), nginx.cpu_seconds()
    cores1, procs1 = core_times(), proc_table()
    time.sleep(0.5)  # in-flight requests finish, logs flush
    counts = window.read()
    mirrored = mirrored_so_far(port) - sent0 if t.mirrored_to_b else 0
    if mirrored:
        # b logged the shadow's copies too: take them off, so the split is the live one's.
        b = counts["b"]
        for user in list(b):
            take = min(b[user], mirrored)
            b[user] -= take
            mirrored -= take
            if not mirrored:
                break
        mirrored = mirrored_so_far(port) - sent0
    split = summarise_split(t, counts)
    split["mirrored"] = mirrored
    secs = w["duration_us"] / 1e6
    wall = t1 - t0
    errors = dict(w["errors"])
    socket_errors = sum(errors[k] for k in ("connect", "read", "write", "timeout"))
    cpu = cpu1 - cpu0
    # Anything else that ran meanwhile (other user processes, hypervisor steal), in % of a core.
    # Both estimates can only overstate it (children reaped in the window bring their whole
    # CPU time; kernel threads such as ksoftirqd count as busy): keep the smaller.
    ours_all = cpu + (kids1 - kids0) + (ng1 - ng0)
    busy_all = sum(cores1[c][0] - cores0[c][0] for c in cores0)
    other = 100 * min(other_cpu_seconds(procs0, procs1), max(0.0, busy_all - ours_all)) / wall
    steal = sum(100 * (cores1[c][1] - cores0[c][1]) / wall for c in cores0)
    load_cpu = (kids1 - kids0) + (ng1 - ng0)  # wrk + nginx upstream
    rec = {
        "target": t.name,
        "mode": "sse" if stream else "json",
        "connections": conns,
        "requests": w["requests"],
        "seconds": round(secs, 3),
        "rps": round(w["requests"] / secs, 1) if secs else 0.0,
        "latency_ms": {k: round(v / 1000, 3) for k, v in w["latency_us"].items()},
        "non2xx": errors["status"],
        "socket_errors": socket_errors,
        "errors": errors,
        "proxy_cpu_pct": round(100 * cpu / wall, 1) if proc else None,
        "proxy_cpu_us_per_req": round(1e6 * cpu / w["requests"], 1) if proc and w["requests"] else None,
        "load_cpu_pct": round(100 * load_cpu / wall, 1),
        "interference_pct": round(other + steal, 1),
        "steal_pct": round(steal, 1),
        "split": split,
    }
    rec["problems"] = problems_of(rec, t)
    return rec


def median_of(samples: list[dict]) -> dict:
    """The sample with the median req/s; keeps every sample's req/s and all problems."""
    rec = sorted(samples, key=lambda r: r["rps"])[(len(samples) - 1) // 2]
    if len(samples) > 1:
        rec = dict(rec, samples_rps=[r["rps"] for r in samples])
        rec["problems"] = sorted({p for r in samples for p in r["problems"]})
    return rec


def mirrored_so_far(port: int) -> int:
    """Shadow calls turnout has sent since it started (its admin API is on port + 1)."""
    url = f"http://{HOST}:{port + 1}/admin/stats?window=cumulative"
    with urllib.request.urlopen(url, timeout=10) as resp:
        stats = json.loads(resp.read())
    return sum(s["mirror"]["sent"] for r in stats["routes"] for s in r.get("shadows", ()))


def problems_of(rec: dict, t: Target) -> list[str]:
    out = []
    if rec["requests"] == 0:
        out.append("no request completed")
    if rec["non2xx"]:
        out.append(f"{rec['non2xx']} non-2xx answers")
    if rec["socket_errors"]:
        out.append(f"socket errors {rec['errors']}")
    s = rec["split"]
    served = s["a"] + s["b"]
    # the upstreams must have seen every completed request, plus at most the ones in flight
    # at either end of the window (a slow proxy still forwards the warm-up's last requests
    # after wrk has moved on), and shadow copies still in flight when it opened or closed
    slack = 2 * rec["connections"] + 2 + (2 * SHADOW_SLOTS if t.mirrored_to_b else 0)
    if served < rec["requests"] - (SHADOW_SLOTS if t.mirrored_to_b else 0) \
            or served > rec["requests"] + slack:
        out.append(f"upstreams logged {served} requests, wrk completed {rec['requests']}")
    if t.start is not None and s.get("misrouted"):
        out.append(f"{s['misrouted']} requests went to the wrong variant")
    # No per-request check (random routing, or x-user-id not passed upstream): the b share
    # must be within binomial bounds (4 sigma + 0.5 point) of the expected one.
    want = s.get("expected_b_share")
    if t.start is not None and s.get("misrouted") is None and s["b_share"] is not None \
            and want is not None and served >= 100:
        tol = share_tolerance(want, served)
        if abs(s["b_share"] - want) > tol:
            out.append(f"variant b got {100 * s['b_share']:.2f}% of {served}, "
                       f"want {100 * want:.2f}% ± {100 * tol:.2f}")
    return out


def share_tolerance(p: float, n: int) -> float:
    """How far an observed share of n requests may be from p: 4 binomial sigmas + 0.005."""
    return 4 * (p * (1 - p) / n) ** 0.5 + 0.005


# --------------------------------------------------------------------------- report


def machine_info(venv_python: str) -> dict:
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    def first_lines(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    distro = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    versions = {}
    for pkg in ("aiohttp", "uvloop", "starlette", "uvicorn", "httptools", "granian", "httpx", "orjson"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    # LiteLLM lives in its own venv: read its version from there
    site = [str(p) for p in LITELLM_VENV.glob("lib/python*/site-packages")]
    for dist in metadata.distributions(path=site):
        if dist.metadata["Name"] == "litellm":
            versions["litellm (own venv)"] = dist.version
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": distro,
        "virtualisation": first(["systemd-detect-virt"]),
        "hypervisor": next((ln.split(":", 1)[1].strip() for ln in (first_lines(["lscpu"]) or [])
                            if ln.startswith("Hypervisor vendor")), None),
        "python": platform.python_version(),
        "python_exe": venv_python,
        "nginx": first([_nginx_bin(), "-v"]),
        "wrk": first(["wrk", "-v"]),
        "packages": versions,
    }


def fmt(v, spec="{:,.0f}"):
    return "—" if v is None else spec.format(v)


def rps_cell(rec: dict | None) -> str:
    if rec is None:
        return "—"
    runs = rec.get("samples_rps")
    if not runs:
        return fmt(rec["rps"])
    return f"{fmt(rec['rps'])} ±{100 * (max(runs) - min(runs)) / 2 / rec['rps']:.0f}%"


# Throughput ratios reported when both targets are in the results: (numerator, denominator).
THROUGHPUT_RATIOS = [("turnout", "nginx-split"), ("turnout", "litellm"), ("turnout-2w", "turnout"),
                     # what observing costs: metrics and request log on, and metrics alone
                     ("turnout", "turnout-bare"), ("turnout-nolog", "turnout-bare")]
# Targets whose added latency over direct at 1 connection is reported.
ADDED_LATENCY = ["turnout", "nginx-split", "litellm"]


def compute_ratios(rows: list[dict]) -> dict:
    """The comparisons the README quotes, from the result rows (only those possible).

    throughput: "A/B" -> {"json c=1": req/s of A / req/s of B, ...};
    sse_over_json: target -> {"c=1": its SSE req/s / its JSON req/s, ...};
    added_over_direct_c1_ms: target -> {"json": {"p50": ms, "p99": ms}, "sse": {...}}.
    """
    by = {(r["target"], r["mode"], r["connections"]): r for r in rows}
    cells = sorted({(r["mode"], r["connections"]) for r in rows},
                   key=lambda mc: (mc[0] != "json", mc[1]))
    out: dict = {"throughput": {}, "sse_over_json": {}, "added_over_direct_c1_ms": {}}
    for a, b in THROUGHPUT_RATIOS:
        vals = {f"{m} c={c}": ratio(by[(a, m, c)], by[(b, m, c)])
                for m, c in cells if (a, m, c) in by and (b, m, c) in by and by[(b, m, c)]["rps"]}
        if vals:
            out["throughput"][f"{a}/{b}"] = vals
    for t in ("turnout",):
        vals = {f"c={c}": ratio(by[(t, "sse", c)], by[(t, "json", c)])
                for c in sorted({c for _, c in cells})
                if (t, "sse", c) in by and (t, "json", c) in by and by[(t, "json", c)]["rps"]}
        if vals:
            out["sse_over_json"][t] = vals
    for t in ADDED_LATENCY:
        vals = {}
        for m in ("json", "sse"):
            r, d = by.get((t, m, 1)), by.get(("direct", m, 1))
            if r and d:
                vals[m] = {q: round(r["latency_ms"][q] - d["latency_ms"][q], 3)
                           for q in ("p50", "p99")}
        if vals:
            out["added_over_direct_c1_ms"][t] = vals
    return out


def ratio(a: dict, b: dict) -> float:
    """req/s of ``a`` over ``b``: with interleaved rounds (``--rounds``), the median of
    the rounds' ratios, each of two runs a few seconds apart; else of the two cells."""
    ra, rb = a.get("round_rps"), b.get("round_rps")
    if ra and rb and len(ra) == len(rb):
        return round(statistics.median(x / y for x, y in zip(ra, rb) if y), 4)
    return round(a["rps"] / b["rps"], 4)


def _times(v: float) -> str:
    x = "\u00d7"  # multiplication sign
    return f"{v:.2f}{x}" if v < 10 else f"{v:.1f}{x}" if v < 100 else f"{v:.0f}{x}"


def render_ratios(ratios: dict, cells: list[str]) -> list[str]:
    if not any(ratios.values()):
        return []
    lines = ["## Ratios", ""]
    if ratios["throughput"]:
        lines += ["Requests/s of the first target over the second's, same mode and connections.",
                  "",
                  "| ratio | " + " | ".join(cells) + " |", "|---|" + "---:|" * len(cells)]
        for name, vals in ratios["throughput"].items():
            lines.append(f"| {name.replace('/', ' / ')} | "
                         + " | ".join(_times(vals[c]) if c in vals else "—" for c in cells)
                         + " |")
        lines.append("")
    for t, vals in ratios["sse_over_json"].items():
        lines.append(f"- {t}, streaming / non-streaming requests/s: "
                     + ", ".join(f"{_times(v)} at {c}" for c, v in vals.items()))
    for t, vals in ratios["added_over_direct_c1_ms"].items():
        lines.append(f"- {t}, latency added over direct at 1 connection: "
                     + "; ".join(f"{m} p50 {v['p50']:+.3f} ms, p99 {v['p99']:+.3f} ms"
                                 for m, v in vals.items()))
    return [*lines, ""]


def render_md(doc: dict) -> str:
    m, cfg = doc["machine"], doc["config"]
    rows = doc["results"]
    direct = {(r["mode"], r["connections"]): r for r in rows if r["target"] == "direct"}
    lines = [
        f"# Stack benchmark{' (SMOKE: no timing claims)' if cfg['smoke'] else ''}",
        "",
        f"Generated by `bash bench/stack/run.sh{''.join(' ' + a for a in cfg.get('argv', []))}` "
        f"on {doc['generated']}. Each cell: wrk 1 thread, {cfg['duration_s']} s "
        f"(after {cfg['warmup_s']} s warm-up), POST {PATH} with a 220-byte chat body, "
        f"x-user-id cycling over {USERS:,} users; proxy pinned to core {PROXY_CORE}, "
        f"wrk + nginx mock upstream on core {LOAD_CORE}.",
        "",
        *[f"Re-measured on {u['generated']} with `run.sh {' '.join(u['argv'])}`: "
          f"{', '.join(u['targets'])}.\n" for u in doc.get("updates", [])],
        "## Requests/s",
        "",
        *([f"Median of {cfg['repeat']} runs per cell, ± half their range.", ""]
          if cfg.get("repeat", 1) > 1 else []),
        "| target | json c=1 | json c=32 | sse c=1 | sse c=32 | about |",
        "|---|---:|---:|---:|---:|---|",
    ]
    by = {(r["target"], r["mode"], r["connections"]): r for r in rows}
    for t in doc["targets"]:
        cells = [rps_cell(by.get((t["name"], m_, c)))
                 for m_, c in (("json", 1), ("json", 32), ("sse", 1), ("sse", 32))]
        lines.append(f"| {t['name']} | " + " | ".join(cells) + f" | {t['about']} |")
    lines.append("")
    cells = sorted({(r["mode"], r["connections"]) for r in rows},
                   key=lambda mc: (mc[0] != "json", mc[1]))
    lines += render_ratios(compute_ratios(rows), [f"{m_} c={c}" for m_, c in cells])
    lines += [
        "## All figures",
        "",
        "Latency in ms. *+p50* is the p50 added over `direct` at the same load. "
        "CPU is the target's CPU time over the run (100% = the whole of core 1) and per request. "
        "*b share* is the share of requests the 10% upstream logged (expected share in "
        "brackets: over the user pool for a hash rule, the weight for random routing); "
        "*misrouted* counts requests whose upstream disagrees with the "
        "split rule, checked for every request from the upstream access logs (— : not "
        "checked, when the target has no rule or does not pass x-user-id upstream; then the "
        "b share must be within 4 binomial sigmas + 0.5 point of the expected one). "
        "*other load* is the CPU "
        "that other processes on the machine (and the hypervisor, as steal) took during the run, "
        "in % of a core (⚠: above the threshold, that cell was disturbed by other work; cells "
        "are re-measured up to `retries` times and the least disturbed run is kept).",
        "",
        "| target | mode | conns | req/s | p50 | p90 | p99 | +p50 | non-2xx | sock err "
        "| CPU % | CPU µs/req | b share | misrouted | other load | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lat, s = r["latency_ms"], r["split"]
        d = direct.get((r["mode"], r["connections"]))
        added = (lat["p50"] - d["latency_ms"]["p50"]) if d and r["target"] != "direct" else None
        share = "—" if s["b_share"] is None or r["target"] == "direct" else (
            f"{100 * s['b_share']:.2f}%" + (f" ({100 * s['expected_b_share']:.2f}%)"
                                             if s.get("expected_b_share") is not None else ""))
        lines.append(
            f"| {r['target']} | {r['mode']} | {r['connections']} | {fmt(r['rps'])} "
            f"| {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | {fmt(added, '{:+.3f}')} "
            f"| {r['non2xx']} | {r['socket_errors']} | {fmt(r['proxy_cpu_pct'], '{:.0f}')} "
            f"| {fmt(r['proxy_cpu_us_per_req'], '{:.0f}')} | {share} "
            f"| {fmt(s.get('misrouted'), '{}')} | {r['interference_pct']:.0f}%"
            f"{' ⚠' if r['interference_pct'] > cfg['noise_threshold_pct'] else ''} "
            f"| {'yes' if not r['problems'] else 'NO'} |")
    if doc["failures"] or any(r["problems"] for r in rows):
        lines += ["", "## Problems", ""]
        lines += [f"- {f}" for f in doc["failures"]]
        lines += [f"- {r['target']} {r['mode']} c={r['connections']}: {'; '.join(r['problems'])}"
                  for r in rows if r["problems"]]
    if doc["skipped"]:
        lines += ["", "Skipped: " + "; ".join(doc["skipped"])]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores"
        + (f"; hypervisor {m['hypervisor']}" if m.get("hypervisor") else "")
        + (f"; systemd-detect-virt: {m['virtualisation']}" if m.get("virtualisation") else ""),
        f"- OS: {m['os']}, kernel {m['kernel']}",
        f"- Python {m['python']}; {pk}",
        f"- {m['nginx']}; {m['wrk']}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def merge_into(path: Path, new: dict, names: set[str]) -> dict:
    """--update: replace (or add) the rows of the --only targets in an earlier results file."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    if old["config"].get("smoke") != new["config"]["smoke"]:
        raise SystemExit(f"--update: {path} is from a {'smoke' if old['config']['smoke'] else 'full'} run")
    keep = [r for r in old["results"] if r["target"] not in names]
    fresh = [r for r in new["results"] if r["target"] in names]
    targets = [t for t in old["targets"] if t["name"] not in names or t["name"] in
               {n["name"] for n in new["targets"]}]
    known = {t["name"] for t in targets}
    targets += [t for t in new["targets"] if t["name"] in names and t["name"] not in known]
    order = {t["name"]: i for i, t in enumerate(targets)}
    old["results"] = sorted(keep + fresh, key=lambda r: order.get(r["target"], len(order)))
    old["targets"] = [t if t["name"] not in names else next(
        (n for n in new["targets"] if n["name"] == t["name"]), t) for t in targets]
    old["failures"] = [f for f in old["failures"] if f.split(" ")[0] not in names] + new["failures"]
    old.setdefault("updates", []).append(
        {"generated": new["generated"], "targets": sorted(names), "argv": new["config"]["argv"]})
    return old


def module_ok(python: str, mod: str) -> bool:
    return subprocess.run([python, "-c", f"import {mod}"], capture_output=True, timeout=60).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="1 s per load, no warm-up: a check, no timing claims")
    ap.add_argument("--only", help="comma-separated target names (direct is always included)")
    ap.add_argument("--duration", type=int, help="seconds per load (default 10, smoke 1)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds before each load (default 2, smoke 0)")
    ap.add_argument("--conns", default="1,32", help="connection counts (default 1,32)")
    ap.add_argument("--modes", default="json,sse", help="json, sse or both (default)")
    ap.add_argument("--out", type=Path, help="output prefix (default bench/results/stack[-smoke])")
    ap.add_argument("--base-port", type=int, default=18080, help="ports base..base+10 are used")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each cell N times and report the median by req/s (default 1)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every target N times over, interleaved, and report each cell's "
                         "median round; ratios are medians of the rounds' ratios (default 1)")
    ap.add_argument("--quiet-budget", type=float,
                    help="seconds in all to wait for an idle machine before cells (default 1200, smoke 0)")
    ap.add_argument("--retries", type=int,
                    help="re-measure a cell disturbed by other load up to N times (default 3, smoke 0)")
    ap.add_argument("--update", action="store_true",
                    help="with --only: replace just those targets' rows in the existing results "
                         "(e.g. to add a new target, or re-measure a disturbed one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (configs, logs)")
    ap.add_argument("--strict", action="store_true",
                    help="a target skipped as not installed counts as failed (CI: every target is checked)")
    ap.add_argument("--list", action="store_true", help="list targets and exit")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rewrite the .md next to a results .json, and exit")
    args = ap.parse_args()
    if args.update and not args.only:
        raise SystemExit("--update needs --only TARGETS")
    if args.render:
        args.render.with_suffix(".md").write_text(render_md(json.loads(args.render.read_text())))
        return 0
    if args.list:
        for t in TARGETS:
            print(f"{t.name:20} {t.about}")
        return 0
    args.duration = args.duration or (1 if args.smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 2)
    if args.quiet_budget is None:
        args.quiet_budget = 0 if args.smoke else 1200
    if args.retries is None:
        args.retries = 0 if args.smoke else 3
    quiet = Quiet(args.quiet_budget)
    out = args.out or RESULTS / ("stack-smoke" if args.smoke else "stack")
    conns = [int(c) for c in args.conns.split(",")]
    modes = [m for m in args.modes.split(",") if m in ("json", "sse")]
    python = sys.executable
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (bench/stack/run.sh installs it)")
    global PROXY_CORE
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; proxy and load share core 0", file=sys.stderr)
        PROXY_CORE = "0"

    wanted = set(args.only.split(",")) if args.only else None
    targets, skipped = [], []
    for t in TARGETS:
        if wanted is not None and t.name not in wanted and t.name != "direct":
            continue
        if args.smoke and not t.smoke:
            continue
        missing = [m for m in t.requires if not module_ok(python, m)]
        if missing:
            skipped.append(f"{t.name} (cannot import {', '.join(missing)})")
            continue
        absent = [f for f in t.files if not os.access(f, os.X_OK)]
        if absent:
            skipped.append(f"{t.name} (not installed: {', '.join(absent)})")
            continue
        targets.append(t)
    if wanted:
        unknown = wanted - {t.name for t in TARGETS}
        if unknown:
            raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))}; see --list")

    base = args.base_port
    up = Upstream({("json", "a"): base + 1, ("json", "b"): base + 2,
                   ("sse", "a"): base + 3, ("sse", "b"): base + 4})
    proxy_port = base + 10
    busy = [p for p in [*up.ports.values(), proxy_port] if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use on {HOST}: {busy}; pick another --base-port")

    wd = Path(tempfile.mkdtemp(prefix="turnout-stack-"))
    print(f"scratch dir {wd}; targets: {', '.join(t.name for t in targets)}", flush=True)
    if skipped:
        print("skipped: " + "; ".join(skipped), flush=True)
    results, failures, started = [], [], []
    by_cell: dict[tuple[str, str, int], list[dict]] = {}  # one record per round
    interrupted = False
    nginx = None

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        (wd / "upstream.conf").write_text(upstream_conf(up, wd))
        nginx = Proc([_nginx_bin(), "-p", str(wd), "-e", str(wd / "upstream-error.log"),
                      "-c", str(wd / "upstream.conf")], core=LOAD_CORE, log=wd / "upstream.out")
        started.append(nginx)
        for port in up.ports.values():
            wait_port(port, nginx, 15)

        # Rounds interleave the targets: a drift of the machine's speed (a neighbour on
        # the host) then touches every target alike instead of whichever ran during it.
        sweeps = [(rnd, t, mode) for rnd in range(args.rounds) for t in targets for mode in modes]
        for rnd, t, mode in sweeps:
            stream = mode == "sse"
            ctx = Ctx(port=proxy_port, upstream_a=up.ports[(mode, "a")],
                      upstream_b=up.ports[(mode, "b")], stream=stream,
                      workdir=wd / f"{t.name}-{mode}{f'-r{rnd + 1}' if rnd else ''}",
                      python=python)
            ctx.workdir.mkdir()  # a fresh one per start: no state carried between modes
            window = LogWindow({v: up.log(wd, mode, v) for v in "ab"})
            proc, port = None, ctx.upstream_a
            label = f"{t.name} {mode}" + (f" r{rnd + 1}" if args.rounds > 1 else "")
            try:
                if t.start is not None:
                    env = dict(os.environ, BENCH_PORT=str(proxy_port), BENCH_SALT=ctx.salt,
                               BENCH_UPSTREAM_A=ctx.url("a"), BENCH_UPSTREAM_B=ctx.url("b"),
                               PYTHONPATH=str(PROXIES), PYTHONDONTWRITEBYTECODE="1", **t.env)
                    proc = Proc(t.start(ctx), core=PROXY_CORE, cwd=PROXIES, env=env,
                                log=wd / f"{t.name}-{mode}.out")
                    started.append(proc)
                    port = proxy_port
                    wait_port(port, proc, t.start_timeout)
                problems = preflight(t, port, stream)
                if problems:
                    raise RuntimeError("answers wrong: " + "; ".join(problems))
                for c in conns:
                    samples = []
                    for _ in range(args.repeat):
                        rec = None
                        for attempt in range(1 + args.retries):
                            idle = quiet.wait()
                            new = measure(t, proc, nginx, port, c, stream, window, args)
                            new["background_pct_before"], new["attempt"] = idle, attempt + 1
                            if rec is None or new["interference_pct"] < rec["interference_pct"]:
                                rec = new
                            if rec["interference_pct"] <= quiet.threshold or attempt == args.retries:
                                break
                            print(f"{label:28} c={c:<3} other load {new['interference_pct']:.0f}% "
                                  f"of a core during the run; measuring again", flush=True)
                        samples.append(rec)
                    rec = median_of(samples)
                    by_cell.setdefault((t.name, mode, c), []).append(rec)
                    lat = rec["latency_ms"]
                    print(f"{label:28} c={c:<3} {rec['rps']:>9,.0f} req/s  p50 {lat['p50']:.3f} "
                          f"p99 {lat['p99']:.3f} ms  cpu {fmt(rec['proxy_cpu_pct'], '{:.0f}')}%  "
                          f"b {fmt(rec['split']['b_share'], '{:.2%}')}  "
                          f"other {rec['interference_pct']:.0f}%  "
                          f"{'ok' if not rec['problems'] else 'PROBLEM: ' + '; '.join(rec['problems'])}",
                          flush=True)
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                failures.append(f"{label}: {exc}")
                print(f"{label:28} FAILED: {exc}", flush=True)
            finally:
                if proc is not None:
                    proc.stop()
                    started.remove(proc)
                    deadline = time.monotonic() + 10
                    while not port_free(proxy_port) and time.monotonic() < deadline:
                        time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for p in reversed(started):
            p.stop()
        if args.keep:
            print(f"kept {wd}")
        else:
            shutil.rmtree(wd, ignore_errors=True)

    if interrupted:
        print("interrupted: no results written", file=sys.stderr)
        return 130
    for (name, mode, c), recs in by_cell.items():
        rec = median_of(recs)
        if args.rounds > 1:
            rec = dict(rec, round_rps=[r["rps"] for r in recs])
            lat = rec["latency_ms"]
            print(f"{name + ' ' + mode:28} c={c:<3} {rec['rps']:>9,.0f} req/s  p50 {lat['p50']:.3f} "
                  f"p99 {lat['p99']:.3f} ms  (median of {len(recs)} rounds)", flush=True)
        results.append(rec)
    doc = {
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": {"argv": sys.argv[1:], "smoke": args.smoke, "duration_s": args.duration, "warmup_s": args.warmup,
                   "connections": conns, "modes": modes, "wrk_threads": 1, "users": USERS,
                   "proxy_core": PROXY_CORE, "load_core": LOAD_CORE, "salt": SALT,
                   "repeat": args.repeat, "rounds": args.rounds, "retries": args.retries, "quiet_budget_s": args.quiet_budget,
                   "noise_threshold_pct": quiet.threshold},
        "machine": machine_info(python),
        "targets": [{"name": t.name, "about": t.about} for t in targets],
        "skipped": skipped,
        "failures": failures,
        "results": results,
    }
    if args.update:
        doc = merge_into(Path(f"{out}.json"), doc, wanted or set())
    doc["ratios"] = compute_ratios(doc["results"])
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(doc, indent=2) + "\n")
    Path(f"{out}.md").write_text(render_md(doc))
    print(f"wrote {out}.md and {out}.json")
    passed = sum(1 for r in results if not r["problems"])
    failed = len(results) - passed + len(failures) + (len(skipped) if args.strict else 0)
    if args.strict and skipped:
        print("--strict: skipped counts as failed: " + "; ".join(skipped))
    print(f"stack: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
