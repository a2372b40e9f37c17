"""Loading configs: a full valid one, every kind of invalid one, and the JSON Schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from turnout.config import config_from_mapping, config_from_text, json_schema, load_config
from turnout.config.model import Config
from turnout.exceptions import ConfigError, FieldError

FULL_YAML = """
version: 1
gateway:
  host: 0.0.0.0
  port: 9090
  max_body_bytes: 1048576
upstreams:
  - name: openai
    base_url: https://api.openai.com/v1/
    api_key_env: OPENAI_API_KEY
    timeouts: {connect: 2, first_byte: 30, idle: 15, total: 120}
    labels: {provider: openai, region: us}
  - name: local-vllm
    base_url: http://10.0.0.5:8000/v1
routes:
  - name: enterprise
    match:
      all:
        - {attr: header:X-Tier, in: [gold, platinum]}
        - not: {attr: body:metadata.region, prefix: cn-}
        - any:
            - {attr: query:beta, equals: true}
            - {attr: cookie:beta, exists: true}
            - {attr: body:metadata.seats, gte: 100}
            - {attr: path, regex: "^/v1/chat"}
    sticky:
      key: header:x-user-id
      fallback: [cookie:session, body:user]
      on_missing: reject
    salt: "enterprise: 2024-06"
    allow_override: true
    variants:
      - name: control
        upstream: openai
        weight: 90
        model: gpt-4o
      - name: canary
        upstream: local-vllm
        weight: 10
        model: llama-3-70b
        params: {temperature: 0.2, max_tokens: 512, response_format: {type: json_object}}
        system_prompt:
          mode: prepend
          template: "Tenant {{header:x-tenant}} on {{route}}/{{variant}} ({{ model }})."
  - name: default
    variants:
      - {name: main, upstream: openai}
