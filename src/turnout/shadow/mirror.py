"""Mirroring: copies of live requests sent to shadows, off the request path.

The pipeline calls ``offer`` once it knows a request's route (a dict lookup when the
route has no shadows) and ``settle`` when the request is done. ``offer`` never
waits: each shadow has a lane with at most ``max_concurrency`` calls in flight and
``queue`` requests waiting; beyond that the copy is dropped and counted. A shadow
call is a task of its own, with the client's original body (parsed afresh, then
the shadow's bundle applied), one attempt, no retries and no effect on upstream
health, so nothing a shadow does can reach the client's response.

When both answers are known, the shadow's evaluators score the pair, the scores go
into the route's ``Tally`` and a disagreeing pair into the sample store (a bounded
queue drained by one task through an executor, like every blocking store call).
A shadow call's latency, tokens, errors and cost go into the registry's shadow
series, never into a live variant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import randrange
from time import perf_counter
from typing import Any, Protocol

import orjson

from turnout.exceptions import GatewayError, UpstreamFailed
from turnout.gateway.transport import Transport
from turnout.observe.exchange import (
    UPSTREAM_ERROR,
    Exchange,
    error_class_of,
    error_class_of_status,
)
from turnout.observe.metrics import Registry
from turnout.routing.bucketing import BUCKETS
from turnout.routing.request import RequestView, as_text
from turnout.routing.transform import apply_bundle, stream_usage
from turnout.shadow.agreement import disagrees
from turnout.shadow.answers import Reply, read_body, read_stream
from turnout.shadow.evaluators import Answer, Evaluator, evaluate_all
from turnout.shadow.judge_llm import Ask
from turnout.shadow.plan import ShadowPlan, build_evaluators, chosen
from turnout.snapshot import Snapshot, UpstreamTarget
from turnout.store.shadow_samples import DiffSample

__all__ = ["Live", "Mirror", "SampleSink"]

log = logging.getLogger("turnout.shadow")

LIVE_WAIT = 900.0  # seconds a finished shadow call waits for its live answer, at most
SAMPLE_QUEUE = 256  # disagreeing pairs waiting for the store; more are dropped
CLIENT_GONE = "client_gone"  # settled by a live request whose client left mid-answer


class SampleSink(Protocol):
    def add_many(self, samples: Sequence[DiffSample], keep: int) -> tuple[int, int]:
        """Store samples (blocking); (stored, refused by redaction)."""
        ...


@dataclass(slots=True)
class Live:
    """One mirrored request's live side, shared by all its shadows' jobs."""

    request_id: str
    variant: str
    endpoint: str
    stream: bool
    raw: bytes  # the client's body as it came
    view: RequestView  # headers and query for the shadow's templates
    kept: list[bytes]  # the live answer's bytes, filled in by the dispatcher
    done: asyncio.Future[tuple[int, str | None]]  # (status, error class) when finished


@dataclass(slots=True)
class _Lane:
    running: int = 0
    waiting: deque[tuple[ShadowPlan, Snapshot, Live]] = field(default_factory=deque)


class Mirror:
    """Per process; lanes, tallies and shadow series outlive config swaps."""

    def __init__(
        self, transport: Transport, registry: Registry, samples: SampleSink | None = None
    ) -> None:
        self.transport = transport
        self.registry = registry
        self.samples = samples
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._evaluators: dict[int, tuple[ShadowPlan, tuple[Evaluator, ...]]] = {}
        self._pending: deque[tuple[ShadowPlan, DiffSample]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        # The upstreams an LLM judge may call: those of the newest snapshot mirrored from.
        self._targets: Mapping[str, UpstreamTarget] = {}

    # -- the request path ---------------------------------------------------------

    def offer(
        self,
        plans: tuple[ShadowPlan, ...],
        snap: Snapshot,
        x: Exchange,
        raw: bytes,
        view: RequestView,
        endpoint: str,
        variant: str,
    ) -> Live | None:
        """Mirror the request to each shadow that chooses it; the Live to settle, or None.
        ``view`` is the client's request, before the live variant changed its body."""
        live: Live | None = None
        for plan in plans:
            if self._closed or not chosen(plan, view, x.key, _draw):
                continue
            tally = self.registry.tally(plan.route, plan.name)
            tally.selected += 1
            lane = self._lanes.get((plan.route, plan.name))
            if lane is None:
                lane = self._lanes[(plan.route, plan.name)] = _Lane()
            if lane.running >= plan.max_concurrency and len(lane.waiting) >= plan.queue:
                tally.dropped += 1
                continue
            if live is None:
                live = Live(
                    x.request_id,
                    variant,
                    endpoint,
                    view.body.get("stream") is True,
                    raw,
                    view,
                    [],
                    asyncio.get_running_loop().create_future(),
                )
                x.kept = live.kept
            if lane.running < plan.max_concurrency:
                lane.running += 1
                self._spawn(self._lane_worker(lane, plan, snap, live))
            else:
                lane.waiting.append((plan, snap, live))
        return live

    def settle(self, live: Live, x: Exchange) -> None:
        """The live request is over: its answer is in ``live.kept``. A client that left
        mid-stream took a cut-short answer: no fair comparison, so none is made."""
        if not live.done.done():
            live.done.set_result((x.status, CLIENT_GONE if x.client_gone else x.error_class))

    # -- off the request path -----------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane_worker(self, lane: _Lane, plan: ShadowPlan, snap: Snapshot, live: Live) -> None:
        job: tuple[ShadowPlan, Snapshot, Live] | None = (plan, snap, live)
        try:
            while job is not None:
                answer, body = await self._call(*job)
                # The slot is free once the shadow answered; comparing waits on the
                # live request, which must not hold up the next shadow call.
                self._spawn(self._compare(job[0], job[2], answer, body))
                job = lane.waiting.popleft() if lane.waiting else None
        finally:
            lane.running -= 1

    async def _call(
        self, plan: ShadowPlan, snap: Snapshot, live: Live
    ) -> tuple[Answer, dict[str, Any]]:
        """One call to the shadow's upstream, measured into the shadow's series."""
        target = snap.upstreams[plan.upstream]
        self._targets = snap.upstreams
        x = Exchange(live.request_id, time.time(), perf_counter())
        x.route, x.variant, x.upstream = plan.route, plan.name, plan.upstream
        x.operation, x.stream, x.attempts = live.endpoint, live.stream, 1
        series = self.registry.shadow_series(plan.route, plan.name, x.start)
        series.in_flight += 1
        tally = self.registry.tally(plan.route, plan.name)
        tally.sent += 1
        body: dict[str, Any] = {}
        reply: Reply | None = None
        cancelled = False
        try:
            parsed = orjson.loads(live.raw)  # a fresh copy: the live side changed its own
            body = parsed if isinstance(parsed, dict) else {}
            view = RequestView(live.view.path, live.view.headers, body, live.view.query_string)
            apply_bundle(plan.bundle, plan.route, body, view)
            x.model = as_text(body.get("model"))
            if x.stream:
                stream_usage(body, live.endpoint, target.stream_usage)
            reply = await self._send(target, x, orjson.dumps(body))
        except GatewayError as exc:
            x.status, x.error_class = exc.status, error_class_of(exc)
        except asyncio.CancelledError:
            cancelled = True  # shutting down: neither a success nor the shadow's failure
            raise
        except Exception as exc:  # never let a shadow's surprise escape; count it
            log.warning("shadow %s/%s call failed: %r", plan.route, plan.name, exc)
            x.error_class = UPSTREAM_ERROR
        finally:
            x.end = perf_counter()
            series.in_flight -= 1
            if not cancelled:
                if x.error_class is not None:
                    tally.failed += 1
                x.cost_nano = snap.cost_nano(x.model, x.input_tokens, x.output_tokens)
                series.record(x)
        ok = x.error_class is None and reply is not None
        text = reply.text if ok and reply is not None else None
        return Answer(text, x.status, x.error_class), body

    async def _send(self, target: UpstreamTarget, x: Exchange, payload: bytes) -> Reply:
        x.sent = perf_counter()
        upstream = await self.transport.send(
            target, x.operation, payload, target.first_byte_timeout
        )
        x.status = upstream.status
        if x.stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
            chunks: list[bytes] = []
            try:
                # Consumed to the end: TTFT, tokens and cost count as for a live stream.
                async for chunk in upstream.chunks():
                    if x.first_chunk is None:
                        x.first_chunk = perf_counter()
                    chunks.append(chunk)
            finally:
                upstream.close()
            reply = read_stream(chunks)
        else:
            reply = read_body(await upstream.read())
        x.upstream_done = perf_counter()
        x.input_tokens, x.output_tokens = reply.input_tokens, reply.output_tokens
        cls = error_class_of_status(upstream.status)
        if cls is None and reply.error is not None:
            cls = UPSTREAM_ERROR
        x.error_class = cls
        if cls is None and reply.text is None and x.operation != "embeddings":
            raise UpstreamFailed(f"shadow upstream {target.name!r}: no answer text")
        return reply

    async def _compare(
        self, plan: ShadowPlan, live: Live, shadow: Answer, body: dict[str, Any]
    ) -> None:
        try:
            async with asyncio.timeout(LIVE_WAIT):
                status, error_class = await live.done
        except TimeoutError:
            return
        if error_class == CLIENT_GONE:
            self.registry.tally(plan.route, plan.name).abandoned += 1
            return
        if error_class is None and status < 400:
            raw = b"".join(live.kept)
            reply = read_stream(live.kept) if _is_sse(raw) else read_body(raw)
            text = reply.text
        else:
            text = None
        live_answer = Answer(text, status, error_class)
        scores = await evaluate_all(self._evaluators_of(plan), body, live_answer, shadow)
        pairs = [(s.name, s.value) for s in scores]
        on = [(n, v) for n, v in pairs if n == plan.samples.on]
        disagree = disagrees(
            on,
            below=plan.samples.below,
            live_ok=live_answer.text is not None,
            shadow_ok=shadow.text is not None,
        )
        tally = self.registry.tally(plan.route, plan.name)
        tally.record_pair(pairs, disagree)
        if disagree and plan.samples.keep > 0 and self.samples is not None:
            if len(self._pending) >= SAMPLE_QUEUE:
                tally.samples_dropped += 1
                return
            sample = DiffSample(
                ts=time.time(),
                route=plan.route,
                shadow=plan.name,
                variant=live.variant,
                request_id=live.request_id,
                scores=dict(pairs),
                live_status=status,
                shadow_status=shadow.status,
                live_error=error_class,
                shadow_error=shadow.error_class,
                request_body=live.raw,
                live_text=text,
                shadow_text=shadow.text,
                redact=plan.redact,
            )
            self._pending.append((plan, sample))
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.create_task(self._drain())

    def _evaluators_of(self, plan: ShadowPlan) -> tuple[Evaluator, ...]:
        cached = self._evaluators.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        if len(self._evaluators) > 64:  # plans of old config versions
            self._evaluators.clear()
        evaluators = build_evaluators(plan.evaluators, lambda spec: self._judge(spec.upstream))
        self._evaluators[id(plan)] = (plan, evaluators)
        return evaluators

    def _judge(self, upstream: str | None) -> Ask | None:
        if upstream is None:
            return None
        transport = self.transport

        async def ask(request: dict[str, Any]) -> str:
            # The snapshot of the moment: the judge upstream may have been reconfigured.
            target = self._targets.get(upstream)
            if target is None:
                raise RuntimeError(f"judge upstream {upstream!r} is not configured")
            reply = await transport.send(
                target, "chat/completions", orjson.dumps(request), target.first_byte_timeout
            )
            raw = await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"judge upstream answered HTTP {reply.status}")
            text = read_body(raw).text
            if text is None:
                raise RuntimeError("judge upstream gave no text")
            return text

        return ask

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        sink = self.samples
        while self._pending and sink is not None:
            batch = list(self._pending)
            self._pending.clear()
            for plan, group in _by_plan(batch):
                tally = self.registry.tally(plan.route, plan.name)
                try:
                    stored, refused = await loop.run_in_executor(
                        None, sink.add_many, group, plan.samples.keep
                    )
                except Exception as exc:
                    log.warning("could not store shadow samples: %r", exc)
                    tally.samples_dropped += len(group)
                    continue
                tally.samples_kept += stored
                tally.samples_dropped += refused

    async def close(self) -> None:
        """Stop mirroring; cancel shadow calls in flight (their answers no longer matter)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer


def _draw() -> int:
    return randrange(BUCKETS)


def _is_sse(raw: bytes) -> bool:
    return raw.lstrip()[:5] in (b"data:", b"event", b":")


def _by_plan(
    batch: list[tuple[ShadowPlan, DiffSample]],
) -> list[tuple[ShadowPlan, list[DiffSample]]]:
    groups: dict[int, tuple[ShadowPlan, list[DiffSample]]] = {}
    for plan, sample in batch:
        groups.setdefault(id(plan), (plan, []))[1].append(sample)
    return list(groups.values())
