"""The stream tap: whatever pieces the stream arrives in, the client gets the events as
they came, less turnout's own usage event, and the tap reads usage, errors and counts."""

from __future__ import annotations

from itertools import pairwise

import orjson
from hypothesis import given
from hypothesis import strategies as st

from turnout.gateway.sse import StreamTap


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def content(text: str) -> bytes:
    return event({"object": "chat.completion.chunk", "choices": [{"delta": {"content": text}}]})


USAGE_ONLY = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}})
# vLLM's continuous usage: usage on an event that also carries a delta; never dropped.
USAGE_WITH_DELTA = event(
    {
        "choices": [{"delta": {"content": "x"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
)
MENTIONS_USAGE = content('the word "usage" in the text')  # escaped quotes: not a key
ERROR = event({"error": {"message": "boom"}})
SPACED_ERROR = b'data:  { "error": "boom"}\n\n'
DONE = b"data: [DONE]\n\n"
COMMENT = b": keep-alive\n\n"

EVENTS = st.lists(
    st.one_of(
        st.text(max_size=12).map(content),
        st.sampled_from([USAGE_ONLY, USAGE_WITH_DELTA, MENTIONS_USAGE, COMMENT]),
    ),
    max_size=12,
)


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def run(tap: StreamTap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(p) for p in pieces) + tap.flush()


@given(EVENTS, st.booleans(), st.booleans(), st.lists(st.integers(0, 10_000), max_size=8))
def test_the_client_gets_the_stream_less_turnouts_usage_event(
    events: list[bytes], with_error: bool, strip: bool, cuts: list[int]
) -> None:
    stream = [*events, *([ERROR] if with_error else []), DONE]
    data = b"".join(stream)
    tap = StreamTap(strip_usage=strip)
    got = run(tap, pieces_of(data, cuts))
    expected = b"".join(e for e in stream if not (strip and e == USAGE_ONLY))
    assert got == expected
    assert tap.errored is with_error
    assert tap.chunks == data.count(b"data:")
    usages = [e for e in events if e in (USAGE_ONLY, USAGE_WITH_DELTA)]
    if usages:  # the last one counts
        last = orjson.loads(usages[-1][6:])["usage"]
        assert (tap.input_tokens, tap.output_tokens) == (
            last["prompt_tokens"],
            last["completion_tokens"],
        )
    else:
        assert tap.input_tokens is None and tap.output_tokens is None


def test_whole_events_without_usage_pass_on_as_the_same_object() -> None:
    chunk = content("a") + content("b")
    assert StreamTap(strip_usage=True).feed(chunk) is chunk


def test_an_error_event_with_spaces_is_seen() -> None:
    tap = StreamTap(strip_usage=False)
    assert tap.feed(content("a") + SPACED_ERROR) == content("a") + SPACED_ERROR
    assert tap.errored


def test_a_stream_cut_without_a_final_separator_is_flushed_as_it_came() -> None:
    tap = StreamTap(strip_usage=True)
    assert tap.feed(content("a") + b'data: {"partial') == content("a")
    assert tap.flush() == b'data: {"partial'
