"""Webhook notifications of rollout transitions: signed JSON POSTs, retried in the background.

Every delivery is a POST of one JSON object (``content-type: application/json``) holding at
least ``event`` (the kind: ``started``, ``aborted``...), ``rollout``, ``seq`` (increasing per
gateway process, to order events: retries mean deliveries to one URL may overlap or arrive
out of order) and ``sent_at`` (unix seconds when the event was queued). Headers:

    x-turnout-event:      the event kind
    x-turnout-timestamp:  integer unix seconds of this attempt (every retry is signed anew)
    x-turnout-signature:  v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
                          (only when the webhook has a secret)

To verify, a receiver recomputes the HMAC over the timestamp header's text, a dot and the raw
request body (before any JSON parsing), compares it to the header in constant time, and
rejects a timestamp far from its own clock (five minutes here), which stops replays of an
old request. ``verify`` below does exactly this.

2xx is success. Connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff and full jitter (or the receiver's ``Retry-After``); anything else gives up at once
(redirects included: they are not followed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from turnout.config.rollout import Webhook
from turnout.exceptions import ConfigError
from turnout.resilience.backoff import backoff_delay, parse_retry_after

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Notifier",
    "resolve_secret",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "x-turnout-signature"
TIMESTAMP_HEADER = "x-turnout-timestamp"
EVENT_HEADER = "x-turnout-event"
USER_AGENT = "turnout-webhooks"

log = logging.getLogger("turnout.rollout")

# Canonical integers only: the signature covers the header's text, so "0123" and "123"
# must not both be accepted for one signed value.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,17}")
_EVENT_KIND = re.compile(r"[\x20-\x7e]{1,100}")
_RETRYABLE = frozenset({408, 429})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of ``"<ts>." + body``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """Whether ``signature`` signs ``body`` at ``timestamp``, no more than ``tolerance``
    seconds from ``now``. False, never an exception, for missing or malformed headers."""
    if timestamp is None or signature is None:
        return False
    text = timestamp.strip()
    if _TIMESTAMP.fullmatch(text) is None:
        return False
    ts = int(text)
    if not abs(now - ts) <= tolerance:  # written so that a NaN ``now`` also refuses
        return False
    expected = sign(secret, ts, body).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def resolve_secret(hook: Webhook, base_dir: Path) -> bytes | None:
    """The hook's shared secret, None when it has none (deliveries are then unsigned).

    Read on every call, so a rotated secret file or variable is picked up. ConfigError
    when the variable is unset or empty, or the file unreadable or empty; messages name
    the variable or file, never the value."""
    if hook.secret_env is not None:
        value = os.environ.get(hook.secret_env, "")
        if not value:
            raise ConfigError.single(
                "webhooks[].secret_env",
                f"environment variable {hook.secret_env!r} is unset or empty",
            )
        return value.encode()
    if hook.secret_file is not None:
        path = Path(hook.secret_file).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            why = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
            raise ConfigError.single("webhooks[].secret_file", why) from None
        # Editors add a final newline that nobody means as part of the secret.
        data = data.removesuffix(b"\n").removesuffix(b"\r")
        if not data:
            raise ConfigError.single("webhooks[].secret_file", f"{path} is empty")
        return data
    return None


def _origin(url: str) -> str:
    # Paths and queries often carry tokens (Slack-style hook URLs), so logs get the origin.
    try:
        return str(URL(url).origin())
    except ValueError:
        return "<unparsable url>"


@dataclass(slots=True)
class _Delivery:
    hook: Webhook
    kind: str
    body: bytes
    attempts: int = 0


class Notifier:
    """Delivers rollout events to webhooks in the background, never blocking the caller.

    ``notify`` only queues; ``concurrency`` workers each make one attempt at a time, and a
    delivery waiting for its retry holds no worker, so a dead receiver delays others by at
    most one attempt's ``timeout`` per worker it occupies. Use from the event loop's thread.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
        queue_limit: int = 1000,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_dir = base_dir
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._queue_limit = max(1, queue_limit)
        self._concurrency = max(1, concurrency)
        self._clock = clock
        self._rng = random.Random()
        # Neither binds to an event loop before first awaited, so notify() works before start().
        self._ready: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[None]] = set()
        self._closed = False
        self._full = False
        self._seq = 0
        self._counts = {"delivered": 0, "failed": 0, "retries": 0, "dropped": 0}
        self._pending = 0  # queued + in flight + waiting for a retry

    def counters(self) -> dict[str, int]:
        return {**self._counts, "pending": self._pending}

    def notify(self, hooks: Sequence[Webhook], event: Mapping[str, Any]) -> None:
        """Queue one delivery of ``event`` per hook. Never blocks, never raises."""
        if not hooks:
            return
        try:
            payload = dict(event)
            self._seq += 1
            payload.setdefault("seq", self._seq)
            payload.setdefault("sent_at", round(self._clock(), 3))
            body = orjson.dumps(payload)
            kind = str(payload.get("event", ""))
        except Exception:  # a controller bug must not abort the transition it reports
            log.exception("webhook event not sent: it cannot be serialised as JSON")
            self._counts["dropped"] += len(hooks)
            return
        if _EVENT_KIND.fullmatch(kind) is None:  # header values must not smuggle CR/LF
            kind = "unknown"
        for hook in hooks:
            if self._closed or self._pending >= self._queue_limit:
                self._counts["dropped"] += 1
                if not self._full:  # once per overflow, not once per event
                    self._full = True
                    log.warning("webhook queue full or closed: %s event(s) dropped", kind)
                continue
            self._full = False
            self._pending += 1
            self._idle.clear()
            self._ready.put_nowait(_Delivery(hook, kind, body))

    async def start(self) -> None:
        """Open the HTTP session and start the workers; deliveries queued so far go out."""
        if self._closed:
            raise RuntimeError("Notifier is closed")
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            connector=aiohttp.TCPConnector(limit=0),  # the workers are the limit
        )
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    # The timeout parameter is the agreed API (the controller's shutdown budget).
    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Deliver what is queued or in flight for up to ``timeout`` seconds, then stop;
        what is left counts as dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                pass
        tasks = [*self._workers, *self._waiting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._pending:
            log.warning("webhooks: %d delivery(ies) dropped at shutdown", self._pending)
            self._counts["dropped"] += self._pending
            self._pending = 0
        self._idle.set()

    async def _work(self) -> None:
        while True:
            delivery = await self._ready.get()
            try:
                await self._attempt(delivery)
            except Exception:  # a bug here must cost one delivery, not the worker
                log.exception("webhook to %s: unexpected error", _origin(delivery.hook.url))
                self._finish("failed")

    def _finish(self, outcome: str) -> None:
        self._counts[outcome] += 1
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    async def _attempt(self, d: _Delivery) -> None:
        assert self._session is not None
        d.attempts += 1
        where = _origin(d.hook.url)
        try:
            secret = resolve_secret(d.hook, self._base_dir)
        except ConfigError as exc:
            log.warning("webhook to %s not sent: %s", where, exc.errors[0])
            self._finish("failed")
            return
        now = int(self._clock())
        headers = {EVENT_HEADER: d.kind, TIMESTAMP_HEADER: str(now)}
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, now, d.body)
        retry_after: float | None = None
        try:
            # No redirects: following one would re-send a signed body to another address.
            async with self._session.post(
                d.hook.url,
                data=d.body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
            failure = f"HTTP {status}"
            retryable = status >= 500 or status in _RETRYABLE
            if 200 <= status < 300:
                self._finish("delivered")
                return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Only the type: aiohttp's messages can quote the full URL.
            failure, retryable = type(exc).__name__, True
        if not retryable or d.attempts >= self._attempts:
            msg = "webhook %s to %s failed after %d attempt(s): %s"
            log.warning(msg, d.kind, where, d.attempts, failure)
            self._finish("failed")
            return
        if retry_after is not None:
            delay = min(retry_after, self._max_backoff)
        else:
            delay = backoff_delay(d.attempts, self._backoff, self._max_backoff, self._rng.random())
        log.debug("webhook %s to %s: %s, retry in %.2fs", d.kind, where, failure, delay)
        self._counts["retries"] += 1
        task = asyncio.create_task(self._requeue(d, delay))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _requeue(self, d: _Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        self._ready.put_nowait(d)
