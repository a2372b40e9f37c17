"""How a simulated model behaves: latency, answer text and faults.

Pure data and sampling; the HTTP side lives in ``server``. Every random draw goes
through a caller-supplied ``random.Random`` so that a seed makes a run reproducible.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from turnout.exceptions import ConfigError, FieldError

DelayKind = Literal["fixed", "uniform", "normal", "lognormal"]

# Names of the two parameters of each kind, as written in a config mapping.
_DELAY_PARAMS: dict[str, tuple[str, str]] = {
    "fixed": ("ms", ""),
    "uniform": ("min", "max"),
    "normal": ("mean", "std"),
    "lognormal": ("median", "sigma"),
}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _reprefix(err: ConfigError, prefix: str) -> list[FieldError]:
    return [FieldError(_join(prefix, e.path), e.message) for e in err.errors]


def _is_number(value: object) -> bool:
    # bool is an int subclass; `error_rate: true` is a typo, not 1.0.
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Delay:
    """A latency distribution. Parameters are in milliseconds except ``sigma``.

    ``a``/``b`` mean: fixed ``ms``/-, uniform ``min``/``max``, normal ``mean``/``std``
    (negative draws clip to 0), lognormal ``median``/``sigma`` (of the underlying normal).
    Use the named constructors rather than the fields.
    """

    kind: DelayKind = "fixed"
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _DELAY_PARAMS:
            raise ConfigError.single("", f"unknown delay kind {self.kind!r}")
        first, second = _DELAY_PARAMS[self.kind]
        errors: list[FieldError] = []
        for name, value in ((first, self.a), (second, self.b)):
            if not math.isfinite(value) or value < 0:
                errors.append(FieldError(_join(self.kind, name), "must be a finite number >= 0"))
        if not errors and self.kind == "uniform" and self.a > self.b:
            errors.append(FieldError("uniform.max", "must be >= min"))
        if errors:
            raise ConfigError(errors)

    @classmethod
    def fixed(cls, ms: float) -> Delay:
        return cls("fixed", ms)

    @classmethod
    def uniform(cls, min_ms: float, max_ms: float) -> Delay:
        return cls("uniform", min_ms, max_ms)

    @classmethod
    def normal(cls, mean_ms: float, std_ms: float) -> Delay:
        return cls("normal", mean_ms, std_ms)

    @classmethod
    def lognormal(cls, median_ms: float, sigma: float) -> Delay:
        return cls("lognormal", median_ms, sigma)

    @property
    def is_zero(self) -> bool:
        """True when every sample is 0, so callers can skip sampling and sleeping."""
        if self.kind in ("uniform", "normal"):
            return self.a == 0 and self.b == 0
        return self.a == 0

    def sample(self, rng: random.Random) -> float:
        """One draw, in seconds."""
        if self.kind == "fixed":
            ms = self.a
        elif self.kind == "uniform":
            ms = rng.uniform(self.a, self.b)
        elif self.kind == "normal":
            ms = max(0.0, rng.gauss(self.a, self.b))
        elif self.a == 0:
            ms = 0.0
        else:
            ms = rng.lognormvariate(math.log(self.a), self.b)
        return ms / 1000.0

    @classmethod
    def from_value(cls, value: object, path: str = "") -> Delay:
        """Build from a number (fixed ms) or a one-key mapping such as ``{"fixed": 50}``,
        ``{"uniform": {"min": 10, "max": 50}}`` (or ``[10, 50]``),
        ``{"normal": {"mean": 100, "std": 20}}``, ``{"lognormal": {"median": 200, "sigma": 0.5}}``.
        """
        if _is_number(value):
            return cls._build("fixed", float(value), 0.0, path)  # type: ignore[arg-type]
        if not isinstance(value, Mapping) or len(value) != 1:
            raise ConfigError.single(
                path, "must be a number of ms or a mapping with one of " + _kinds_text()
            )
        ((kind, params),) = value.items()
        if kind not in _DELAY_PARAMS:
            raise ConfigError.single(
                _join(path, str(kind)), f"unknown delay kind; expected one of {_kinds_text()}"
            )
        first, second = _DELAY_PARAMS[kind]
        kpath = _join(path, kind)
        if kind == "fixed":
            if not _is_number(params):
                raise ConfigError.single(kpath, "must be a number of ms")
            return cls._build(kind, float(params), 0.0, path)
        if isinstance(params, list | tuple) and len(params) == 2:
            params = {first: params[0], second: params[1]}
        if not isinstance(params, Mapping):
            raise ConfigError.single(kpath, f"must be a mapping with {first!r} and {second!r}")
        errors = [
            FieldError(_join(kpath, str(k)), f"unknown field; expected {first!r} or {second!r}")
            for k in params
            if k not in (first, second)
        ]
        for name in (first, second):
            if name not in params:
                errors.append(FieldError(_join(kpath, name), "is required"))
            elif not _is_number(params[name]):
                errors.append(FieldError(_join(kpath, name), "must be a number"))
        if errors:
            raise ConfigError(errors)
        return cls._build(kind, float(params[first]), float(params[second]), path)

    @classmethod
    def _build(cls, kind: str, a: float, b: float, path: str) -> Delay:
        try:
            return cls(kind, a, b)  # type: ignore[arg-type]
        except ConfigError as err:
            raise ConfigError(_reprefix(err, path)) from None


def _kinds_text() -> str:
    return ", ".join(repr(k) for k in _DELAY_PARAMS)


NO_DELAY = Delay()


class Fault(enum.Enum):
    HANG = "hang"
    ERROR = "error"
    GARBAGE = "garbage"
    DIE_MID_STREAM = "die_mid_stream"


class Answer(NamedTuple):
    words: tuple[str, ...]
    finish_reason: Literal["stop", "length"]


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(model|last_user_message|system_prompt)\}")
_RATES = ("error_rate", "hang_rate", "die_mid_stream_rate", "garbage_rate")


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """Behaviour of one simulated model. The defaults answer instantly and never fail."""

    ttft: Delay = NO_DELAY
    """Delay before the first token; non-streaming responses also wait for generation."""
    tokens_per_second: float = 0.0
    """Generation speed; 0 or ``inf`` means instant."""
    output_tokens: int = 40
    """Answer length in words, capped by the request's ``max_tokens``."""
    answer: str = "This is a simulated answer from {model}."
    """Template; ``{model}``, ``{last_user_message}`` and ``{system_prompt}`` are filled in."""
    words_per_chunk: int = 2
    """Words per streamed content chunk (40 words / 2 = 20 chunks)."""
    error_rate: float = 0.0
    error_status: int = 500
    retry_after: float | None = None
    """Seconds sent as ``Retry-After`` (and ``retry-after-ms``) on simulated errors."""
    hang_rate: float = 0.0
    die_mid_stream_rate: float = 0.0
    garbage_rate: float = 0.0
    embedding_dimensions: int = 8

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        for name in _RATES:
            rate = getattr(self, name)
            if not (_is_number(rate) and 0.0 <= rate <= 1.0):
                errors.append(FieldError(name, "must be a probability between 0 and 1"))
        if not (_is_number(self.tokens_per_second) and self.tokens_per_second >= 0):
            errors.append(FieldError("tokens_per_second", "must be >= 0 (0 or inf = instant)"))
        for name in ("output_tokens", "embedding_dimensions", "words_per_chunk"):
            value = getattr(self, name)
            minimum = 0 if name == "output_tokens" else 1
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
                errors.append(FieldError(name, f"must be an integer >= {minimum}"))
        if not (isinstance(self.error_status, int) and 400 <= self.error_status <= 599):
            errors.append(FieldError("error_status", "must be an HTTP error status (400-599)"))
        if self.retry_after is not None and not (
            _is_number(self.retry_after) and 0 <= self.retry_after < math.inf
        ):
            errors.append(FieldError("retry_after", "must be a finite number of seconds >= 0"))
        if not isinstance(self.answer, str):
            errors.append(FieldError("answer", "must be a string"))
        if errors:
            raise ConfigError(errors)

    @property
    def answer_is_static(self) -> bool:
        """True when the answer depends only on the model name, so it can be cached."""
        return "{last_user_message}" not in self.answer and "{system_prompt}" not in self.answer

    @property
    def seconds_per_token(self) -> float:
        tps = self.tokens_per_second
        return 0.0 if tps == 0 or math.isinf(tps) else 1.0 / tps

    def render_answer(
        self,
        model: str,
        *,
        last_user_message: str = "",
        system_prompt: str = "",
        max_tokens: int | None = None,
    ) -> Answer:
        """The answer's words, repeated or cut to length, and why it ended."""
        values = {
            "model": model,
            "last_user_message": last_user_message,
            "system_prompt": system_prompt,
        }

        # A regex rather than str.format: unknown names, stray braces and attribute
        # access (`{model.__class__}`) in a user's template must not raise or leak.
        def fill(m: re.Match[str]) -> str:
            key = m.group(1)
            return m.group(0)[0] if key is None else values[key]

        source = _PLACEHOLDER.sub(fill, self.answer).split()
        length = self.output_tokens
        reason: Literal["stop", "length"] = "stop"
        if max_tokens is not None and max_tokens < length:
            length, reason = max(max_tokens, 0), "length"
        if not source:
            return Answer((), reason)
        words = tuple(source[i % len(source)] for i in range(length))
        return Answer(words, reason)

    def draw_fault(self, rng: random.Random, *, stream: bool) -> Fault | None:
        """Which fault, if any, hits this request.

        Each knob is drawn independently (zero rates draw nothing, keeping the fast
        path free of RNG calls); when several hit, the most disruptive one wins.
        """
        hang = self.hang_rate > 0 and rng.random() < self.hang_rate
        error = self.error_rate > 0 and rng.random() < self.error_rate
        garbage = self.garbage_rate > 0 and rng.random() < self.garbage_rate
        die = stream and self.die_mid_stream_rate > 0 and rng.random() < self.die_mid_stream_rate
        if hang:
            return Fault.HANG
        if error:
            return Fault.ERROR
        if garbage:
            return Fault.GARBAGE
        if die:
            return Fault.DIE_MID_STREAM
        return None


