"""Webhook delivery against real receivers: signing, retries, give-ups, overflow, secrets."""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from turnout.config.rollout import Webhook
from turnout.exceptions import ConfigError
from turnout.rollout.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    resolve_secret,
    sign,
    verify,
)

ENV_SECRET = "env-secret-3f9a7d"
FILE_SECRET = "file-secret-7c1e2b"
ROTATED_SECRET = "rotated-secret-55d0"
PATH_TOKEN = "path-token-b8e4"
EVENT = {"event": "started", "rollout": "canary-gpt"}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST; answers each path's scripted (status, headers) in order, then 200.
    Paths starting with /hang never answer before the test ends."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.path, dict(request.headers), body))
        if request.path.startswith("/hang"):
            await asyncio.wait_for(self.release.wait(), 30)
        answers = self.script.get(request.path)
        status, headers = answers.pop(0) if answers else (200, {})
        return web.Response(status=status, headers=headers)

    def at(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    r.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield r
    r.release.set()
    await runner.cleanup()


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def factory(**kw: Any) -> Notifier:
        kw = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0} | kw
        n = Notifier(tmp_path, **kw)
        made.append(n)
        return n

    yield factory
    for n in made:
        await n.close(timeout=0)


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="turnout.rollout")
    yield
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for secret in (ENV_SECRET, FILE_SECRET, ROTATED_SECRET, PATH_TOKEN, "v1="):
        assert secret not in text


async def eventually(pred: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def check_signed(seen: Seen, secret: str) -> dict[str, Any]:
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["User-Agent"] == "turnout-webhooks"
    assert seen.headers[EVENT_HEADER] == "started"
    ts, sig = seen.headers[TIMESTAMP_HEADER], seen.headers[SIGNATURE_HEADER]
    assert verify(secret.encode(), seen.body, ts, sig, now=time.time())
    assert not verify(b"another secret", seen.body, ts, sig, now=time.time())
    payload: dict[str, Any] = orjson.loads(seen.body)
    return payload


# -- signing ---------------------------------------------------------------------------------


@given(
    secret=st.binary(min_size=1, max_size=64),
    body=st.binary(max_size=512),
    ts=st.integers(min_value=0, max_value=2**40),
)
def test_sign_verify_round_trip(secret: bytes, body: bytes, ts: int) -> None:
    sig = sign(secret, ts, body)
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    assert verify(secret, body, str(ts), sig, now=ts)
    assert verify(secret, body, str(ts), sig, now=ts + 300)
    assert not verify(secret, body + b"x", str(ts), sig, now=ts)
    assert not verify(secret + b"x", body, str(ts), sig, now=ts)
    assert not verify(secret, body, str(ts + 1), sig, now=ts)  # timestamp is signed
    assert not verify(secret, body, str(ts), sig, now=ts + 301)  # stale
    assert not verify(secret, body, str(ts), sig, now=ts - 301)  # from the future


@given(body=st.binary(min_size=1, max_size=256), index=st.integers(min_value=0))
def test_verify_rejects_any_changed_byte(body: bytes, index: int) -> None:
    sig = sign(b"k", 1000, body)
    i = index % len(body)
    changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    assert not verify(b"k", changed, "1000", sig, now=1000)


def test_sign_known_value() -> None:
    # Receivers in other languages can check their implementation against this.
    assert sign(b"secret", 1700000000, b'{"a":1}') == (
        "v1=" + hmac.new(b"secret", b'1700000000.{"a":1}', "sha256").hexdigest()
    )


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (None, "SIG"),
        ("1000", None),
        (None, None),
        ("", "SIG"),
        ("abc", "SIG"),
        ("-1000", "SIG"),
        ("01000", "SIG"),
        ("1000.0", "SIG"),
        ("\u0661\u0660\u0660\u0660", "SIG"),  # Arabic-Indic digits: int() takes them
        ("1000", ""),
        ("1000", "v1=zz"),
        ("1000", "v1=é"),
        ("1000", "SIG-UPPER"),
    ],
)
def test_verify_rejects_missing_or_malformed(timestamp: str | None, signature: str | None) -> None:
    good = sign(b"k", 1000, b"{}")
    if signature == "SIG":
        signature = good
    elif signature == "SIG-UPPER":
        signature = good.upper()
    assert verify(b"k", b"{}", "1000", good, now=1000)
    assert not verify(b"k", b"{}", timestamp, signature, now=1000)


