"""Answers: what a mirrored comparison needs from an upstream's reply (pure).

The data plane keeps the live and the shadow answer as raw bytes, either one JSON
body or a whole server-sent-events stream, and reads them here into a ``Reply``: the
assistant's text plus token counts. Both readers accept the OpenAI shapes (chat
completions, text completions, embeddings, error bodies) and never raise: a reply
that cannot be compared becomes ``text=None`` with a short ``error``, so one
misbehaving upstream costs a comparison, never the gateway's event loop.

A tool-call answer has no text of its own; it becomes a canonical JSON string of
its calls' names and arguments (sorted keys), the same whether the calls came whole
or in streamed pieces, so evaluators compare tool calls like any other text.

Streams are read after they ended, off the request path but on the event loop, so
the work is kept linear: the chunks are joined once, split into events once, and
each event is parsed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ERROR_MESSAGE_MAX_CHARS", "Reply", "read_body", "read_stream"]

# An upstream's error message is kept for the operator, not for analysis: long ones
# (some echo the whole prompt) are clipped.
ERROR_MESSAGE_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Reply:
    text: str | None  # the assistant's answer; None when there is none to compare
    input_tokens: int | None  # usage.prompt_tokens when given
    # usage.completion_tokens when given; for a stream without usage, the number of
    # events that carried content, text or tool-call pieces (about one token each)
    output_tokens: int | None
    error: str | None = None  # why the answer is unusable or is an error


def _count(value: object) -> int | None:
    # bool is an int to Python, not a token count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(obj: dict[str, Any]) -> tuple[int | None, int | None] | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def _content_text(content: object) -> str:
    """A message's (or delta's) content as text: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _tool_calls_text(calls: Iterable[tuple[object, object]]) -> str:
    """The canonical text of (name, arguments) pairs, shared by bodies and streams."""
    listed = [{"name": name, "arguments": arguments} for name, arguments in calls]
    return orjson.dumps(listed, option=orjson.OPT_SORT_KEYS).decode()


def _error_message(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message:
        return "error body"
    return f"error body: {message[:ERROR_MESSAGE_MAX_CHARS]}"


def _choice_text(choice: dict[str, Any]) -> str | None:
    message = choice.get("message")
    if isinstance(message, dict):
        text = _content_text(message.get("content"))
        calls = message.get("tool_calls")
        if not text and isinstance(calls, list) and calls:
            functions = [call.get("function") if isinstance(call, dict) else None for call in calls]
            return _tool_calls_text(
                (fn.get("name"), fn.get("arguments")) if isinstance(fn, dict) else (None, None)
                for fn in functions
            )
        return text
    raw = choice.get("text")
    return raw if isinstance(raw, str) else None


def read_body(raw: bytes) -> Reply:
    """Read one whole JSON answer. Never raises."""
    try:
        obj = orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError, also for bytes that are not UTF-8
        return Reply(None, None, None, "not JSON")
    if not isinstance(obj, dict):
        return Reply(None, None, None, "not a JSON object")
    input_tokens, output_tokens = _usage(obj) or (None, None)
    # Some providers send "error": null on success.
    if obj.get("error") is not None:
        return Reply(None, input_tokens, output_tokens, _error_message(obj["error"]))
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        if obj.get("object") == "list" or isinstance(obj.get("data"), list):
            # Embeddings: a valid answer, but no text to compare.
            return Reply(None, input_tokens, output_tokens)
        return Reply(None, input_tokens, output_tokens, "no choices")
    choice = choices[0]
    text = _choice_text(choice) if isinstance(choice, dict) else None
    if text is None:
        return Reply(None, input_tokens, output_tokens, "no message or text in choice")
    return Reply(text, input_tokens, output_tokens)


def _event_data(event: bytes) -> bytes | None:
    """The data of one SSE event (its ``data:`` lines joined by newlines), or None."""
    if b"\n" not in event:  # the common case: one line
        return event[5:] if event.startswith(b"data:") else None
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    # The one optional space after "data:" is left in place: JSON ignores it.
    return b"\n".join(lines) if lines else None


def _first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return None
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", position)
        if index == 0 and not isinstance(index, bool):
            return choice
    return None


class _ToolCall:
    __slots__ = ("arguments", "name")

    def __init__(self) -> None:
        self.name: list[str] | None = None
        self.arguments: list[str] | None = None


def _add_tool_pieces(calls: dict[int, _ToolCall], deltas: list[Any]) -> None:
    for position, delta in enumerate(deltas):
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", position)
        if not isinstance(index, int) or isinstance(index, bool):
            index = position
        call = calls.setdefault(index, _ToolCall())
        function = delta.get("function")
        if not isinstance(function, dict):
            continue
        name, arguments = function.get("name"), function.get("arguments")
        # None until a piece arrives, so a call without a name reads as a body
        # without one ("name": null) rather than as an empty name.
        if isinstance(name, str):
            if call.name is None:
                call.name = []
            call.name.append(name)
        if isinstance(arguments, str):
            if call.arguments is None:
                call.arguments = []
            call.arguments.append(arguments)


def read_stream(chunks: Iterable[bytes]) -> Reply:
    """Read a whole SSE stream, given as byte chunks cut anywhere. Never raises.

    Joining first makes the result independent of where the chunks were cut, even
    inside an event or a UTF-8 character."""
    data = b"".join(chunks)
    if b"\r" in data:  # SSE lines may end in CRLF or a lone CR; JSON has neither raw
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    pieces: list[str] = []
    calls: dict[int, _ToolCall] = {}
    events = 0  # events whose data was a JSON object
    content_events = 0
    usage: tuple[int | None, int | None] | None = None
    errored = False
    for event in data.split(b"\n\n"):
        payload = _event_data(event)
        if payload is None:
            continue
        if payload.strip() == b"[DONE]":
            break
        try:
            obj = orjson.loads(payload)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        events += 1
        if obj.get("error") is not None:
            errored = True
            break
        usage = _usage(obj) or usage
        choice = _first_choice(obj)
        if choice is None:
            continue
        carried = False
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = _content_text(delta.get("content"))
            tool_deltas = delta.get("tool_calls")
            if isinstance(tool_deltas, list) and tool_deltas:
                _add_tool_pieces(calls, tool_deltas)
                carried = True
        else:
            raw = choice.get("text")
            text = raw if isinstance(raw, str) else ""
        if text:
            pieces.append(text)
            carried = True
        if carried:
            content_events += 1

    input_tokens, output_tokens = usage or (None, None)
    if output_tokens is None and events:
        output_tokens = content_events
    if errored:
        return Reply(None, input_tokens, output_tokens, "error event in stream")
    if not events:
        return Reply(None, None, None, "empty stream")
    text = "".join(pieces)
    if not text and calls:
        text = _tool_calls_text(
            (
                None if call.name is None else "".join(call.name),
                None if call.arguments is None else "".join(call.arguments),
            )
            for _, call in sorted(calls.items())
        )
    return Reply(text, input_tokens, output_tokens)
