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
# (bench/stack); a substring test (memchr-fast) rules out nearly every chunk first.
def _has_usage(data: bytes) -> bool:
    return b'"usage"' in data and _USAGE.search(data) is not None


def _has_error(data: bytes) -> bool:
    return b'"error"' in data and _ERROR.search(data) is not None


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
        self.chunks += chunk.count(b"data:")
        if _has_error(chunk):
            self.errored = True
        if not self._pending and chunk.endswith(_SEP) and not _has_usage(chunk):
            return chunk
        data = self._pending + chunk
        cut = data.rfind(_SEP)
        if cut < 0:
            self._pending = data
            return b""
        whole, self._pending = data[: cut + 2], data[cut + 2 :]
        if not _has_usage(whole):
            return whole
        return b"".join(e for e in self._events(whole) if e)

    def flush(self) -> bytes:
        """What is left when the upstream ends the stream without a final separator."""
        rest, self._pending = self._pending, b""
        return rest

    def _events(self, whole: bytes) -> list[bytes]:
        out = []
        for event in whole.split(_SEP):
            if not event:
                continue
            if _has_usage(event) and self._take_usage(event):
                continue
            out.append(event + _SEP)
        return out

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
