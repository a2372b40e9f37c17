"""The stream tap: whatever pieces the stream arrives in, the client gets the events as
they came, less turnout's own usage event, and the tap reads usage, errors and counts."""

from __future__ import annotations

from itertools import pairwise

import orjson
from hypothesis import given
from hypothesis import strategies as st

from turnout.gateway.sse import StreamTap
from turnout.routing.transform import Usage


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def content(text: str, usage: object = ...) -> bytes:
    """A content event; with ``usage`` (OpenAI sends ``null`` on every event when
    usage is asked for, vLLM's continuous usage a running total)."""
    obj: dict[str, object] = {
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"content": text}}],
    }
    if usage is not ...:
        obj["usage"] = usage
    return event(obj)


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion}


USAGE_ONLY = event({"choices": [], "usage": usage(7, 5)})
MENTIONS_USAGE = content('the word "usage" in the text')  # escaped quotes: not a key
ERROR = event({"error": {"message": "boom"}})
SPACED_ERROR = b'data:  { "error": "boom"}\n\n'
DONE = b"data: [DONE]\n\n"
COMMENT = b": keep-alive\n\n"
NAMED = b"event: message\ndata: " + orjson.dumps({"choices": []}) + b"\n\n"

TEXTS = st.lists(st.one_of(st.text(max_size=12), st.just(None)), max_size=12)  # None: comment
CUTS = st.lists(st.integers(0, 10_000), max_size=8)


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def run(tap: StreamTap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(p) for p in pieces) + tap.flush()


def stream_of(texts: list[str | None], style: str) -> tuple[list[bytes], dict[str, int] | None]:
    """Events as an upstream sends them with usage in ``style`` (before [DONE]), and
    the usage the stream reports."""
    events: list[bytes] = []
    total = None
    for n, text in enumerate(texts, 1):
        if text is None:
            events.append(COMMENT)
        elif style == "continuous":
            total = usage(3, n)
            events.append(content(text, total))
        elif style == "final":
            events.append(MENTIONS_USAGE if text == "u" else content(text, None))
        else:
            events.append(content(text))
    if style == "final":
        events.append(USAGE_ONLY)
        total = usage(7, 5)
    return events, total


@given(TEXTS, st.sampled_from(["none", "final", "continuous"]), st.sampled_from(Usage), CUTS)
def test_the_client_gets_the_stream_less_turnouts_usage_event(
    texts: list[str | None], style: str, asked: Usage, cuts: list[int]
) -> None:
    events, total = stream_of(texts, style)
    stream = [*events, DONE, *([COMMENT] if len(texts) % 2 else [])]
    data = b"".join(stream)
    tap = StreamTap(asked)
    got = run(tap, pieces_of(data, cuts))
    dropped = asked is Usage.BY_TURNOUT
    assert got == b"".join(e for e in stream if not (dropped and e == USAGE_ONLY))
    assert not tap.errored
    counted = data.count(b"data:")
    assert tap.chunks == (counted if asked is Usage.NOT_ASKED else 0)
    if total is not None:
        assert (tap.input_tokens, tap.output_tokens) == (
            total["prompt_tokens"],
            total["completion_tokens"],
        )
        assert tap.output_count == total["completion_tokens"]
    else:
        assert tap.input_tokens is None and tap.output_tokens is None
        assert tap.output_count == (counted if asked is Usage.NOT_ASKED else None)


@given(TEXTS, st.sampled_from([ERROR, SPACED_ERROR]), st.booleans(), CUTS)
def test_a_stream_that_ends_with_an_error_event_is_errored(
    texts: list[str | None], error: bytes, done: bool, cuts: list[int]
) -> None:
    events, _ = stream_of(texts, "none")
    stream = [*events, error, *([DONE] if done else []), COMMENT]
    data = b"".join(stream)
    tap = StreamTap(Usage.NOT_ASKED)
    assert run(tap, pieces_of(data, cuts)) == data
    assert tap.errored
    assert tap.chunks == data.count(b"data:")


def test_an_error_event_the_stream_goes_on_from_does_not_fail_it() -> None:
    # What counts is how the stream ends: an error that more content follows did not.
    tap = StreamTap(Usage.NOT_ASKED)
    tap.feed(content("a") + ERROR)
    assert tap.errored
    tap.feed(content("b") + DONE)
    assert not tap.errored


def test_a_named_event_counts_as_data() -> None:
    tap = StreamTap(Usage.NOT_ASKED)
    assert tap.feed(ERROR + NAMED + COMMENT) == ERROR + NAMED + COMMENT
    assert not tap.errored  # the named event, not the error, is the last data event


def test_only_the_end_of_a_piece_is_read_for_usage() -> None:
    # Usage sits in the last data event (OpenAI) or in all of them (vLLM): a usage
    # event that content follows in one piece is not the stream's, and stays.
    tap = StreamTap(Usage.BY_TURNOUT)
    piece = USAGE_ONLY + content("late") + DONE
    assert tap.feed(piece) == piece
    assert tap.output_count is None


def test_whole_events_without_usage_pass_on_as_the_same_object() -> None:
    chunk = content("a") + content("b")
    assert StreamTap(Usage.BY_TURNOUT).feed(chunk) is chunk


def test_an_error_event_with_spaces_is_seen() -> None:
    tap = StreamTap(Usage.NOT_ASKED)
    assert tap.feed(content("a") + SPACED_ERROR) == content("a") + SPACED_ERROR
    assert tap.errored


def test_a_stream_cut_without_a_final_separator_is_flushed_as_it_came() -> None:
    tap = StreamTap(Usage.BY_TURNOUT)
    assert tap.feed(content("a") + b'data: {"partial') == content("a")
    assert tap.flush() == b'data: {"partial'