DEFAULT_PROFILE_NAME = "default"

_INT_FIELDS = frozenset(
    {"output_tokens", "error_status", "embedding_dimensions", "words_per_chunk"}
)
_FLOAT_FIELDS = frozenset({"tokens_per_second", "retry_after", *_RATES})
_PROFILE_FIELDS = ("ttft", "answer", *sorted(_INT_FIELDS), *sorted(_FLOAT_FIELDS))


def profile_from_mapping(data: object, path: str = "") -> ModelProfile:
    """One profile from a mapping of its fields; errors carry ``path``-prefixed field names."""
    if data is None:
        return ModelProfile()
    if not isinstance(data, Mapping):
        raise ConfigError.single(path, "must be a mapping of profile fields")
    errors: list[FieldError] = []
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        fpath = _join(path, str(key))
        if key == "ttft":
            try:
                kwargs[key] = Delay.from_value(value, fpath)
            except ConfigError as err:
                errors.extend(err.errors)
        elif key == "answer":
            if isinstance(value, str):
                kwargs[key] = value
            else:
                errors.append(FieldError(fpath, "must be a string"))
        elif key in _INT_FIELDS:
            if isinstance(value, int) and not isinstance(value, bool):
                kwargs[key] = value
            else:
                errors.append(FieldError(fpath, "must be an integer"))
        elif key in _FLOAT_FIELDS:
            if key == "retry_after" and value is None:
                kwargs[key] = None
            elif _is_number(value):
                kwargs[key] = float(value)
            elif key == "tokens_per_second" and str(value).lower() in ("inf", "infinity"):
                kwargs[key] = math.inf  # YAML only reads `.inf` as a number; `inf` is a string
            else:
                errors.append(FieldError(fpath, "must be a number"))
        else:
            known = ", ".join(_PROFILE_FIELDS)
            errors.append(FieldError(fpath, f"unknown field; known fields: {known}"))
    # Built even when some fields failed, so that range errors in the others show too.
    try:
        profile = ModelProfile(**kwargs)
    except ConfigError as err:
        errors.extend(_reprefix(err, path))
    if errors:
        raise ConfigError(errors)
    return profile


