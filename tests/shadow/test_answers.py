"""Reading upstream answers: known bodies and streams, cut streams, hostile bytes."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout.shadow.answers import ERROR_MESSAGE_MAX_CHARS, Reply, read_body, read_stream

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
WEATHER_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
    },
]
# Written out by hand: the canonical form is a contract between readers and evaluators.
WEATHER_TEXT = (
    '[{"arguments":"{\\"city\\": \\"Paris\\"}","name":"get_weather"},'
    '{"arguments":"{\\"tz\\": \\"CET\\"}","name":"get_time"}]'
)


def chat_body(message: dict[str, Any], **extra: Any) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
    return orjson.dumps({"object": "chat.completion", "choices": [choice], **extra})


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(delta: dict[str, Any], index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "finish_reason": None}],
        **extra,
    }


def chat_stream(*pieces: str, usage: dict[str, Any] | None = None) -> bytes:
    events = [event(chunk({"role": "assistant", "content": ""}))]
    events += [event(chunk({"content": piece})) for piece in pieces]
    events.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage is not None:
        events.append(event({"choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


# -- whole bodies --------------------------------------------------------------------


def test_chat_completion_body() -> None:
    assert read_body(chat_body({"content": "Paris."}, usage=USAGE)) == Reply("Paris.", 11, 7)


def test_text_completion_body() -> None:
    raw = orjson.dumps({"object": "text_completion", "choices": [{"index": 0, "text": "4"}]})
    assert read_body(raw) == Reply("4", None, None)


def test_content_parts_join_the_text_parts_only() -> None:
    parts = [
        {"type": "text", "text": "Hello, "},
        {"type": "image_url", "image_url": {"url": "http://x"}},
        {"type": "text", "text": "world"},
        {"type": "text"},
        "stray",
    ]
    assert read_body(chat_body({"content": parts})).text == "Hello, world"


@pytest.mark.parametrize("content", [None, ""])
def test_tool_calls_become_canonical_json(content: str | None) -> None:
    reply = read_body(chat_body({"content": content, "tool_calls": WEATHER_CALLS}))
    assert reply == Reply(WEATHER_TEXT, None, None)


def test_content_wins_over_tool_calls() -> None:
    reply = read_body(chat_body({"content": "Let me check.", "tool_calls": WEATHER_CALLS}))
    assert reply.text == "Let me check."


def test_tool_call_text_ignores_ids_and_key_order() -> None:
    reordered = [
        {"function": {"arguments": c["function"]["arguments"], "name": c["function"]["name"]}}
        for c in WEATHER_CALLS
    ]
    assert read_body(chat_body({"tool_calls": reordered})).text == WEATHER_TEXT


def test_message_without_content_is_empty_text() -> None:
    assert read_body(chat_body({"content": None})) == Reply("", None, None)


def test_embeddings_have_no_text_and_no_error() -> None:
    raw = orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
    )
    assert read_body(raw) == Reply(None, 3, None, None)


def test_error_body_message_is_clipped() -> None:
    message = "x" * 500
    raw = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    reply = read_body(raw)
    assert reply.text is None
    assert reply.error == "error body: " + "x" * ERROR_MESSAGE_MAX_CHARS


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("model overloaded", "error body: model overloaded"),
        ({"code": 500}, "error body"),
        ({"message": ""}, "error body"),
    ],
)
def test_error_body_shapes(error: object, expected: str) -> None:
    assert read_body(orjson.dumps({"error": error})) == Reply(None, None, None, expected)


def test_null_error_field_is_not_an_error() -> None:
    assert read_body(chat_body({"content": "ok"}, error=None)).text == "ok"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "not JSON"),
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"choices": [', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"{}", "no choices"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [1]}', "no message or text in choice"),
        (b'{"choices": [{"finish_reason": "stop"}]}', "no message or text in choice"),
    ],
)
def test_unusable_bodies(raw: bytes, error: str) -> None:
    reply = read_body(raw)
    assert reply.text is None
    assert reply.error == error


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": True, "completion_tokens": -1},
        {"prompt_tokens": "11", "completion_tokens": 7.0},
        [11, 7],
    ],
)
def test_malformed_usage_is_ignored(usage: object) -> None:
    assert read_body(chat_body({"content": "hi"}, usage=usage)) == Reply("hi", None, None)


# -- streams -------------------------------------------------------------------------


def test_chat_stream_with_usage_chunk() -> None:
    raw = chat_stream("The capital ", "is ", "Paris.", usage=USAGE)
    assert read_stream([raw]) == Reply("The capital is Paris.", 11, 7)


def test_stream_without_usage_counts_content_events() -> None:
    # The opening role delta carries no content and is not counted.
    raw = chat_stream("a", "b", "c")
    assert read_stream([raw]) == Reply("abc", None, 3)


def test_usage_null_on_every_chunk_then_final_usage() -> None:
    raw = b"".join(
        [
            event(chunk({"content": "hi"}, usage=None)),
            event({"choices": [], "usage": USAGE}),
            b"data: [DONE]\n\n",
        ]
    )
    assert read_stream([raw]) == Reply("hi", 11, 7)


def test_completions_stream() -> None:
    raw = b"".join(
        [
            event({"object": "text_completion", "choices": [{"index": 0, "text": "1, 2"}]}),
            event({"object": "text_completion", "choices": [{"index": 0, "text": ", 3"}]}),
            b"data: [DONE]\n\n",
        ]
    )
    assert read_stream([raw]) == Reply("1, 2, 3", None, 2)


def test_only_choice_index_zero_is_read() -> None:
    raw = b"".join(
        [
            event(chunk({"content": "one"}, index=0)),
            event(chunk({"content": "other"}, index=1)),
            event(chunk({"content": " two"}, index=0)),
            b"data: [DONE]\n\n",
        ]
    )
    assert read_stream([raw]) == Reply("one two", None, 2)


def streamed_tool_calls() -> bytes:
    def call_delta(index: int, **function: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, "function": function}]}

    return b"".join(
        [
            event(chunk({"role": "assistant", "content": None})),
            event(chunk(call_delta(0, name="get_weather", arguments=""))),
            event(chunk(call_delta(1, name="get_time", arguments='{"tz"'))),
            event(chunk(call_delta(0, arguments='{"city": '))),
            event(chunk(call_delta(0, arguments='"Paris"}'))),
            event(chunk(call_delta(1, arguments=': "CET"}'))),
            event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            b"data: [DONE]\n\n",
        ]
    )


def test_streamed_tool_calls_read_as_the_whole_body_does() -> None:
    reply = read_stream([streamed_tool_calls()])
    assert reply == Reply(WEATHER_TEXT, None, 5)
    assert reply.text == read_body(chat_body({"content": None, "tool_calls": WEATHER_CALLS})).text


def test_streamed_tool_calls_are_ordered_by_index_not_arrival() -> None:
    deltas = [
        {"index": 1, "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
        {"index": 0, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    ]
    raw = b"".join(event(chunk({"tool_calls": [d]})) for d in deltas)
    assert read_stream([raw]).text == WEATHER_TEXT


@pytest.mark.parametrize("before", [b"", event(chunk({"content": "partial"}))])
def test_error_event_in_stream(before: bytes) -> None:
    raw = before + event({"error": {"message": "overloaded"}}) + b"data: [DONE]\n\n"
    reply = read_stream([raw])
    assert reply.text is None
    assert reply.error == "error event in stream"


def test_null_error_field_in_stream_is_not_an_error() -> None:
    assert read_stream([event(chunk({"content": "ok"}, error=None))]) == Reply("ok", None, 1)


def test_done_ends_the_stream() -> None:
    raw = chat_stream("kept") + event(chunk({"content": " ignored"}))
    assert read_stream([raw]).text == "kept"


def test_crlf_separators() -> None:
    raw = chat_stream("a", "é", "c", usage=USAGE)
    assert read_stream([raw.replace(b"\n", b"\r\n")]) == Reply("aéc", 11, 7)


def test_malformed_events_are_skipped() -> None:
    raw = b"".join(
        [
            event(chunk({"content": "a"})),
            b'data: {"choices": [\n\n',
            b"data: 42\n\n",
            b"data: \xff\xfe\n\n",
            event(chunk({"content": "b"})),
        ]
    )
    assert read_stream([raw]) == Reply("ab", None, 2)


def test_comments_event_names_and_multiline_data() -> None:
    first, second = orjson.dumps(chunk({"content": "x"})), orjson.dumps(chunk({"content": "y"}))
    cut = first.index(b'"choices"')
    raw = (
        b": keep-alive\n\n"
        b"event: message\ndata: " + first[:cut] + b"\ndata:" + first[cut:] + b"\n\n"
        b"id: 2\ndata:" + second + b"\n\n"
    )
    assert read_stream([raw]).text == "xy"


def test_last_event_without_separator_is_read() -> None:
    raw = event(chunk({"content": "a"})) + b"data: " + orjson.dumps(chunk({"content": "b"}))
    assert read_stream([raw]).text == "ab"


@pytest.mark.parametrize(
    "chunks",
    [[], [b""], [b"data: [DONE]\n\n"], [b": ping\n\n", b": ping\n\n"], [b"data: {oops\n\n"]],
)
def test_empty_stream(chunks: list[bytes]) -> None:
    assert read_stream(chunks) == Reply(None, None, None, "empty stream")


def test_stream_with_only_a_role_delta_is_empty_text() -> None:
    raw = event(chunk({"role": "assistant", "content": ""})) + b"data: [DONE]\n\n"
    assert read_stream([raw]) == Reply("", None, 0)


# -- properties ----------------------------------------------------------------------


def bounds(length: int, points: list[int]) -> list[tuple[int, int]]:
    cuts = [0, *sorted({p % (length + 1) for p in points}), length]
    return list(pairwise(cuts))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    return [data[a:b] for a, b in bounds(len(data), points)]


# Multi-byte characters on purpose: cuts must be able to fall inside one.
pieces_strategy = st.lists(st.text(alphabet='aé€😀\n"\\ ', min_size=1, max_size=8), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    pieces=pieces_strategy,
    points=st.lists(st.integers(min_value=0), max_size=12),
    crlf=st.booleans(),
    usage=st.booleans(),
)
def test_cutting_a_stream_anywhere_changes_nothing(
    pieces: list[str], points: list[int], crlf: bool, usage: bool
) -> None:
    raw = chat_stream(*pieces, usage=USAGE if usage else None)
    if crlf:
        raw = raw.replace(b"\n\n", b"\r\n\r\n")
    expected = Reply("".join(pieces), 11 if usage else None, 7 if usage else len(pieces))
    assert read_stream([raw]) == expected
    assert read_stream(cut(raw, points)) == expected
    assert read_stream(iter([bytes([b]) for b in raw])) == expected


@settings(max_examples=100, deadline=None)
@given(
    answer=st.one_of(
        st.text(max_size=30),
        st.lists(
            st.tuples(st.text(max_size=10), st.lists(st.text(max_size=6), max_size=4)),
            min_size=1,
            max_size=3,
        ),
    ),
    points=st.lists(st.integers(min_value=0), max_size=6),
)
def test_body_and_stream_of_one_answer_read_alike(
    answer: str | list[tuple[str, list[str]]], points: list[int]
) -> None:
    if isinstance(answer, str):
        body = chat_body({"content": answer})
        raw = chat_stream(*(answer[a:b] for a, b in bounds(len(answer), points)))
    else:
        calls = [{"function": {"name": n, "arguments": "".join(a)}} for n, a in answer]
        body = chat_body({"content": None, "tool_calls": calls})
        deltas = [
            {"index": i, "function": {"name": n, "arguments": ""}}
            for i, (n, _) in enumerate(answer)
        ]
        deltas += [
            {"index": i, "function": {"arguments": piece}}
            for i, (_, args) in enumerate(answer)
            for piece in args
        ]
        raw = b"".join(event(chunk({"tool_calls": [d]})) for d in deltas)
    assert read_stream(cut(raw, points)).text == read_body(body).text


KEYS = [
    "choices",
    "delta",
    "message",
    "content",
    "text",
    "type",
    "tool_calls",
    "index",
    "function",
    "name",
    "arguments",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "error",
    "object",
    "data",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["text", "list", "[DONE]"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=20,
)


def check_reply(reply: Reply) -> None:
    assert isinstance(reply, Reply)
    assert reply.text is None or isinstance(reply.text, str)
    assert reply.error is None or isinstance(reply.error, str)
    for tokens in (reply.input_tokens, reply.output_tokens):
        assert tokens is None or (isinstance(tokens, int) and tokens >= 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_no_bytes_make_the_readers_raise(raw: bytes) -> None:
    check_reply(read_body(raw))
    check_reply(read_stream([raw]))
    check_reply(read_stream([b"data: " + raw, b"\n\ndata:" + raw + b"\r\n\r\n"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=6))
def test_no_json_shape_makes_the_readers_raise(values: list[Any]) -> None:
    for value in values:
        check_reply(read_body(orjson.dumps(value)))
    check_reply(read_stream([b"".join(event(value) for value in values)]))
    wrapped = [
        shape
        for value in values
        for shape in (
            {"choices": [{"index": 0, "delta": value, "message": value}]},
            {"choices": [{"delta": {"content": value, "tool_calls": value}}]},
            {"choices": [{"message": {"content": value, "tool_calls": value}}]},
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": value}]}}]},
            {"choices": [{"message": {"tool_calls": [{"function": value}]}}]},
            {"choices": [], "usage": value},
        )
    ]
    check_reply(read_stream([b"".join(event(value) for value in wrapped)]))
    for value in wrapped:
        check_reply(read_body(orjson.dumps(value)))
