"""Dispatch: the attempt loop that sends a request along its variant's chain.

Retries of one upstream (backoff with jitter, ``Retry-After``, the route's retry
budget and deadline), then the next upstream of the chain on a failure class the
variant falls back on, skipping ejected upstreams. The gateway is the only retry
loop: every error it answers says ``x-should-retry: false`` so that clients (the
``openai`` SDK honours it) do not multiply an outage with retries of their own.

A stream is committed to the client only when its first chunk arrives: until
then any failure may still fall back; after it, a failure ends the stream with an
error event (never a silent truncation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from random import random
from time import perf_counter
from typing import Any

import orjson

from turnout.exceptions import GatewayError, UpstreamFailed
from turnout.gateway.errors import stream_error_event
from turnout.gateway.http1 import Request, Response, StreamResponse
from turnout.gateway.sse import StreamTap
from turnout.gateway.transport import Transport, UpstreamResponse
from turnout.observe.exchange import (
    CLIENT_4XX,
    UPSTREAM_ERROR,
    Exchange,
    error_class_of,
    error_class_of_status,
)
from turnout.observe.observer import Observer
from turnout.resilience import HealthBook, RetryBudget, backoff_delay, parse_retry_after
from turnout.resilience.chains import Chain, RoutePolicy, Step
from turnout.routing.request import as_text
from turnout.routing.transform import Usage

H_UPSTREAM = "x-turnout-upstream"
H_ATTEMPTS = "x-turnout-attempts"
H_SHOULD_RETRY = "x-should-retry"
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_ATTEMPTS = tuple(str(n) for n in range(64))  # header values, rendered once


@dataclass(slots=True)
class Failure:
    """An attempt that failed before anything reached the client."""

    error_class: str
    exc: GatewayError | None = None  # connection, timeout, unreadable answer
    status: int = 0  # or an HTTP error answered by the upstream
    body: bytes = b""
    headers: dict[str, str] | None = None  # Retry-After and x-ratelimit-* to pass on
    retry_after: float | None = None


def passed_on(upstream: UpstreamResponse) -> dict[str, str]:
    """Rate-limit hints the client backs off by (Retry-After, x-ratelimit-*)."""
    return {
        name: value
        for name, value in upstream.headers.items()
        if name.lower().startswith(("retry-after", "x-ratelimit-"))
    }


def _retry_after(upstream: UpstreamResponse) -> float | None:
    ms = upstream.headers.get("retry-after-ms")
    if ms is not None:
        seconds = parse_retry_after(ms, 0.0)
        return None if seconds is None else seconds / 1000.0
    return parse_retry_after(upstream.headers.get("retry-after"), time.time())


def _relay_error(
    x: Exchange, status: int, raw: bytes, headers: dict[str, str], hints: dict[str, str] | None
) -> Response:
    """Pass an upstream's error on as it came, if it is an OpenAI-style error body,
    with its rate-limit hints; any other error body is a bad response (502)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict | str)):
        raise UpstreamFailed(
            f"upstream {x.upstream!r} answered HTTP {status} without an OpenAI-style error body",
            code="upstream_bad_response",
        )
    headers[H_SHOULD_RETRY] = "false"
    if hints:
        headers.update(hints)
    return Response(status, raw, headers)


def usage_into(parsed: Any, x: Exchange) -> None:
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        x.input_tokens = prompt if isinstance(prompt, int) else None
        x.output_tokens = completion if isinstance(completion, int) else None