def profiles_from_mapping(data: Mapping[str, Any]) -> dict[str, ModelProfile]:
    """Profiles from a YAML-shaped mapping::

        models:
          gpt-sim-1: {ttft: {fixed: 80}, tokens_per_second: 50}
        default: {answer: "fallback"}     # optional: for models not listed

    The optional ``default`` lands under the key ``"default"``, which the server uses
    for any model not listed. Every problem is reported, each with its field path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError.single("", "must be a mapping with a 'models' key")
    errors: list[FieldError] = [
        FieldError(str(key), "unknown field; expected 'models' or 'default'")
        for key in data
        if key not in ("models", DEFAULT_PROFILE_NAME)
    ]
    models = data.get("models")
    if models is None:
        models = {}
    if not isinstance(models, Mapping):
        errors.append(FieldError("models", "must be a mapping of model name to profile"))
        models = {}
    result: dict[str, ModelProfile] = {}
    for name, spec in models.items():
        if not isinstance(name, str) or not name:
            errors.append(FieldError(f"models.{name}", "model name must be a non-empty string"))
            continue
        try:
            result[name] = profile_from_mapping(spec, f"models.{name}")
        except ConfigError as err:
            errors.extend(err.errors)
    if DEFAULT_PROFILE_NAME in data:
        if DEFAULT_PROFILE_NAME in models:
            errors.append(FieldError("default", "given both here and as models.default; keep one"))
        try:
            result[DEFAULT_PROFILE_NAME] = profile_from_mapping(
                data[DEFAULT_PROFILE_NAME], DEFAULT_PROFILE_NAME
            )
        except ConfigError as err:
            errors.extend(err.errors)
    if errors:
        raise ConfigError(errors)
    return result