def test_verify_rejects_nan_clock() -> None:
    assert not verify(b"k", b"{}", "1000", sign(b"k", 1000, b"{}"), now=float("nan"))


# -- secrets ---------------------------------------------------------------------------------


def test_resolve_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_secret(Webhook(url="http://x"), tmp_path) is None

    monkeypatch.delenv("HOOK_SECRET", raising=False)
    hook = Webhook(url="http://x", secret_env="HOOK_SECRET")
    with pytest.raises(ConfigError) as err:
        resolve_secret(hook, tmp_path)
    assert "HOOK_SECRET" in str(err.value)
    assert err.value.errors[0].path == "webhooks[].secret_env"
    monkeypatch.setenv("HOOK_SECRET", "")
    with pytest.raises(ConfigError):
        resolve_secret(hook, tmp_path)
    monkeypatch.setenv("HOOK_SECRET", ENV_SECRET)
    assert resolve_secret(hook, tmp_path) == ENV_SECRET.encode()

    hook = Webhook(url="http://x", secret_file="s/hook.secret")  # relative to base_dir
    with pytest.raises(ConfigError) as err:
        resolve_secret(hook, tmp_path)
    assert "hook.secret" in str(err.value)
    assert err.value.errors[0].path == "webhooks[].secret_file"
    (tmp_path / "s").mkdir()
    for content, want in [
        (FILE_SECRET + "\n", FILE_SECRET),
        (FILE_SECRET + "\r\n", FILE_SECRET),
        (FILE_SECRET + "\n\n", FILE_SECRET + "\n"),  # one newline only
        (FILE_SECRET, FILE_SECRET),
    ]:
        (tmp_path / "s" / "hook.secret").write_text(content)
        assert resolve_secret(hook, tmp_path) == want.encode()
    for empty in ["", "\n"]:
        (tmp_path / "s" / "hook.secret").write_text(empty)
        with pytest.raises(ConfigError) as err:
            resolve_secret(hook, tmp_path)
        assert "empty" in str(err.value)

    absolute = Webhook(url="http://x", secret_file=str(tmp_path / "s"))  # a directory
    with pytest.raises(ConfigError) as err:
        resolve_secret(absolute, Path("/nonexistent"))
    assert str(tmp_path / "s") in str(err.value)
    assert FILE_SECRET not in str(err.value) and ENV_SECRET not in str(err.value)