class Dispatcher:
    """Per process; health and retry budgets outlive config swaps."""

    def __init__(
        self,
        transport: Transport,
        observer: Observer,
        health: HealthBook | None = None,
        draw: Callable[[], float] = random,
    ) -> None:
        self.transport = transport
        self.observer = observer
        self.health = health if health is not None else HealthBook()
        self._draw = draw
        self._budgets: dict[tuple[str, float, float], RetryBudget] = {}

    def _budget(self, route: str, policy: RoutePolicy) -> RetryBudget:
        key = (route, policy.budget_ratio, policy.budget_min_per_second)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = policy.new_budget()
        return budget

    def _next_available(self, steps: tuple[Step, ...], start: int, now: float) -> int:
        """Index of the first step from ``start`` whose upstream may be called now
        (not ejected), or -1."""
        health = self.health
        for i in range(start, len(steps)):
            t = steps[i].target
            if health.of(t.name).available(t.ejection, now):
                return i
        return -1

    async def run(
        self,
        request: Request,
        x: Exchange,
        policy: RoutePolicy,
        chain: Chain,
        steps: tuple[Step, ...],
        body: dict[str, Any],
        headers: dict[str, str],
        usage: Usage,
    ) -> Response | StreamResponse:
        """Answer the request from the first step that succeeds; the last failure
        otherwise (relayed, or raised as a GatewayError)."""
        now = x.start
        budget = self._budget(x.route or "", policy)
        budget.deposit(now)
        deadline = None if policy.deadline is None else now + policy.deadline
        # With every upstream of the chain ejected, the first is tried anyway (Envoy's
        # "panic" routing) rather than refuse a request that might succeed.
        index = max(self._next_available(steps, 0, now), 0)
        step = steps[index]
        if index:
            self.observer.moved(x, step.target.name)
        payload = orjson.dumps(body)
        retries = 0
        while True:
            x.attempts += 1
            result = await self._attempt(request, x, step, payload, headers, deadline, usage)
            if not isinstance(result, Failure):
                return result
            now = perf_counter()
            cls, wait = result.error_class, result.retry_after
            if (
                cls in policy.retry_on
                and retries < policy.max_retries
                and (wait is None or wait <= policy.max_retry_after)
            ):
                delay = backoff_delay(retries + 1, policy.backoff, policy.max_backoff, self._draw())
                delay = max(delay, wait or 0.0)
                if (deadline is None or now + delay < deadline) and budget.withdraw(now):
                    self.observer.absorbed(x, step.target.name, cls, now)
                    retries += 1
                    x.retries += 1
                    if delay > 0:
                        await asyncio.sleep(delay)
                    continue
            if cls in chain.fallback_on and (deadline is None or now < deadline):
                index = self._next_available(steps, index + 1, now)
                if index >= 0:
                    following = steps[index]
                    self.observer.absorbed(x, step.target.name, cls, now)
                    self.observer.moved(x, following.target.name)
                    x.fallbacks += 1
                    retries = 0
                    if following.rewrites or step.rewrites:
                        payload = orjson.dumps(_rewritten(body, following))
                        x.model = following.model or as_text(body.get("model"))
                    step = following
                    continue
            return self._give_up(x, result, headers)

    def _give_up(self, x: Exchange, failure: Failure, headers: dict[str, str]) -> Response:
        x.error_class = failure.error_class
        if failure.exc is not None:
            raise failure.exc
        return _relay_error(x, failure.status, failure.body, headers, failure.headers)

    async def _attempt(
        self,
        request: Request,
        x: Exchange,
        step: Step,
        payload: bytes,
        headers: dict[str, str],
        deadline: float | None,
        usage: Usage,
    ) -> Response | StreamResponse | Failure:
        """One call to one upstream; its outcome is reported to the upstream's health
        (a reserved half-open probe is released if the call ends without one)."""
        target = step.target
        health = self.health.of(target.name)
        headers[H_UPSTREAM] = target.name
        headers[H_ATTEMPTS] = _ATTEMPTS[x.attempts] if x.attempts < 64 else str(x.attempts)
        started = perf_counter()
        if x.sent is None:
            x.sent = started
        first_byte = target.first_byte_timeout
        if deadline is not None:
            first_byte = max(min(first_byte, deadline - started), 0.001)
        ok: bool | None = None
        try:
            try:
                upstream = await self.transport.send(target, x.operation, payload, first_byte)
            except GatewayError as exc:
                ok = False
                return Failure(error_class_of(exc), exc=exc)
            if x.stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
                streamed, ok = await self._stream(request, x, upstream, headers, usage)
                return streamed
            whole = await self._whole(x, upstream, headers)
            # A client's 4xx says nothing of the upstream's health: it answered.
            ok = not isinstance(whole, Failure)
            return whole
        finally:
            end = perf_counter()
            if ok is None:
                health.release()
            elif ok:
                health.success(target.ejection, end)
            else:
                health.failure(target.ejection, end)

    async def _whole(
        self, x: Exchange, upstream: UpstreamResponse, headers: dict[str, str]
    ) -> Response | Failure:
        try:
            raw = await upstream.read()
        except GatewayError as exc:
            return Failure(error_class_of(exc), exc=exc)
        x.upstream_done = perf_counter()
        status = upstream.status
        if status >= 400:
            cls = error_class_of_status(status) or CLIENT_4XX
            if cls != CLIENT_4XX:
                return Failure(cls, None, status, raw, passed_on(upstream), _retry_after(upstream))
            x.error_class = cls
            return _relay_error(x, status, raw, headers, passed_on(upstream))
        try:
            usage_into(orjson.loads(raw), x)
        except orjson.JSONDecodeError:
            bad = UpstreamFailed(
                f"upstream {x.upstream!r} answered with a body that is not JSON",
                code="upstream_bad_response",
            )
            return Failure(UPSTREAM_ERROR, exc=bad)
        if x.request_body is not None:
            x.response_body = raw
        if x.kept is not None:
            x.kept.append(raw)
        return Response(status, raw, headers)

    async def _stream(
        self,
        request: Request,
        x: Exchange,
        upstream: UpstreamResponse,
        headers: dict[str, str],
        usage: Usage,
    ) -> tuple[StreamResponse | Failure, bool]:
        """Relay an SSE stream; (the response or a failure, whether it went well)."""
        tap = StreamTap(usage)
        chunks = upstream.chunks().__aiter__()
        kept = x.kept
        try:
            first = await chunks.__anext__()
            passed = tap.feed(first)
        except StopAsyncIteration:
            upstream.close()
            empty = UpstreamFailed(
                f"upstream {x.upstream!r} ended the stream before any data",
                code="upstream_bad_response",
            )
            return Failure(UPSTREAM_ERROR, exc=empty), False
        except GatewayError as exc:
            upstream.close()
            return Failure(error_class_of(exc), exc=exc), False
        if tap.errored:  # an error event before anything reached the client
            upstream.close()
            event = UpstreamFailed(
                f"upstream {x.upstream!r} answered an error event", code="upstream_bad_response"
            )
            return Failure(UPSTREAM_ERROR, exc=event), False
        x.first_chunk = perf_counter()
        if kept is not None:
            kept.append(first)
        headers.update(_SSE_HEADERS)  # the request's own dict: nothing else reads it now
        out = StreamResponse(status=200, headers=headers)
        ok = True
        # The last data rides with the end of the answer: the upstream says when a
        # chunk was its last, so nothing is held back waiting for the next one.
        last = b""
        try:
            out.prepare(request)
            try:
                if upstream.at_end:
                    last = passed
                else:
                    await out.write(passed)  # the head goes with it, data or not
                    async for chunk in chunks:
                        if kept is not None:
                            kept.append(chunk)
                        passed = tap.feed(chunk)
                        if upstream.at_end:
                            last = passed
                        elif passed:
                            await out.write(passed)
                last += tap.flush()
                if tap.errored:
                    x.error_class = UPSTREAM_ERROR
                    ok = False
            except GatewayError as exc:
                # Headers are gone already: the only honest ending is an error event.
                x.error_class = error_class_of(exc)
                ok = False
                last += stream_error_event(exc)
            await out.write_eof(last)
        except (ConnectionResetError, ConnectionError):
            # The client went away; closing the upstream below stops the generation.
            x.client_gone = True
        finally:
            x.upstream_done = perf_counter()
            x.input_tokens = tap.input_tokens
            x.output_tokens = tap.output_count
            upstream.close()
        return out, ok


def _rewritten(body: dict[str, Any], step: Step) -> dict[str, Any]:
    if not step.rewrites:
        return body
    out = dict(body)
    if step.model is not None:
        out["model"] = step.model
    if step.params:
        out.update(step.params)
    return out
