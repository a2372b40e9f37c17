"""Evaluators: score a shadow answer against the live answer the user got (pure).

A mirrored pair is the live ``Answer`` and the shadow ``Answer`` to the same request.
An evaluator turns a pair into a ``Score`` in [0, 1] (1 = the shadow matches), or
``value=None`` when the comparison does not apply. Every built-in needs text on both
sides: when either call failed the score is None, so a rate such as "share of valid
JSON" is always taken over the same pairs, whichever evaluator computed it.

All evaluators share one async interface (``Evaluator.evaluate``) so the data plane
treats a string comparison and a model-graded judge (``judge_llm.LlmJudge``) alike;
the sync built-ins also expose a plain ``__call__``. ``evaluate_all`` runs a set of them
and never raises: a broken evaluator yields ``Score(name, None, "evaluator failed: ...")``.

``load_evaluator`` builds one from a config mapping, including user plug-ins
(``{"type": "python", "function": "pkg.mod:func"}``) called as
``func(request_body, live_text, shadow_text) -> float | bool | None``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import numbers
import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import orjson

__all__ = [
    "SIMILARITY_MAX_CHARS",
    "SIMILARITY_MAX_TOKENS",
    "Answer",
    "Evaluator",
    "Exact",
    "JsonSchema",
    "JsonValid",
    "LengthRatio",
    "PythonEvaluator",
    "Score",
    "Similarity",
    "SyncEvaluator",
    "evaluate_all",
    "load_evaluator",
    "not_applicable",
    "similarity_tokens",
    "strip_json_fence",
]

# Similarity compares at most this many tokens per side: a multi-megabyte answer then
# costs the same as a long one. Characters are capped first (generous for 2,000
# tokens) because normalisation walks every character it is given.
SIMILARITY_MAX_TOKENS = 2_000
SIMILARITY_MAX_CHARS = 64 * SIMILARITY_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class Answer:
    text: str | None  # assistant content (joined stream deltas); None when the call failed
    status: int  # upstream HTTP status, 0 when there was no response
    error_class: str | None  # turnout's error class when it failed (e.g. "timeout")
    body: bytes | None = None  # raw JSON body for non-streams, when kept


@dataclass(frozen=True, slots=True)
class Score:
    name: str  # evaluator name, e.g. "exact"
    value: float | None  # in [0, 1] for the built-ins; None = not applicable
    detail: str | None = None  # short human note


@runtime_checkable
class Evaluator(Protocol):
    """What the data plane calls. ``name`` is read-only so frozen classes fit too."""

    @property
    def name(self) -> str: ...

    async def evaluate(
        self, request_body: Mapping[str, Any], live: Answer, shadow: Answer
    ) -> Score: ...


def _failure(answer: Answer) -> str:
    if answer.error_class:
        return answer.error_class
    return f"HTTP {answer.status}" if answer.status else "no response"


def not_applicable(name: str, live: Answer, shadow: Answer) -> Score:
    """The None score for a pair where at least one side has no text."""
    sides = [
        f"{side} failed ({_failure(answer)})"
        for side, answer in (("live", live), ("shadow", shadow))
        if answer.text is None
    ]
    return Score(name, None, "; ".join(sides) or None)


class SyncEvaluator(ABC):
    """Base of the built-ins: a pure comparison of two texts, usable sync or async."""

    default_name: ClassVar[str]

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or self.default_name

    def __call__(self, request_body: Mapping[str, Any], live: Answer, shadow: Answer) -> Score:
        if live.text is None or shadow.text is None:
            return not_applicable(self.name, live, shadow)
        return self.compare(request_body, live.text, shadow.text)

    async def evaluate(
        self, request_body: Mapping[str, Any], live: Answer, shadow: Answer
    ) -> Score:
        return self(request_body, live, shadow)

    @abstractmethod
    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        """Score two texts (both present)."""


class Exact(SyncEvaluator):
    """1.0 when the texts are equal once surrounding whitespace is stripped, else 0.0."""

    default_name = "exact"

    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        return Score(self.name, 1.0 if live.strip() == shadow.strip() else 0.0)


_PUNCT_OR_SYMBOL = re.compile(r"[^\w\s]|_")


@functools.lru_cache(maxsize=4096)
def _punct_to_space(char: str) -> str:
    # Punctuation separates words ("a,b" == "a, b"); symbols such as "+" or "$" carry
    # meaning and stay.
    return " " if unicodedata.category(char).startswith("P") else char


def similarity_tokens(text: str) -> list[str]:
    """The tokens ``Similarity`` compares: NFKC, casefolded, punctuation as spaces,
    split on whitespace, at most ``SIMILARITY_MAX_TOKENS`` from the start of the text."""
    norm = unicodedata.normalize("NFKC", text[:SIMILARITY_MAX_CHARS]).casefold()
    norm = _PUNCT_OR_SYMBOL.sub(lambda m: _punct_to_space(m.group()), norm)
    return norm.split()[:SIMILARITY_MAX_TOKENS]


class Similarity(SyncEvaluator):
    """Weighted (multiset) Jaccard of normalised tokens: shared / total token counts.

    Why not ``difflib.SequenceMatcher``: its ratio depends on argument order (autojunk
    and tie-breaking), and it is quadratic in the worst case. The multiset Jaccard is
    symmetric by construction and linear; it ignores word order, which is fine for
    "does the shadow say the same things" (``exact`` catches any reordering). Repeats
    count, so "no" and "no no no" differ. Identical -> 1.0 (two empty texts too),
    no shared token -> 0.0. Only the first ``SIMILARITY_MAX_TOKENS`` tokens of each
    side are compared (see ``similarity_tokens``).
    """

    default_name = "similarity"

    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        a, b = Counter(similarity_tokens(live)), Counter(similarity_tokens(shadow))
        shared, total = (a & b).total(), (a | b).total()
        value = 1.0 if total == 0 else shared / total
        return Score(self.name, value, f"{shared}/{total} tokens shared")


_FENCE = re.compile(r"\A\s*```[ \t]*(?:json)?[ \t]*\r?\n?(.*?)\s*```\s*\Z", re.DOTALL | re.I)


def strip_json_fence(text: str) -> str:
    """The inside of one surrounding ```` ```json ... ``` ```` (or bare ```` ``` ````)
    fence, else the text unchanged: models often fence JSON they were asked for."""
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None) when the (unfenced) text is JSON, else (None, parser message)."""
    try:
        return orjson.loads(strip_json_fence(text)), None
    except orjson.JSONDecodeError as exc:
        return None, str(exc)


class JsonValid(SyncEvaluator):
    """1.0 when the shadow text parses as JSON (after ``strip_json_fence``), else 0.0.

    Only the shadow is judged: the live answer is what users already get."""

    default_name = "json_valid"

    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        _, error = _parse_json(shadow)
        if error is not None:
            return Score(self.name, 0.0, f"shadow is not JSON: {error}")
        return Score(self.name, 1.0)


class JsonSchema(SyncEvaluator):
    """1.0 when the shadow text is JSON that conforms to a JSON Schema (Draft 2020-12).

    Uses the ``jsonschema`` package, an optional dependency imported here rather than
    at module import. The schema is checked and its validator built once.
    """

    default_name = "json_schema"

    def __init__(self, schema: Mapping[str, Any], *, name: str | None = None) -> None:
        super().__init__(name=name)
        try:
            # Through importlib: jsonschema ships no type information.
            jsonschema = importlib.import_module("jsonschema")
        except ImportError as exc:
            raise RuntimeError(
                "the json_schema evaluator needs the jsonschema package: pip install jsonschema"
            ) from exc
        validator_class = jsonschema.Draft202012Validator
        try:
            validator_class.check_schema(dict(schema))
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise ValueError(f"invalid JSON Schema at {where}: {exc.message}") from None
        self._validator = validator_class(dict(schema))
        self._best_match: Callable[[Any], Any] = jsonschema.exceptions.best_match

    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        instance, error = _parse_json(shadow)
        if error is not None:
            return Score(self.name, 0.0, f"shadow is not JSON: {error}")
        best = self._best_match(self._validator.iter_errors(instance))
        if best is None:
            return Score(self.name, 1.0)
        where = "/".join(str(p) for p in best.path) or "(root)"
        return Score(self.name, 0.0, f"shadow does not conform at {where}: {best.message}")


class LengthRatio(SyncEvaluator):
    """min(r, 1/r) for r = shadow / live length in characters (stripped, as ``exact``).

    Folding the ratio keeps it in [0, 1] with 1.0 = same length, whichever side is
    longer: twice as long and half as long both score 0.5. The raw ratio is in
    ``detail``. An empty live text scores 1.0 when the shadow is empty too, else 0.0.
    """

    default_name = "length_ratio"

    def compare(self, request_body: Mapping[str, Any], live: str, shadow: str) -> Score:
        n_live, n_shadow = len(live.strip()), len(shadow.strip())
        counts = f"({n_shadow}/{n_live} chars)"
        if n_live == 0:
            return Score(self.name, 1.0 if n_shadow == 0 else 0.0, f"live is empty {counts}")
        ratio = n_shadow / n_live
        value = 0.0 if ratio == 0 else min(ratio, 1.0 / ratio)
        return Score(self.name, value, f"shadow/live length {ratio:.3g} {counts}")


PluginFunction = Callable[[Mapping[str, Any], str, str], Any]


def _coerce_plugin_result(result: object) -> float | None:
    if result is None:
        return None
    if isinstance(result, bool):
        return 1.0 if result else 0.0
    if not isinstance(result, numbers.Real):
        raise ValueError(f"plug-in returned {type(result).__name__}, not a number or bool")
    value = float(result)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"plug-in returned {value!r}, outside [0, 1]")
    return value


class PythonEvaluator:
    """A user function ``f(request_body, live_text, shadow_text) -> float | bool | None``.

    Sync or async. Like the built-ins it only runs when both sides have text. Its
    result becomes a score (bool -> 1.0/0.0, None -> not applicable); anything it
    raises, and any result that is not a number in [0, 1], becomes a None score with
    the reason in ``detail``, so a buggy plug-in never raises into the gateway. A sync
    function runs on the event loop: it must be quick (push heavy work to a thread).
    """

    def __init__(self, function: PluginFunction, *, name: str) -> None:
        self.name = name
        self._function = function
        self._is_async = inspect.iscoroutinefunction(function)

    async def evaluate(
        self, request_body: Mapping[str, Any], live: Answer, shadow: Answer
    ) -> Score:
        if live.text is None or shadow.text is None:
            return not_applicable(self.name, live, shadow)
        try:
            result = self._function(request_body, live.text, shadow.text)
            # Also awaits what a sync wrapper (partial, object with async __call__) returns.
            if self._is_async or inspect.isawaitable(result):
                result = await result
            return Score(self.name, _coerce_plugin_result(result))
        except Exception as exc:
            return Score(self.name, None, f"plug-in failed: {type(exc).__name__}: {exc}")


def _import_function(path: object) -> PluginFunction:
    module_name, _, attr_path = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not module_name or not attr_path or ":" in attr_path:
        raise ValueError(f"python evaluator: field 'function' must be 'module:name', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ValueError(
            f"python evaluator: field 'function': cannot import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ValueError(
                f"python evaluator: field 'function': {module_name!r} has no {attr_path!r}"
            ) from None
    if not callable(target):
        raise ValueError(f"python evaluator: field 'function': {path!r} is not callable")
    function: PluginFunction = target
    return function


_BUILTINS: dict[str, type[SyncEvaluator]] = {
    cls.default_name: cls for cls in (Exact, Similarity, JsonValid, LengthRatio)
}
_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # type -> (required, optional) fields
    **{kind: (set(), {"name"}) for kind in _BUILTINS},
    "json_schema": ({"schema"}, {"name"}),
    "python": ({"function"}, {"name"}),
    "llm_judge": (set(), {"name", "model", "max_tokens"}),
}


def load_evaluator(
    spec: Mapping[str, Any],
    *,
    ask: Callable[[dict[str, Any]], Awaitable[str]] | None = None,
) -> Evaluator:
    """Build an evaluator from config, e.g. ``{"type": "similarity"}``.

    Types: exact, similarity, json_valid, length_ratio, json_schema (``schema``),
    python (``function`` = "module:name"; ``name`` defaults to the function's name)
    and llm_judge (``model``, ``max_tokens``), which needs ``ask`` -- the caller's
    function that sends a chat request body to the judge upstream -- because this
    module knows no upstreams. Every type takes an optional ``name``. Unknown types or
    fields, missing fields and plug-ins that cannot be imported raise ValueError
    naming the field, at load time rather than on live traffic.
    """
    kind = spec.get("type")
    if kind not in _FIELDS:
        raise ValueError(f"evaluator field 'type': unknown {kind!r}; one of {sorted(_FIELDS)}")
    required, optional = _FIELDS[kind]
    unknown = set(spec) - required - optional - {"type"}
    if unknown:
        raise ValueError(f"evaluator {kind!r}: unknown field(s) {sorted(unknown)}")
    missing = required - set(spec)
    if missing:
        raise ValueError(f"evaluator {kind!r}: missing field(s) {sorted(missing)}")
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"evaluator {kind!r}: field 'name' must be a non-empty string")

    if kind in _BUILTINS:
        return _BUILTINS[kind](name=name)
    if kind == "json_schema":
        if not isinstance(spec["schema"], Mapping):
            raise ValueError("evaluator 'json_schema': field 'schema' must be a mapping")
        return JsonSchema(spec["schema"], name=name)
    if kind == "python":
        function = _import_function(spec["function"])
        return PythonEvaluator(function, name=name or str(getattr(function, "__name__", kind)))
    if ask is None:
        raise ValueError(
            "llm_judge needs an upstream; build it with LlmJudge(ask=...) "
            "or pass ask= to load_evaluator"
        )
    # Imported here: judge_llm imports this module for Answer and Score.
    from turnout.shadow.judge_llm import LlmJudge  # noqa: PLC0415

    options = {k: spec[k] for k in ("model", "max_tokens") if k in spec}
    return LlmJudge(ask, name=name or LlmJudge.default_name, **options)


async def evaluate_all(
    evaluators: Iterable[Evaluator],
    request_body: Mapping[str, Any],
    live: Answer,
    shadow: Answer,
) -> list[Score]:
    """Every evaluator's score for one pair, in order; concurrently, so a slow judge
    does not hold up the rest. Never raises (except cancellation): an evaluator that
    fails, or returns something other than a Score, gets a None score saying why."""

    async def one(evaluator: Evaluator) -> Score:
        try:
            name = str(evaluator.name)
        except Exception:
            name = type(evaluator).__name__
        try:
            score = await evaluator.evaluate(request_body, live, shadow)
        except Exception as exc:
            return Score(name, None, f"evaluator failed: {type(exc).__name__}: {exc}")
        if not isinstance(score, Score):
            return Score(name, None, f"evaluator failed: returned {type(score).__name__}")
        return score

    return list(await asyncio.gather(*(one(e) for e in evaluators)))