# -- delivery --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["env", "file"])
async def test_5xx_is_retried_until_delivered(
    receiver: Receiver,
    make: Callable[..., Notifier],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    if source == "env":
        monkeypatch.setenv("HOOK_SECRET", ENV_SECRET)
        hook, secret = Webhook(url=receiver.base + "/a", secret_env="HOOK_SECRET"), ENV_SECRET
    else:
        (tmp_path / "hook.secret").write_text(FILE_SECRET + "\n")
        hook, secret = Webhook(url=receiver.base + "/a", secret_file="hook.secret"), FILE_SECRET
    receiver.script["/a"] = [(500, {}), (503, {})]
    n = make()
    await n.start()
    n.notify([hook], EVENT)
    await eventually(lambda: n.counters()["delivered"] == 1)
    assert n.counters() == {"delivered": 1, "failed": 0, "retries": 2, "dropped": 0, "pending": 0}
    seen = receiver.at("/a")
    assert len(seen) == 3
    payloads = [check_signed(s, secret) for s in seen]
    assert all(p == payloads[0] for p in payloads)  # the same event, re-signed per attempt
    assert payloads[0]["event"] == "started" and payloads[0]["rollout"] == "canary-gpt"
    assert payloads[0]["seq"] == 1 and isinstance(payloads[0]["sent_at"], float)


async def test_unsigned_without_secret_and_seq_increases(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    n = make(clock=lambda: 1_700_000_000.25)
    hook = Webhook(url=receiver.base + "/plain")
    n.notify([hook], EVENT)
    n.notify([hook], {**EVENT, "event": "aborted", "reason": "latency_ms worse"})
    n.notify([hook], {**EVENT, "seq": 99, "sent_at": 5})  # the caller's own values win
    assert n.counters()["pending"] == 3  # queued before start()
    await n.start()
    await eventually(lambda: n.counters()["delivered"] == 3)
    seen = sorted(receiver.at("/plain"), key=lambda s: orjson.loads(s.body)["seq"])
    assert [orjson.loads(s.body)["seq"] for s in seen] == [1, 2, 99]
    assert [s.headers[EVENT_HEADER] for s in seen] == ["started", "aborted", "started"]
    assert all(SIGNATURE_HEADER not in s.headers for s in seen)
    assert all(s.headers[TIMESTAMP_HEADER] == "1700000000" for s in seen)
    assert orjson.loads(seen[0].body)["sent_at"] == 1_700_000_000.25
    assert orjson.loads(seen[2].body)["sent_at"] == 5


async def test_429_honours_retry_after(receiver: Receiver, make: Callable[..., Notifier]) -> None:
    receiver.script["/zero"] = [(429, {"Retry-After": "0"})]
    receiver.script["/long"] = [(429, {"Retry-After": "3600"})]  # capped at max_backoff
    # Without Retry-After the first retry would wait a random 0-20 s.
    slow = make(backoff=20.0, max_backoff=20.0)
    capped = make(backoff=20.0, max_backoff=0.05)
    for n, path in [(slow, "/zero"), (capped, "/long")]:
        await n.start()
        n.notify([Webhook(url=receiver.base + path)], EVENT)
    await eventually(lambda: slow.counters()["delivered"] + capped.counters()["delivered"] == 2)
    assert slow.counters()["retries"] == capped.counters()["retries"] == 1
    assert len(receiver.at("/zero")) == len(receiver.at("/long")) == 2


async def test_4xx_gives_up_at_once(
    receiver: Receiver, make: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script[f"/{PATH_TOKEN}"] = [(400, {})]
    receiver.script["/redirect"] = [(302, {"Location": receiver.base + "/elsewhere"})]
    n = make()
    await n.start()
    hooks = [
        Webhook(url=f"{receiver.base}/{PATH_TOKEN}?key={PATH_TOKEN}"),
        Webhook(url=receiver.base + "/redirect"),
    ]
    n.notify(hooks, EVENT)
    await eventually(lambda: n.counters()["failed"] == 2)
    await asyncio.sleep(0.2)  # room for a wrong retry to show up
    assert len(receiver.at(f"/{PATH_TOKEN}")) == 1 and len(receiver.at("/redirect")) == 1
    assert not receiver.at("/elsewhere")
    assert n.counters() == {"delivered": 0, "failed": 2, "retries": 0, "dropped": 0, "pending": 0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(receiver.base in r.getMessage() for r in warnings)
    assert "HTTP 400" in warnings[0].getMessage() or "HTTP 400" in warnings[1].getMessage()


async def test_hanging_receiver_blocks_nobody(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    n = make(attempts=3, timeout=0.4, concurrency=2)
    hang, healthy = Webhook(url=receiver.base + "/hang"), Webhook(url=receiver.base + "/ok")
    await n.start()
    n.notify([hang, healthy], EVENT)
    # notify() only queued: nothing was sent or waited for.
    assert n.counters() == {"delivered": 0, "failed": 0, "retries": 0, "dropped": 0, "pending": 2}
    await eventually(lambda: n.counters()["delivered"] == 1)
    assert n.counters()["failed"] == 0  # healthy done while the hung one is still trying
    await eventually(lambda: n.counters()["failed"] == 1)
    assert len(receiver.at("/hang")) == 3 and len(receiver.at("/ok")) == 1
    assert n.counters() == {"delivered": 1, "failed": 1, "retries": 2, "dropped": 0, "pending": 0}


async def test_waiting_retry_holds_no_worker(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    # One worker: the healthy delivery goes out between the hung one's attempts.
    n = make(attempts=3, timeout=0.3, concurrency=1)
    await n.start()
    n.notify([Webhook(url=receiver.base + "/hang"), Webhook(url=receiver.base + "/ok")], EVENT)
    await eventually(lambda: n.counters()["delivered"] == 1)
    assert n.counters()["failed"] == 0
    await eventually(lambda: n.counters()["failed"] == 1)
    assert len(receiver.at("/hang")) == 3


async def test_connection_refused_gives_up_after_attempts(make: Callable[..., Notifier]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = make(attempts=4)
    await n.start()
    n.notify([Webhook(url=f"http://127.0.0.1:{port}/gone")], EVENT)
    await eventually(lambda: n.counters()["failed"] == 1)
    assert n.counters()["retries"] == 3


async def test_queue_overflow_drops(receiver: Receiver, make: Callable[..., Notifier]) -> None:
    n = make(queue_limit=2)
    hook = Webhook(url=receiver.base + "/q")
    n.notify([hook, hook, hook], EVENT)
    n.notify([hook], EVENT)
    assert n.counters() == {"delivered": 0, "failed": 0, "retries": 0, "dropped": 2, "pending": 2}
    await n.start()
    await eventually(lambda: n.counters()["delivered"] == 2)
    n.notify([hook], EVENT)  # room again once delivered
    await eventually(lambda: n.counters()["delivered"] == 3)
    assert n.counters()["dropped"] == 2 and len(receiver.at("/q")) == 3


async def test_unserialisable_event_is_dropped_not_raised(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    n = make()
    n.notify([Webhook(url=receiver.base + "/x")], {**EVENT, "bad": object()})
    assert n.counters()["dropped"] == 1 and n.counters()["pending"] == 0


async def test_secret_rotation_and_unresolvable_secret(
    receiver: Receiver, make: Callable[..., Notifier], tmp_path: Path
) -> None:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(FILE_SECRET)
    hook = Webhook(url=receiver.base + "/r", secret_file=str(secret_file))
    n = make()
    await n.start()
    n.notify([hook], EVENT)
    await eventually(lambda: n.counters()["delivered"] == 1)
    secret_file.write_text(ROTATED_SECRET + "\n")
    n.notify([hook], EVENT)
    await eventually(lambda: n.counters()["delivered"] == 2)
    first, second = receiver.at("/r")
    check_signed(first, FILE_SECRET)
    check_signed(second, ROTATED_SECRET)
    secret_file.unlink()
    n.notify([hook], EVENT)
    await eventually(lambda: n.counters()["failed"] == 1)
    assert len(receiver.at("/r")) == 2  # never sent unsigned
    assert n.counters()["retries"] == 0


async def test_close_delivers_queued_then_drops_the_rest(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    n = make(timeout=5.0)
    await n.start()
    n.notify([Webhook(url=receiver.base + "/c")], EVENT)
    await n.close(timeout=5.0)
    assert n.counters()["delivered"] == 1

    n = make(timeout=5.0)
    await n.start()
    n.notify([Webhook(url=receiver.base + "/hang"), Webhook(url=receiver.base + "/c")], EVENT)
    await n.close(timeout=0.5)
    assert n.counters() == {"delivered": 1, "failed": 0, "retries": 0, "dropped": 1, "pending": 0}
    await n.close()  # idempotent
    n.notify([Webhook(url=receiver.base + "/c")], EVENT)  # after close: dropped, no raise
    assert n.counters()["dropped"] == 2

    n = make()
    n.notify([Webhook(url=receiver.base + "/c")], EVENT)
    await n.close()  # never started
    assert n.counters()["dropped"] == 1 and n.counters()["pending"] == 0
