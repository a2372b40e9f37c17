"""Shadow evaluators: known pairs, failed sides, bounded work, the judge, plug-ins."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout.shadow.evaluators import (
    SIMILARITY_MAX_CHARS,
    SIMILARITY_MAX_TOKENS,
    Answer,
    Evaluator,
    Exact,
    JsonSchema,
    JsonValid,
    LengthRatio,
    PythonEvaluator,
    Score,
    Similarity,
    SyncEvaluator,
    evaluate_all,
    load_evaluator,
    similarity_tokens,
    strip_json_fence,
)
from turnout.shadow.judge_llm import (
    JUDGE_SYSTEM_PROMPT,
    LlmJudge,
    last_user_message,
    parse_judge_reply,
)

BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi?"}]}
FAILED = Answer(text=None, status=0, error_class="timeout")


def ok(text: str) -> Answer:
    return Answer(text=text, status=200, error_class=None)


def score(evaluator: SyncEvaluator, a: str, b: str) -> Score:
    return evaluator(BODY, ok(a), ok(b))


def value(evaluator: SyncEvaluator, a: str, b: str) -> float | None:
    return score(evaluator, a, b).value


# -- known pairs ---------------------------------------------------------------------


def test_identical_texts_score_one_everywhere() -> None:
    text = "The capital of France is Paris."
    assert value(Exact(), text, text) == 1.0
    assert value(Similarity(), text, text) == 1.0
    assert value(LengthRatio(), text, text) == 1.0


@pytest.mark.parametrize(
    ("live", "shadow"),
    [
        ("Hello, World!", "hello world"),
        ("  The answer is 42.\n", "the   ANSWER is 42"),
        ("a,b;c", "a b c"),
        ("\ufb01ne", "fine"),  # NFKC: the "fi" ligature
        ("\uff21\uff22\uff23", "abc"),  # NFKC: fullwidth letters
        ("snake_case", "snake case"),  # "_" is connector punctuation
    ],
)
def test_cosmetic_differences_are_not_exact_but_fully_similar(live: str, shadow: str) -> None:
    assert value(Exact(), live, shadow) == 0.0
    assert value(Similarity(), live, shadow) == 1.0


def test_exact_ignores_surrounding_whitespace_only() -> None:
    assert value(Exact(), "  yes\n", "yes") == 1.0
    assert value(Exact(), "yes", "Yes") == 0.0


def test_disjoint_texts_have_similarity_zero() -> None:
    assert value(Similarity(), "alpha beta gamma", "delta epsilon") == 0.0


def test_partial_overlap_is_shared_over_total_token_counts() -> None:
    # live {the:2, cat, sat, on, mat}, shadow {the:2, dog, sat, on, log}:
    # shared = the 2 + sat + on = 4; total = the 2 + cat sat on mat dog log = 8.
    s = score(Similarity(), "The cat sat on the mat.", "the dog sat on the log")
    assert s.value == 0.5
    assert s.detail == "4/8 tokens shared"
    assert value(Similarity(), "red green blue", "red, green") == pytest.approx(2 / 3)
    assert value(Similarity(), "no", "no no no") == pytest.approx(1 / 3)  # repeats count


def test_symbols_are_kept_as_meaning() -> None:
    assert similarity_tokens("2+2=4, right?") == ["2+2=4", "right"]
    assert value(Similarity(), "costs $5", "costs 5") == pytest.approx(1 / 3)


def test_empty_texts() -> None:
    assert value(Similarity(), "", "  ") == 1.0
    assert value(Similarity(), "", "word") == 0.0
    assert value(Similarity(), "...", "!") == 1.0  # nothing but punctuation on both sides


# -- JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shadow",
    [
        '{"a": 1}',
        '```json\n{"a": 1}\n```',
        '  ```JSON\n{"a": 1}\n```\n',
        "```\n[1, 2]\n```",
        '```json {"a": 1} ```',
        "42",
    ],
)
def test_json_valid_accepts_plain_and_fenced_json(shadow: str) -> None:
    s = score(JsonValid(), "live is prose, which does not matter", shadow)
    assert (s.value, s.detail) == (1.0, None)


@pytest.mark.parametrize(
    "shadow",
    ["{'a': 1}", 'Sure! {"a": 1}', '```python\n{"a": 1}\n```', "", '{"a": 1'],
)
def test_json_valid_rejects_non_json_with_the_parser_message(shadow: str) -> None:
    s = score(JsonValid(), "{}", shadow)
    assert s.value == 0.0
    assert s.detail is not None and s.detail.startswith("shadow is not JSON: ")
    assert len(s.detail) > len("shadow is not JSON: ")


def test_strip_json_fence_removes_one_surrounding_fence_only() -> None:
    assert strip_json_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_json_fence("text ```json\n{}\n```") == "text ```json\n{}\n```"
    assert strip_json_fence("no fence") == "no fence"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}


def test_json_schema_conforming_and_not() -> None:
    evaluator = JsonSchema(SCHEMA)
    assert value(evaluator, "", '```json\n{"name": "Ada", "age": 36}\n```') == 1.0
    bad = score(evaluator, "", '{"name": "Ada", "age": -1}')
    assert bad.value == 0.0
    assert bad.detail is not None and "age" in bad.detail and "minimum" in bad.detail
    missing = score(evaluator, "", '{"age": 3}')
    assert missing.value == 0.0 and missing.detail is not None and "(root)" in missing.detail
    not_json = score(evaluator, "", "name: Ada")
    assert not_json.value == 0.0
    assert not_json.detail is not None and not_json.detail.startswith("shadow is not JSON")


def test_json_schema_rejects_a_bad_schema() -> None:
    with pytest.raises(ValueError, match=r"invalid JSON Schema at properties/age/type"):
        JsonSchema({"type": "object", "properties": {"age": {"type": "integr"}}})


def test_json_schema_without_jsonschema_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="pip install jsonschema"):
        JsonSchema(SCHEMA)


# -- length ratio --------------------------------------------------------------------


def test_length_ratio_both_directions() -> None:
    longer = score(LengthRatio(), "a" * 10, "b" * 20)
    shorter = score(LengthRatio(), "a" * 10, "b" * 5)
    assert longer.value == shorter.value == 0.5
    assert longer.detail == "shadow/live length 2 (20/10 chars)"
    assert shorter.detail == "shadow/live length 0.5 (5/10 chars)"
    assert value(LengthRatio(), "  abcd \n", "wxyz") == 1.0  # stripped, like exact


def test_length_ratio_with_empty_sides() -> None:
    assert value(LengthRatio(), "", "") == 1.0
    assert value(LengthRatio(), " ", "x") == 0.0
    assert value(LengthRatio(), "x", "") == 0.0


# -- failed sides --------------------------------------------------------------------


@pytest.mark.parametrize(
    "evaluator", [Exact(), Similarity(), JsonValid(), JsonSchema(SCHEMA), LengthRatio()]
)
def test_a_failed_side_is_not_applicable(
    evaluator: SyncEvaluator,
) -> None:
    http_500 = Answer(text=None, status=500, error_class=None)
    no_response = Answer(text=None, status=0, error_class=None)
    assert evaluator(BODY, FAILED, ok("{}")) == Score(evaluator.name, None, "live failed (timeout)")
    assert evaluator(BODY, ok("{}"), http_500) == Score(
        evaluator.name, None, "shadow failed (HTTP 500)"
    )
    both = evaluator(BODY, no_response, FAILED)
    assert both.value is None
    assert both.detail == "live failed (no response); shadow failed (timeout)"


# -- bounded work --------------------------------------------------------------------


def test_huge_inputs_compare_a_bounded_number_of_tokens() -> None:
    megabyte = "word " * 200_000  # 1 MB
    assert len(megabyte) == 1_000_000
    assert len(similarity_tokens(megabyte)) == SIMILARITY_MAX_TOKENS
    # Past the cap nothing is looked at, so a difference there goes unseen.
    s = score(Similarity(), megabyte, megabyte + " different")
    assert s.value == 1.0
    assert s.detail == f"{SIMILARITY_MAX_TOKENS}/{SIMILARITY_MAX_TOKENS} tokens shared"


def test_one_huge_token_is_capped_in_characters() -> None:
    tokens = similarity_tokens("x" * 1_000_000)
    assert tokens == ["x" * SIMILARITY_MAX_CHARS]


# -- the LLM judge -------------------------------------------------------------------


def fake_ask(reply: str, seen: list[dict[str, Any]] | None = None) -> Any:
    async def ask(body: dict[str, Any]) -> str:
        if seen is not None:
            seen.append(body)
        return reply

    return ask


@pytest.mark.parametrize(
    ("reply", "expected", "detail"),
    [
        ('```json\n{"agree": true, "score": 0.9, "reason": "same"}\n```', 0.9, "same"),
        (
            'Here is my verdict: {"agree": false, "score": 0.2, "reason": "no"} Hope it helps.',
            0.2,
            "no",
        ),
        ('Verdict:\n```json\n{"agree": true, "reason": "ok"}\n```', 1.0, "ok"),
        ('{"agree": false}', 0.0, None),
        ('{"agree": "true", "score": "0.75"}', 0.75, None),
        ('{"score": 7}', 1.0, None),  # clamped
        ('{"score": -2, "agree": true}', 0.0, None),  # the score wins, clamped
        ('{"note": {"x": 1}} then {"score": 0.5}', 0.5, None),  # skips unrelated objects
    ],
)
async def test_llm_judge_parses_the_verdict(
    reply: str, expected: float, detail: str | None
) -> None:
    s = await LlmJudge(fake_ask(reply)).evaluate(BODY, ok("Paris"), ok("It is Paris."))
    assert s == Score("llm_judge", expected, detail)


@pytest.mark.parametrize(
    "reply", ["I think they agree.", "", '{"reason": "forgot the verdict"}', '{"score": "high"}']
)
async def test_llm_judge_unusable_reply_is_none(reply: str) -> None:
    s = await LlmJudge(fake_ask(reply)).evaluate(BODY, ok("a"), ok("b"))
    assert s.value is None
    assert s.detail is not None and "judge reply" in s.detail


async def test_llm_judge_request_carries_question_and_both_answers() -> None:
    seen: list[dict[str, Any]] = []
    judge = LlmJudge(fake_ask('{"score": 1}', seen), model="judge-1", max_chars=50)
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        ]
    }
    await judge.evaluate(body, ok("4"), ok("four" * 100))
    [request] = seen
    assert request["model"] == "judge-1"
    assert request["temperature"] == 0 and request["stream"] is False
    system, user = request["messages"]
    assert system == {"role": "system", "content": JUDGE_SYSTEM_PROMPT}
    assert "<question>\nWhat is 2+2?\n</question>" in user["content"]
    assert "<answer_a>\n4\n</answer_a>" in user["content"]
    assert "[... 350 more characters cut]" in user["content"]
    assert "first question" not in user["content"]


def test_last_user_message_for_completions_and_odd_bodies() -> None:
    assert last_user_message({"prompt": "Once upon"}) == "Once upon"
    assert last_user_message({"prompt": ["a", "b", [1, 2]]}) == "a\nb"
    assert last_user_message({"messages": [{"role": "system", "content": "x"}]}) == ""
    assert last_user_message({}) == ""


async def test_llm_judge_failed_side_and_failed_call() -> None:
    calls: list[dict[str, Any]] = []
    judge = LlmJudge(fake_ask("{}", calls))
    s = await judge.evaluate(BODY, ok("a"), FAILED)
    assert s == Score("llm_judge", None, "shadow failed (timeout)")
    assert calls == []  # no judge call for a pair that cannot be compared

    async def broken(body: dict[str, Any]) -> str:
        raise TimeoutError("judge too slow")

    s = await LlmJudge(broken).evaluate(BODY, ok("a"), ok("b"))
    assert s == Score("llm_judge", None, "judge call failed: TimeoutError: judge too slow")


def test_parse_judge_reply_direct() -> None:
    assert parse_judge_reply('{"agree": true, "reason": "' + "r" * 500 + '"}') == (1.0, "r" * 200)
    assert parse_judge_reply('{"score": NaN}')[0] is None


# -- plug-ins and load_evaluator -----------------------------------------------------

PLUGIN_SOURCE = """
import asyncio