"""


def full() -> dict[str, Any]:
    return yaml.safe_load(FULL_YAML)


def refused(data: Any) -> tuple[FieldError, ...]:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    errors = info.value.errors
    assert errors
    for e in errors:
        assert isinstance(e.path, str)
        assert e.message
        assert str(e) in str(info.value)
    return errors


def assert_error(errors: tuple[FieldError, ...], path: str, *fragments: str) -> None:
    hits = [e for e in errors if e.path == path]
    assert hits, f"no error at {path!r}; got {[str(e) for e in errors]}"
    text = " ".join(e.message for e in hits)
    for fragment in fragments:
        assert fragment in text, (path, fragment, text)


def mutate(path: list[str | int], value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    data = full()
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


# --- the valid config ----------------------------------------------------------------------------


def test_full_config_loads() -> None:
    config = config_from_text(FULL_YAML)
    assert isinstance(config, Config)
    assert config.gateway.port == 9090
    assert config.gateway.host == "0.0.0.0"
    openai, local = config.upstreams
    assert openai.base_url == "https://api.openai.com/v1"  # trailing slash dropped
    assert openai.timeouts.connect == 2
    assert openai.labels == {"provider": "openai", "region": "us"}
    assert local.timeouts.total == 600  # default
    assert local.api_key_env is None and local.api_key_file is None
    enterprise, default = config.routes
    assert enterprise.salt == "enterprise: 2024-06"
    assert enterprise.allow_override is True
    assert enterprise.sticky.fallback == ["cookie:session", "body:user"]
    assert enterprise.sticky.on_missing == "reject"
    assert enterprise.match is not None and enterprise.match.all is not None
    assert enterprise.match.all[0].in_ == ["gold", "platinum"]
    assert enterprise.match.all[1].not_ is not None
    assert [v.weight for v in enterprise.variants] == [90, 10]
    canary = enterprise.variants[1]
    assert canary.params["response_format"] == {"type": "json_object"}
    assert canary.system_prompt is not None and canary.system_prompt.mode == "prepend"
    assert default.match is None
    assert default.salt is None
    assert default.sticky.key == "header:x-user-id"
    assert default.sticky.on_missing == "random"
    assert default.variants[0].weight is None


def test_minimal_config_and_defaults() -> None:
    config = config_from_mapping(
        {
            "upstreams": [{"name": "u", "base_url": "http://u"}],
            "routes": [{"name": "r", "variants": [{"name": "v", "upstream": "u"}]}],
        }
    )
    assert config.version == 1
    assert (config.gateway.host, config.gateway.port) == ("127.0.0.1", 8080)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(FULL_YAML, encoding="utf-8")
    assert load_config(path) == config_from_text(FULL_YAML)
    assert load_config(str(path)) == config_from_text(FULL_YAML)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    (error,) = info.value.errors
    assert error.path == ""
    assert "cannot read" in error.message and "nope.yaml" in error.message


@pytest.mark.parametrize("weights", [[50, 50], [33.33, 33.33, 33.34], [0, 100], [99.99, 0.01]])
def test_valid_weights(weights: list[float]) -> None:
    data = full()
    data["routes"][0]["variants"] = [
        {"name": f"v{i}", "upstream": "openai", "weight": w} for i, w in enumerate(weights)
    ]
    config_from_mapping(data)


# --- refused configs: one problem each -----------------------------------------------------------

U0 = ["upstreams", 0]
R0 = ["routes", 0]
V1 = ["routes", 0, "variants", 1]
M = ["routes", 0, "match"]

INVALID: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    # URLs
    ("ftp URL", mutate([*U0, "base_url"], "ftp://x"), "upstreams[0].base_url", ("http://",)),
    ("no scheme", mutate([*U0, "base_url"], "api.openai.com"), "upstreams[0].base_url", ("URL",)),
    ("no host", mutate([*U0, "base_url"], "https://"), "upstreams[0].base_url", ("URL",)),
    ("URL with space", mutate([*U0, "base_url"], "http:// x"), "upstreams[0].base_url", ("URL",)),
    # unknown keys (typos) at every level
    ("top typo", mutate(["rout"], []), "rout", ("Extra inputs",)),
    ("gateway typo", mutate(["gateway", "prot"], 1), "gateway.prot", ("Extra inputs",)),
    ("upstream typo", mutate([*U0, "api_key"], "sk"), "upstreams[0].api_key", ("Extra",)),
    (
        "timeouts typo",
        mutate([*U0, "timeouts", "conect"], 1),
        "upstreams[0].timeouts.conect",
        ("Extra",),
    ),
    ("route typo", mutate([*R0, "stiky"], {}), "routes[0].stiky", ("Extra",)),
    ("sticky typo", mutate([*R0, "sticky", "fallbacks"], []), "routes[0].sticky.fallbacks", ()),
    ("variant typo", mutate([*V1, "wieght"], 1), "routes[0].variants[1].wieght", ("Extra",)),
    (
        "prompt typo",
        mutate([*V1, "system_prompt", "mdoe"], "append"),
        "routes[0].variants[1].system_prompt.mdoe",
        ("Extra",),
    ),
    ("match typo", mutate([*M, "al"], []), "routes[0].match.al", ("Extra",)),
    (
        "nested match typo",
        mutate([*M, "all", 0, "equal"], "x"),
        "routes[0].match.all[0].equal",
        ("Extra",),
    ),
    # match shape
    (
        "two operators",
        mutate([*M], {"attr": "header:x", "equals": "a", "prefix": "b"}),
        "routes[0].match",
        ("exactly one operator", "equals", "prefix"),
    ),
    ("no operator", mutate([*M], {"attr": "header:x"}), "routes[0].match", ("one operator",)),
    ("empty match", mutate([*M], {}), "routes[0].match", ("exactly one of all / any / not",)),
    (
        "combinator and operator",
        mutate([*M], {"all": [], "attr": "path", "exists": True}),
        "routes[0].match",
        ("exactly one operator",),
    ),
    ("two combinators", mutate([*M], {"all": [], "any": []}), "routes[0].match", ("all",)),
    ("operator without attr", mutate([*M], {"equals": "x"}), "routes[0].match", ("attr",)),
    (
        "nested two operators",
        mutate([*M, "all", 1, "not"], {"attr": "path", "gt": 1, "lt": 2}),
        "routes[0].match.all[1].not",
        ("exactly one operator",),
    ),
    # attribute references
    (
        "unknown source",
        mutate([*M], {"attr": "headers:x", "exists": True}),
        "routes[0].match",
        ("not an attribute reference",),
    ),
    ("no source", mutate([*M], {"attr": "x-tier", "exists": True}), "routes[0].match", ("attr",)),
    (
        "empty name",
        mutate([*M], {"attr": "header:", "exists": True}),
        "routes[0].match",
        ("empty",),
    ),
    ("padded name", mutate([*M], {"attr": "header: x", "exists": True}), "routes[0].match", ()),
    ("empty body part", mutate([*M], {"attr": "body:a..b", "exists": True}), "routes[0].match", ()),
    ("path with name", mutate([*M], {"attr": "path:x", "exists": True}), "routes[0].match", ()),
    ("bad sticky key", mutate([*R0, "sticky", "key"], "user"), "routes[0].sticky.key", ("user",)),
    (
        "bad fallback",
        mutate([*R0, "sticky", "fallback"], ["cookie:s", "query"]),
        "routes[0].sticky.fallback",
        ("query",),
    ),
    (
        "bad on_missing",
        mutate([*R0, "sticky", "on_missing"], "drop"),
        "routes[0].sticky.on_missing",
        ("random", "reject"),
    ),
    # regex
    (
        "bad regex",
        mutate([*M], {"attr": "path", "regex": "(unclosed"}),
        "routes[0].match",
        ("does not compile", "(unclosed"),
    ),
    # templates
    (
        "bad placeholder",
        mutate([*V1, "system_prompt", "template"], "Hi {{tenant}}"),
        "routes[0].variants[1].system_prompt.template",
        ("{{tenant}}", "route", "variant", "model"),
    ),
    (
        "bad placeholder source",
        mutate([*V1, "system_prompt", "template"], "Hi {{header:}}"),
        "routes[0].variants[1].system_prompt.template",
        ("header:",),
    ),
    (
        "bad prompt mode",
        mutate([*V1, "system_prompt", "mode"], "insert"),
        "routes[0].variants[1].system_prompt.mode",
        (),
    ),
    (
        "prompt without template",
        mutate([*V1, "system_prompt"], {"mode": "append"}),
        "routes[0].variants[1].system_prompt.template",
        ("required",),
    ),
    # params
    *[
        (
            f"reserved param {p}",
            mutate([*V1, "params"], {p: "x", "temperature": 1}),
            "routes[0].variants[1].params",
            (p, "params"),
        )
        for p in ("model", "messages", "prompt", "input", "stream")
    ],
    # names
    (
        "duplicate upstream",
        mutate([*U0[:1], 1, "name"], "openai"),
        "upstreams[1].name",
        ("duplicate", "openai"),
    ),
    ("duplicate route", mutate(["routes", 1, "name"], "enterprise"), "routes[1].name", ("dup",)),
    (
        "duplicate variant",
        mutate([*V1, "name"], "control"),
        "routes[0].variants[1].name",
        ("duplicate variant", "control"),
    ),
    ("bad name", mutate([*V1, "name"], "has space"), "routes[0].variants[1].name", ("pattern",)),
    ("long name", mutate([*R0, "name"], "r" * 65), "routes[0].name", ()),
    (
        "unknown upstream",
        mutate([*V1, "upstream"], "anthropic"),
        "routes[0].variants[1].upstream",
        ("unknown upstream", "anthropic", "local-vllm", "openai"),
    ),
    # weights
    ("weights sum to 90", mutate([*V1, "weight"], 0), "routes[0].variants", ("add up to 90",)),
    (
        "weights sum to 100.01",
        mutate([*V1, "weight"], 10.01),
        "routes[0].variants",
        ("add up to 100.01",),
    ),
    (
        "weight 0.005",
        mutate([*V1, "weight"], 9.995),
        "routes[0].variants[1].weight",
        ("multiple of 0.01",),
    ),
    (
        "weight 0.001",
        mutate([*V1, "weight"], 10.001),
        "routes[0].variants[1].weight",
        ("multiple of 0.01",),
    ),
    (
        "missing weight",
        mutate([*V1, "weight"], delete=True),
        "routes[0].variants[1].weight",
        ("required when a route has more than one variant",),
    ),
    ("negative weight", mutate([*V1, "weight"], -10), "routes[0].variants[1].weight", ()),
    ("weight over 100", mutate([*V1, "weight"], 110), "routes[0].variants[1].weight", ()),
    ("weight text", mutate([*V1, "weight"], "ten"), "routes[0].variants[1].weight", ()),
    ("no variants", mutate([*R0, "variants"], []), "routes[0].variants", ()),
    # route order
    (
        "route after catch-all",
        mutate(["routes"], [*full()["routes"][::-1]]),
        "routes[1].match",
        ("unreachable", "default"),
    ),
    # salt
    ("NUL in salt", mutate([*R0, "salt"], "a\x00b"), "routes[0].salt", ("NUL",)),
    ("empty salt", mutate([*R0, "salt"], ""), "routes[0].salt", ()),
    # key sources
    (
        "api_key_env and api_key_file",
        mutate([*U0, "api_key_file"], "/run/secrets/key"),
        "upstreams[0]",
        ("not both",),
    ),
    # top-level fields
    ("no upstreams", mutate(["upstreams"], delete=True), "upstreams", ("required",)),
    ("empty upstreams", mutate(["upstreams"], []), "upstreams", ()),
    ("no routes", mutate(["routes"], delete=True), "routes", ("required",)),
    ("routes not a list", mutate(["routes"], {"name": "r"}), "routes", ()),
    ("version 2", mutate(["version"], 2), "version", ()),
    ("port out of range", mutate(["gateway", "port"], 70000), "gateway.port", ()),
    ("zero timeout", mutate([*U0, "timeouts", "idle"], 0), "upstreams[0].timeouts.idle", ()),
    ("labels not text", mutate([*U0, "labels"], {"a": [1]}), "upstreams[0].labels.a", ()),
]


@pytest.mark.parametrize(
    ("data", "path", "fragments"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_is_refused_with_path_and_reason(
    data: dict[str, Any], path: str, fragments: tuple[str, ...]
) -> None:
    assert_error(refused(data), path, *fragments)


@pytest.mark.parametrize("top", [[], ["a"], "text", 42, None, True])
def test_non_mapping_top_level(top: Any) -> None:
    (error,) = refused(top)
    assert error.path == ""
    assert "mapping" in error.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text", "42"])
def test_yaml_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(text)
    assert "mapping" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "upstreams: [",
        "a: b: c",
        "routes:\n  - name: r\n - name: s",
        "a: !!python/object/apply:os.system [echo]",
        "\x00",
        "key: 'unterminated",
    ],
)
def test_invalid_yaml(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(text, "my.yaml")
    (error,) = info.value.errors
    assert error.path == ""
    assert "my.yaml is not valid YAML" in error.message


def test_deeply_nested_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        config_from_text("a: " + "[" * 5000)


def test_regex_with_huge_repeat_count_is_a_config_error() -> None:
    errors = refused(mutate([*M], {"attr": "path", "regex": "a{4294967296}"}))
    assert_error(errors, "routes[0].match", "does not compile")


# --- every problem at once -----------------------------------------------------------------------


def test_all_field_problems_are_reported_together() -> None:
    data = full()
    data["upstreams"][0]["base_url"] = "ftp://x"
    data["upstreams"][1]["timeout"] = {}
    data["routes"][0]["match"]["all"][0] = {"attr": "header:x", "equals": 1, "in": [1]}
    data["routes"][0]["salt"] = "\x00"
    data["routes"][0]["variants"][1]["params"] = {"stream": True}
    data["routes"][1]["variants"][0]["system_prompt"] = {"template": "{{nope}}"}
    errors = refused(data)
    paths = {e.path for e in errors}
    assert {
        "upstreams[0].base_url",
        "upstreams[1].timeout",
        "routes[0].match.all[0]",
        "routes[0].salt",
        "routes[0].variants[1].params",
        "routes[1].variants[0].system_prompt.template",
    } <= paths


def test_all_cross_field_problems_are_reported_together() -> None:
    data = full()
    data["upstreams"].append(copy.deepcopy(data["upstreams"][1]))  # duplicate upstream
    route = data["routes"][0]
    route["variants"][0]["upstream"] = "nowhere"
    route["variants"][1]["name"] = "control"
    route["variants"][1]["weight"] = 10.001  # rounds to 10: no sum error on top
    data["routes"].append({"name": "default", "variants": [{"name": "a", "upstream": "u"}]})
    data["routes"].append(
        {
            "name": "late",
            "variants": [
                {"name": "a", "upstream": "openai", "weight": 50},
                {"name": "b", "upstream": "openai"},
            ],
        }
    )
    errors = refused(data)
    assert_error(errors, "upstreams[2].name", "duplicate")
    assert_error(errors, "routes[0].variants[0].upstream", "nowhere")
    assert_error(errors, "routes[0].variants[1].name", "duplicate")
    assert_error(errors, "routes[0].variants[1].weight", "multiple of 0.01")
    assert_error(errors, "routes[2].name", "duplicate route")
    assert_error(errors, "routes[2].match", "unreachable")
    assert_error(errors, "routes[2].variants[0].upstream", "unknown upstream 'u'")
    assert_error(errors, "routes[3].match", "unreachable")
    assert_error(errors, "routes[3].variants[1].weight", "required")
    assert len(errors) == 9, [str(e) for e in errors]


def test_config_error_message_lists_every_error() -> None:
    error = ConfigError([FieldError("a.b", "bad"), FieldError("", "worse")])
    assert str(error) == "invalid config (2 error(s)):\n  a.b: bad\n  worse"
    assert ConfigError.single("x", "y").errors == (FieldError("x", "y"),)


# --- JSON Schema ---------------------------------------------------------------------------------


def test_json_schema_structure() -> None:
    schema = json.loads(json_schema())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "turnout config"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"upstreams", "routes"}
    assert schema["properties"]["routes"]["items"] == {"$ref": "#/$defs/Route"}
    defs = schema["$defs"]
    for name in ("Route", "Variant", "Upstream", "Match", "Sticky", "SystemPrompt", "Timeouts"):
        assert name in defs
        assert defs[name]["additionalProperties"] is False
    # Aliases, not Python names.
    assert {"in", "not"} <= set(defs["Match"]["properties"])
    assert not {"in_", "not_"} & set(defs["Match"]["properties"])


def test_json_schema_accepts_valid_and_rejects_typos() -> None:
    import jsonschema  # noqa: PLC0415

    schema = json.loads(json_schema())
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator.validate(full())
    assert not list(validator.iter_errors(full()))
    typo = mutate(["routes", 0, "variants", 1, "wieght"], 10)
    assert list(validator.iter_errors(typo))
    missing = mutate(["routes"], delete=True)
    assert list(validator.iter_errors(missing))


@pytest.mark.parametrize("python_name", ["not_", "in_"])
def test_python_field_names_are_not_yaml_keys(python_name: str) -> None:
    match = (
        {"not_": {"attr": "header:a", "exists": True}}
        if python_name == "not_"
        else {
            "attr": "header:a",
            "in_": ["x"],
        }
    )
    doc = {
        "upstreams": [{"name": "u", "base_url": "http://u/v1"}],
        "routes": [{"name": "r", "match": match, "variants": [{"name": "v", "upstream": "u"}]}],
    }
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(doc)
    assert any(python_name in str(e) for e in caught.value.errors)


def test_yaml_on_off_yes_no_are_strings_not_booleans() -> None:
    # YAML 1.1 would read the key `on` as True and refuse the retry block.
    text = """
upstreams: [{name: a, base_url: "http://a"}]
routes:
  - name: r
    variants: [{name: v, upstream: a}]
    retry: {on: [timeout], max_retries: 1}
    shadows:
      - name: s
        upstream: a
        samples: {on: exact, keep: 5}
        params: {mode: yes}
"""
    config = config_from_text(text)
    route = config.routes[0]
    assert list(route.retry.on) == ["timeout"]
    assert route.shadows[0].samples.on == "exact"
    assert route.shadows[0].params == {"mode": "yes"}
    assert config_from_text(text.replace("mode: yes", "mode: true")).routes[0].shadows[
        0
    ].params == {"mode": True}
