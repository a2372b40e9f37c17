"""A tap on a server-sent-events stream: token usage and errors, bytes otherwise untouched.

turnout asks upstreams for usage in a final chunk (``stream_options.include_usage``)
so that streamed tokens and cost are exact. That chunk has ``"choices": []``, which
naive clients index into, so when the client did not ask for it, the tap removes it.
Whole events are passed on as soon as they are complete; the common chunk, one or
more whole events with no usage in them, is passed on without being split.
"""

from __future__ import annotations

import re

import orjson

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_ERROR = re.compile(rb'^data:\s*\{\s*"error"', re.MULTILINE)
_SEP = b"\n\n"
# A regex scan of every chunk cost a quarter of the gateway's CPU on streams
# (bench/stack); a substring search (a fast C scan) rules out nearly every chunk first.
_USAGE_KEY = b'"usage"'
_ERROR_KEY = b'"error"'


class StreamTap:
    __slots__ = ("_pending", "chunks", "errored", "input_tokens", "output_tokens", "strip_usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self._pending = b""
        self.chunks = 0  # events with data seen, the fallback count of output tokens
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.errored = False

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to pass on to the client for this chunk (possibly fewer)."""
        if not self._pending and chunk.endswith(_SEP):
            whole = chunk  # the common case: whole events, passed on as they came
        else:
            # Scanned once whole: a read may end in the middle of "data:" or "error".
            data = self._pending + chunk
            cut = data.rfind(_SEP)
            if cut < 0:
                self._pending = data
                return b""
            whole, self._pending = data[: cut + 2], data[cut + 2 :]
        self._scan(whole)
        at = whole.find(_USAGE_KEY)
        return whole if at < 0 else self._usage_taken(whole, at)

    def flush(self) -> bytes:
        """What is left when the upstream ends the stream without a final separator."""
        rest, self._pending = self._pending, b""
        self._scan(rest)
        return rest

    def _scan(self, events: bytes) -> None:
        self.chunks += events.count(b"data:")
        if _ERROR_KEY in events and _ERROR.search(events) is not None:
            self.errored = True

    def _usage_taken(self, whole: bytes, at: int) -> bytes:
        """``whole`` (complete events) with the usage of the events that mention it,
        from ``at`` on, recorded, and turnout's own usage event left out. Only those
        events are cut out and looked at; the rest passes on in slices."""
        out = []
        start = 0
        while at >= 0:
            begin = whole.rfind(_SEP, start, at)
            begin = start if begin < 0 else begin + 2
            end = whole.find(_SEP, at) + 2  # ``whole`` ends with a separator
            event = whole[begin:end]
            drop = _USAGE.search(event) is not None and self._take_usage(event)
            out.append(whole[start:begin] if drop else whole[start:end])
            start = end
            at = whole.find(_USAGE_KEY, start)
        out.append(whole[start:])
        return b"".join(out)

    def _take_usage(self, event: bytes) -> bool:
        """Record the usage in ``event``; True if the event is to be dropped."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            usage = obj.get("usage") if isinstance(obj, dict) else None
            if not isinstance(usage, dict):
                return False
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
            self.input_tokens = prompt if isinstance(prompt, int) else None
            self.output_tokens = completion if isinstance(completion, int) else None
            return self.strip_usage and obj.get("choices") == []
        return False