def overlap(body, live, shadow):
    return len(set(live) & set(shadow)) / max(len(set(live) | set(shadow)), 1)

def same_first_word(body, live, shadow):
    return live.split()[:1] == shadow.split()[:1]

def abstain(body, live, shadow):
    return None

async def slow_exact(body, live, shadow):
    await asyncio.sleep(0)
    return 1 if live == shadow else 0

def broken(body, live, shadow):
    raise KeyError("oops")

def too_big(body, live, shadow):
    return 1.5

def wordy(body, live, shadow):
    return "0.5"

async def broken_async(body, live, shadow):
    raise RuntimeError("async oops")

class Holder:
    @staticmethod
    def model_name(body, live, shadow):
        return body["model"] == "m"

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh module on sys.path; its name, unique so tests never share a cached import."""
    name = f"shadow_plugin_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    (tmp_path / f"{name}_bad.py").write_text("raise ImportError('needs numpy')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("overlap", 0.6),  # characters {a, b, " ", x} vs {a, b, " ", y}: 3 of 5
        ("same_first_word", 1.0),
        ("abstain", None),
        ("slow_exact", 0.0),
        ("Holder.model_name", 1.0),
    ],
)
async def test_python_plugins_sync_and_async(plugin: str, function: str, expected: float) -> None:
    evaluator = load_evaluator({"type": "python", "function": f"{plugin}:{function}"})
    assert isinstance(evaluator, PythonEvaluator)
    s = await evaluator.evaluate(BODY, ok("ab x"), ok("ab y"))
    assert s == Score(function.rsplit(".", 1)[-1], expected)


@pytest.mark.parametrize(
    ("function", "detail"),
    [
        ("broken", "plug-in failed: KeyError: 'oops'"),
        ("broken_async", "plug-in failed: RuntimeError: async oops"),
        ("too_big", "plug-in failed: ValueError: plug-in returned 1.5, outside [0, 1]"),
        ("wordy", "plug-in failed: ValueError: plug-in returned str, not a number or bool"),
    ],
)
async def test_a_failing_plugin_scores_none(plugin: str, function: str, detail: str) -> None:
    spec = {"type": "python", "function": f"{plugin}:{function}", "name": "mine"}
    s = await load_evaluator(spec).evaluate(BODY, ok("a"), ok("b"))
    assert s == Score("mine", None, detail)


async def test_a_plugin_is_not_called_for_a_failed_side(plugin: str) -> None:
    evaluator = load_evaluator({"type": "python", "function": f"{plugin}:broken"})
    assert (await evaluator.evaluate(BODY, FAILED, ok("b"))).detail == "live failed (timeout)"


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_colon", "must be 'module:name'"),
        (":f", "must be 'module:name'"),
        ("mod:", "must be 'module:name'"),
        ("a:b:c", "must be 'module:name'"),
        (42, "must be 'module:name'"),
        ("turnout_no_such_module_xyz:f", "cannot import module 'turnout_no_such_module_xyz'"),
        ("{plugin}_bad:f", "ImportError: needs numpy"),
        ("{plugin}:missing", "has no 'missing'"),
        ("{plugin}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_bad_plugin_paths_fail_at_load(plugin: str, function: Any, message: str) -> None:
    if isinstance(function, str):
        function = function.format(plugin=plugin)
    with pytest.raises(ValueError, match="field 'function'") as info:
        load_evaluator({"type": "python", "function": function})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected_type", "name"),
    [
        ({"type": "exact"}, Exact, "exact"),
        ({"type": "similarity", "name": "sim"}, Similarity, "sim"),
        ({"type": "json_valid"}, JsonValid, "json_valid"),
        ({"type": "length_ratio"}, LengthRatio, "length_ratio"),
        ({"type": "json_schema", "schema": SCHEMA}, JsonSchema, "json_schema"),
    ],
)
def test_load_builtins(spec: Mapping[str, Any], expected_type: type, name: str) -> None:
    evaluator = load_evaluator(spec)
    assert type(evaluator) is expected_type
    assert evaluator.name == name
    assert isinstance(evaluator, Evaluator)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "bleu"}, "field 'type': unknown 'bleu'"),
        ({}, "field 'type': unknown None"),
        ({"type": "exact", "shema": {}}, r"unknown field\(s\) \['shema'\]"),
        ({"type": "json_schema"}, r"missing field\(s\) \['schema'\]"),
        ({"type": "json_schema", "schema": "x"}, "field 'schema' must be a mapping"),
        ({"type": "python"}, r"missing field\(s\) \['function'\]"),
        ({"type": "exact", "name": ""}, "field 'name' must be a non-empty string"),
        ({"type": "llm_judge"}, "llm_judge needs an upstream"),
        ({"type": "json_schema", "schema": {"type": 3}}, "invalid JSON Schema"),
    ],
)
def test_load_rejects_bad_specs(spec: Mapping[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_evaluator(spec)


async def test_load_llm_judge_with_ask() -> None:
    seen: list[dict[str, Any]] = []
    spec = {"type": "llm_judge", "model": "judge-1", "max_tokens": 64, "name": "judge"}
    judge = load_evaluator(spec, ask=fake_ask('{"score": 0.4}', seen))
    assert isinstance(judge, LlmJudge)
    assert await judge.evaluate(BODY, ok("a"), ok("b")) == Score("judge", 0.4)
    assert seen[0]["model"] == "judge-1" and seen[0]["max_tokens"] == 64
    with pytest.raises(ValueError, match="field 'max_tokens'"):
        load_evaluator({"type": "llm_judge", "max_tokens": "many"}, ask=fake_ask(""))


# -- evaluate_all --------------------------------------------------------------------


class Exploding:
    name = "exploding"

    async def evaluate(
        self, request_body: Mapping[str, Any], live: Answer, shadow: Answer
    ) -> Score:
        raise ZeroDivisionError("division by zero")


class Sloppy:
    name = "sloppy"

    async def evaluate(self, request_body: Mapping[str, Any], live: Answer, shadow: Answer) -> Any:
        return 0.5


async def test_evaluate_all_keeps_order_and_never_raises() -> None:
    evaluators: list[Evaluator] = [
        Exact(),
        Exploding(),
        Similarity(),
        Sloppy(),
        LlmJudge(fake_ask('{"agree": true}')),
    ]
    scores = await evaluate_all(evaluators, BODY, ok("Same."), ok("same"))
    assert scores == [
        Score("exact", 0.0),
        Score("exploding", None, "evaluator failed: ZeroDivisionError: division by zero"),
        Score("similarity", 1.0, "1/1 tokens shared"),
        Score("sloppy", None, "evaluator failed: returned float"),
        Score("llm_judge", 1.0),
    ]
    assert await evaluate_all([], BODY, ok("a"), ok("b")) == []


async def test_evaluate_all_with_a_failed_side() -> None:
    scores = await evaluate_all([Exact(), JsonValid()], BODY, ok("{}"), FAILED)
    assert [s.value for s in scores] == [None, None]


# -- properties ----------------------------------------------------------------------


@given(st.text(max_size=200), st.text(max_size=200))
def test_similarity_is_symmetric_and_bounded(a: str, b: str) -> None:
    ab, ba = value(Similarity(), a, b), value(Similarity(), b, a)
    assert ab == ba
    assert ab is not None and 0.0 <= ab <= 1.0


@given(
    st.text(max_size=200), st.sampled_from(["", " ", "\n", "\t  \n"]), st.sampled_from(["", " \n"])
)
def test_exact_implies_full_similarity(text: str, before: str, after: str) -> None:
    padded = before + text + after
    if value(Exact(), text, padded) == 1.0:
        assert value(Similarity(), text, padded) == 1.0


@given(st.text(max_size=300), st.text(max_size=300))
def test_length_ratio_is_bounded(a: str, b: str) -> None:
    s = value(LengthRatio(), a, b)
    assert s is not None and 0.0 <= s <= 1.0
    assert (s == 1.0) == (len(a.strip()) == len(b.strip()))
