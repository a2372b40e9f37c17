"""An aiohttp app that impersonates OpenAI-compatible upstreams, driven by ``ModelProfile``s.

It is the upstream in turnout's tests and throughput benchmarks, so the zero-delay
path avoids sleeps, RNG draws and per-chunk JSON serialisation wherever it can.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import random
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from turnout.simulator.payloads import (
    BadRequest,
    ReceivedRequest,
    embedding_of,
    error_response,
    max_tokens_of,
    parse_inputs,
    render_answer,
    simulated_error,
    static_answer,
    text_of,
)
from turnout.simulator.profiles import DEFAULT_PROFILE_NAME, Fault, ModelProfile

log = logging.getLogger(__name__)

RECEIVED_LIMIT = 1000
_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"
_OPEN = b',"logprobs":null,"finish_reason":null}]}\n\n'  # closes a chunk that is not the last
_GARBAGE = b"<html><body>502 Bad Gateway (simulated garbage)</body></html>\n{not json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class _Simulator:
    def __init__(
        self, profiles: Mapping[str, ModelProfile], default: ModelProfile, seed: int | None
    ) -> None:
        self.profiles = dict(profiles)
        self.default = default
        self.rng = random.Random(seed)
        self.received: deque[ReceivedRequest] = deque(maxlen=RECEIVED_LIMIT)
        self.inflight: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    async def _read(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body if isinstance(body, dict) else {})
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(ReceivedRequest(request.path, headers, body))

    def _profile(self, body: Mapping[str, Any]) -> tuple[str, ModelProfile]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a non-empty string", "model")
        return model, self.profiles.get(model, self.default)

    async def _before_answer(
        self, request: web.Request, profile: ModelProfile, *, stream: bool
    ) -> tuple[Fault | None, web.Response | None]:
        """Draw faults and wait out the TTFT; return a response if the fault replaces it."""
        fault = profile.draw_fault(self.rng, stream=stream)
        if fault is Fault.HANG:
            await _hang(request)
        if not profile.ttft.is_zero:
            seconds = profile.ttft.sample(self.rng)
            if seconds > 0:
                await asyncio.sleep(seconds)
        if fault is Fault.ERROR:
            return fault, simulated_error(profile)
        if fault is Fault.GARBAGE:
            return fault, web.Response(body=_GARBAGE, content_type=_JSON)
        return fault, None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a list of message objects", "messages")
        texts = [(m.get("role"), text_of(m.get("content"))) for m in messages]
        last_user = next((t for r, t in reversed(texts) if r == "user"), "")
        system = "\n".join(t for r, t in texts if r in ("system", "developer"))
        prompt_tokens = sum(len(t.split()) for _, t in texts)
        return await self._complete(request, body, [(last_user, system)], prompt_tokens, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        prompts = parse_inputs(body.get("prompt", ""), "prompt")
        prompt_tokens = sum(n for _, n, _ in prompts)
        return await self._complete(
            request, body, [(p, "") for p, _, _ in prompts], prompt_tokens, chat=False
        )

    async def _complete(
        self,
        request: web.Request,
        body: dict[str, Any],
        prompts: list[tuple[str, str]],
        prompt_tokens: int,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        """Shared by chat and legacy completions: one choice per (user text, system prompt)."""
        model, profile = self._profile(body)
        max_tokens = max_tokens_of(body)
        stream = body.get("stream") is True
        fault, replaced = await self._before_answer(request, profile, stream=stream)
        if replaced is not None:
            return replaced
        render = static_answer if profile.answer_is_static else render_answer
        if profile.answer_is_static:
            prompts = [("", "")] * len(prompts)  # so that the cache key ignores the prompt
        rendered = [render(profile, model, user, sys, max_tokens) for user, sys in prompts]
        completion_tokens = sum(r.n_words for r in rendered)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{next(self._ids):08x}"
        created = int(time.time())
        if not stream:
            seconds = profile.seconds_per_token * completion_tokens
            if seconds > 0:
                await asyncio.sleep(seconds)
            field = "message" if chat else "text"
            choices = [
                {
                    "index": i,
                    field: {"role": "assistant", "content": r.content} if chat else r.content,
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
                for i, r in enumerate(rendered)
            ]
            obj = "chat.completion" if chat else "text_completion"
            payload = {"id": cid, "object": obj, "created": created, "model": model}
            payload.update(choices=choices, usage=usage)
            return web.Response(body=orjson.dumps(payload), content_type=_JSON)

        obj = "chat.completion.chunk" if chat else "text_completion"
        # Every chunk shares its envelope, so it is encoded once and only the text varies.
        head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[{"index":' % (
            cid.encode(),
            obj.encode(),
            created,
            orjson.dumps(model),
        )
        content, empty = (
            (b'"delta":{"content":%s}', b'"delta":{}') if chat else (b'"text":%s', b'"text":""')
        )
        spt = profile.seconds_per_token
        events: list[tuple[float, bytes]] = []
        for index, r in enumerate(rendered):
            start = head + b"%d," % index
            if chat:
                events.append((0.0, start + b'"delta":{"role":"assistant","content":""}' + _OPEN))
            prev = 0  # a chunk leaves once its words are generated, so the gap before it
            for n, text in r.chunks:  # is the previous chunk's generation time
                events.append((spt * prev, start + content % text + _OPEN))
                prev = n
            finish = b',"logprobs":null,"finish_reason":"%s"}]}\n\n' % r.finish_reason.encode()
            events.append((0.0, start + empty + finish))
        ending = _DONE
        if _include_usage(body):
            usage_chunk = {"id": cid, "object": obj, "created": created, "model": model}
            usage_chunk.update(choices=[], usage=usage)
            ending = b"data: " + orjson.dumps(usage_chunk) + b"\n\n" + _DONE
        die = fault is Fault.DIE_MID_STREAM
        return await _stream(request, events, ending, paced=spt > 0, die=die)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        model, profile = self._profile(body)
        items = parse_inputs(body.get("input"), "input")
        dims = body.get("dimensions", profile.embedding_dimensions)
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            raise BadRequest("'dimensions' must be a positive integer", "dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        _, replaced = await self._before_answer(request, profile, stream=False)
        if replaced is not None:
            return replaced
        data = []
        for index, (_, _, key) in enumerate(items):
            vector: Any = embedding_of(key, dims)
            if encoding == "base64":  # what the openai client asks for: packed float32
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(n for _, n, _ in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": model, "usage": usage}
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, {})
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "turnout-simulator"}
            for name in self.profiles
            if name != DEFAULT_PROFILE_NAME
        ]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)

    async def list_received(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(list(self.received)), content_type=_JSON)

    async def clear_received(self, request: web.Request) -> web.StreamResponse:
        self.received.clear()
        return web.Response(status=204)


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _hang(request: web.Request) -> None:
    """Never answer; ends only by cancellation (client gone, or server shutdown).

    Also polls the transport, because a runner other than ours may not cancel
    handlers when their client disconnects; raising CancelledError then makes aiohttp
    drop the request silently instead of logging an error and answering 500.
    """
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise asyncio.CancelledError
        await asyncio.sleep(0.05)


async def _stream(
    request: web.Request,
    events: Sequence[tuple[float, bytes]],
    ending: bytes,
    *,
    paced: bool,
    die: bool,
) -> web.StreamResponse:
    """Send SSE ``events`` (each after its gap in seconds), then ``ending``.

    With ``die``, only the first half of the events goes out and the connection is
    dropped: no terminating chunk, no ``[DONE]``, as when an upstream crashes.
    """
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    if die:
        events = events[: max(1, len(events) // 2)]
    try:
        if paced:
            loop = asyncio.get_running_loop()
            # Deadlines from one start, so per-write overhead does not accumulate as drift.
            deadline = loop.time()
            for gap, data in events:
                deadline += gap
                if (wait := deadline - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await resp.write(data)
        else:
            payload = b"".join([data for _, data in events])
            if not die:  # the benchmark path: the whole stream in one write
                await resp.write_eof(payload + ending)
                return resp
            await resp.write(payload)
        if die:
            if request.transport is not None:
                # close(), not abort(): what was written must reach the client first.
                request.transport.close()
            return resp
        await resp.write_eof(ending)
    except ConnectionResetError:
        pass  # The client went away; nothing left to tell it.
    return resp


def _middleware(sim: _Simulator) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        sim.inflight.add(task)
        try:
            response: web.StreamResponse = await handler(request)
        except BadRequest as e:
            return error_response(
                400, e.message, "invalid_request_error", "invalid_request", e.param
            )
        finally:
            sim.inflight.discard(task)
        return response

    return middleware


async def _cancel_inflight(app: web.Application) -> None:
    # aiohttp would wait its shutdown timeout (twice) for hung or slow handlers
    # before dropping them; a simulator has nothing worth finishing gracefully.
    for task in list(app[_SIMULATOR].inflight):
        task.cancel()


_SIMULATOR = web.AppKey("turnout_simulator", _Simulator)


def build_app(
    profiles: Mapping[str, ModelProfile],
    *,
    default: ModelProfile | None = None,
    seed: int | None = None,
) -> web.Application:
    """The simulator as an aiohttp app.

    Models not in ``profiles`` use ``default``, else ``profiles["default"]``, else an
    instant ``ModelProfile()``. ``seed`` makes fault draws and delays reproducible.
    """
    if default is None:
        default = profiles.get(DEFAULT_PROFILE_NAME, ModelProfile())
    sim = _Simulator(profiles, default, seed)
    # Long-context benchmark prompts exceed aiohttp's 1 MiB default.
    app = web.Application(middlewares=[_middleware(sim)], client_max_size=64 * 1024 * 1024)
    app[_SIMULATOR] = sim
    app.on_shutdown.append(_cancel_inflight)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/v1/completions", sim.completions)
    app.router.add_post("/v1/embeddings", sim.embeddings)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_get("/_sim/received", sim.list_received)
    app.router.add_delete("/_sim/received", sim.clear_received)
    return app


def received_of(app: web.Application) -> deque[ReceivedRequest]:
    """The recorded requests of an app made by ``build_app``."""
    return app[_SIMULATOR].received


class RunningSimulator:
    """A simulator listening on a socket. ``base_url`` ends in ``/v1``, as clients expect."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
        self.app = runner.app
        self.received = received_of(runner.app)

    def set_profiles(
        self,
        profiles: Mapping[str, ModelProfile] | None = None,
        default: ModelProfile | None = None,
    ) -> None:
        """Change how the models behave from the next request on: start or end an
        outage (fault-injection tests, demos)."""
        sim: _Simulator = self.app[_SIMULATOR]
        if profiles is not None:
            sim.profiles = dict(profiles)
        if default is not None:
            sim.default = default

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_simulator(
    profiles: Mapping[str, ModelProfile] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    default: ModelProfile | None = None,
    seed: int | None = None,
) -> RunningSimulator:
    """Serve the simulator on ``host:port`` (0 = a free port) until ``close()``."""
    app = build_app(profiles or {}, default=default, seed=seed)
    # Handler cancellation ends hanging or sleeping handlers as soon as their client leaves.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(runner, host, bound_port)


async def run_simulator_forever(
    profiles: Mapping[str, ModelProfile],
    *,
    host: str,
    port: int,
    default: ModelProfile | None = None,
    seed: int | None = None,
) -> None:
    """Serve until cancelled, then shut down and return (so Ctrl-C exits cleanly)."""
    sim = await start_simulator(profiles, host=host, port=port, default=default, seed=seed)
    log.info("simulator listening on %s (models: %s)", sim.base_url, ", ".join(profiles) or "-")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    finally:
        await sim.close()
