"""A tap on a server-sent-events stream: token usage and errors, bytes otherwise untouched.

turnout asks upstreams for usage in a final chunk (``stream_options.include_usage``)
so that streamed tokens and cost are exact. That chunk has ``"choices": []``, which
naive clients index into, so when the client did not ask for it, the tap removes it.
Whole events are passed on as soon as they are complete; the common chunk, one or
more whole events with no usage in them, is passed on without being split.

What the tap reads is where the protocol puts it: at the end. Usage comes in the
last data event before ``[DONE]`` (OpenAI), or on every event, cumulative (vLLM's
continuous usage), so the last one is the total; a failed stream ends with an error
event. So of each piece the upstream sends, only its last data event is looked at,
a few hundred bytes from the end, whatever the size of the piece: three scans of a
whole 4 KB piece were ~8% of the gateway's CPU on a stream (bench/stack). The
events are counted, a full scan, only when no usage was asked for: the count is
the fallback estimate of output tokens.
"""

from __future__ import annotations

import re

import orjson

from turnout.routing.transform import Usage

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_ERROR = re.compile(rb'^data:\s*\{\s*"error"', re.MULTILINE)
_DONE = re.compile(rb"data:\s*\[DONE\]\s*$")
_SEP = b"\n\n"
# Substring tests (a C scan) rule out nearly every event before a regex runs.
_USAGE_KEY = b'"usage"'
_ERROR_KEY = b'"error"'


class StreamTap:
    """Fed the stream piece by piece (``feed``, then ``flush``); reads usage and errors.

    ``errored`` says whether the last data event so far is an error event;
    ``chunks`` counts the data events when no usage was asked for."""

    __slots__ = (
        "_pending",
        "chunks",
        "count_events",
        "errored",
        "input_tokens",
        "output_tokens",
        "strip_usage",
    )

    def __init__(self, usage: Usage) -> None:
        self.strip_usage = usage is Usage.BY_TURNOUT
        self.count_events = usage is Usage.NOT_ASKED
        self._pending = b""
        self.chunks = 0  # events with data seen, the fallback count of output tokens
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.errored = False

    @property
    def output_count(self) -> int | None:
        """Output tokens: the upstream's usage, else the events counted, if they were
        (a usage that was asked for and never came leaves the count unknown)."""
        if self.output_tokens is not None:
            return self.output_tokens
        return self.chunks if self.count_events else None

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to pass on to the client for this chunk (possibly fewer)."""
        if not self._pending and chunk.endswith(_SEP):
            whole = chunk  # the common case: whole events, passed on as they came
        else:
            # Looked at once whole: a read may end in the middle of an event.
            data = self._pending + chunk
            cut = data.rfind(_SEP)
            if cut < 0:
                self._pending = data
                return b""
            whole, self._pending = data[: cut + 2], data[cut + 2 :]
        if self.count_events:
            self.chunks += whole.count(b"data:")
        return self._last_event(whole)

    def flush(self) -> bytes:
        """What is left when the upstream ends the stream without a final separator."""
        rest, self._pending = self._pending, b""
        if rest:
            if self.count_events:
                self.chunks += rest.count(b"data:")
            if _is_data(rest):
                self.errored = _ERROR_KEY in rest and _ERROR.search(rest) is not None
        return rest

    def _last_event(self, whole: bytes) -> bytes:
        """``whole`` (complete events), less its last data event if that is turnout's
        own usage event; that event's usage recorded, and whether it is an error."""
        end = len(whole)
        while end > 0:
            cut = whole.rfind(_SEP, 0, end - 2) if end > 2 else -1
            begin = cut + 2 if cut >= 0 else 0
            event = whole[begin:end]
            if _is_data(event):
                break
            end = begin  # a comment, another field, or [DONE]: the one before it
        else:
            return whole  # no data event in this piece
        self.errored = _ERROR_KEY in event and _ERROR.search(event) is not None
        if _USAGE_KEY in event and _USAGE.search(event) is not None and self._take_usage(event):
            return whole[:begin] + whole[end:]
        return whole

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


def _is_data(event: bytes) -> bool:
    """Whether ``event`` has a data line, other than the stream's ``[DONE]``."""
    if event.startswith(b"data:"):
        # The regex only where "[DONE]" is at hand: it costs more than the rest here.
        return b"[DONE]" not in event[:24] or _DONE.match(event) is None
    return b"\ndata:" in event
