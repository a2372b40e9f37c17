"""Shadow config: what is accepted, and every refusal names its field."""

from __future__ import annotations

from typing import Any

import pytest

from turnout.config import config_from_mapping
from turnout.exceptions import ConfigError


def cfg(*shadows: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "a", "base_url": "http://a"}, {"name": "b", "base_url": "http://b"}],
        "routes": [
            {
                "name": "r",
                "variants": [{"name": "live", "upstream": "a"}],
                "shadows": list(shadows),
            }
        ],
    }


def errors(*shadows: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        config_from_mapping(cfg(*shadows))
    return {e.path: e.message for e in refused.value.errors}


def test_defaults() -> None:
    (s,) = config_from_mapping(cfg({"name": "s", "upstream": "b"})).routes[0].shadows
    assert (s.percent, s.by, s.max_concurrency, s.queue) == (100.0, "key", 8, 100)
    assert [e.label for e in s.evaluators] == ["exact", "similarity", "json_valid", "length_ratio"]
    assert (s.samples.keep, s.samples.on, s.samples.below) == (100, "similarity", 0.5)


def test_names_and_upstreams_are_checked() -> None:
    found = errors(
        {"name": "live", "upstream": "b"},
        {"name": "s", "upstream": "nope"},
        {"name": "s", "upstream": "b"},
    )
    assert "already a variant or shadow" in found["routes[0].shadows[0].name"]
    assert "unknown upstream 'nope'" in found["routes[0].shadows[1].upstream"]
    assert "already a variant or shadow" in found["routes[0].shadows[2].name"]


@pytest.mark.parametrize(
    ("field", "value", "path", "reason"),
    [
        ("percent", 101, "percent", "less than or equal to 100"),
        ("by", "user", "by", "'key' or 'random'"),
        ("max_concurrency", 0, "max_concurrency", "greater than or equal to 1"),
        ("queue", -1, "queue", "greater than or equal to 0"),
        ("params", {"model": "x"}, "params", "cannot be set through params"),
        ("surprise", 1, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_field_refusals(field: str, value: Any, path: str, reason: str) -> None:
    found = errors({"name": "s", "upstream": "b", field: value})
    assert reason in found[f"routes[0].shadows[0].{path}"]


def test_evaluator_specs() -> None:
    judge_without_upstream = {"type": "llm_judge"}
    schema_without_schema = {"type": "json_schema"}
    found = errors(
        {
            "name": "s",
            "upstream": "b",
            "evaluators": [
                {"type": "similarity"},
                judge_without_upstream,
                schema_without_schema,
                {"type": "exact", "function": "m:f"},
            ],
        }
    )
    assert "needs upstream" in found["routes[0].shadows[0].evaluators[1]"]
    assert "needs schema" in found["routes[0].shadows[0].evaluators[2]"]
    assert "takes no function" in found["routes[0].shadows[0].evaluators[3]"]


def test_evaluator_names_unique_and_samples_on_one_of_them() -> None:
    twice = errors(
        {"name": "s", "upstream": "b", "evaluators": [{"type": "exact"}, {"type": "exact"}]}
    )
    assert "given twice" in twice["routes[0].shadows[0]"]
    missing = errors({"name": "s", "upstream": "b", "evaluators": [{"type": "exact"}]})
    assert "samples.on: 'similarity'" in missing["routes[0].shadows[0]"]
    # Keeping no samples needs no deciding evaluator.
    ok = cfg(
        {"name": "s", "upstream": "b", "evaluators": [{"type": "exact"}], "samples": {"keep": 0}}
    )
    assert config_from_mapping(ok).routes[0].shadows[0].samples.keep == 0


def test_judge_upstream_must_exist() -> None:
    evaluators = [{"type": "similarity"}, {"type": "llm_judge", "upstream": "ghost"}]
    found = errors({"name": "s", "upstream": "b", "evaluators": evaluators})
    assert "unknown upstream 'ghost'" in found["routes[0].shadows[0].evaluators[1].upstream"]
