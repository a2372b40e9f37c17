"""Property: whatever a config holds, loading it gives a Config or a ConfigError, never
another exception; and a config that loads compiles into a Router and a snapshot."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout.config import config_from_mapping, config_from_text
from turnout.exceptions import ConfigError
from turnout.routing import Router
from turnout.snapshot import build_snapshot

from .test_load import FULL_YAML

VALID: dict[str, Any] = yaml.safe_load(FULL_YAML)
ENV = {"OPENAI_API_KEY": "sk-test"}

FIELD_NAMES = [
    "version", "gateway", "host", "port", "max_body_bytes", "upstreams", "name", "base_url",
    "api_key_env", "api_key_file", "timeouts", "connect", "first_byte", "idle", "total",
    "labels", "routes", "match", "all", "any", "not", "attr", "equals", "in", "prefix",
    "regex", "exists", "gt", "gte", "lt", "lte", "sticky", "key", "fallback", "on_missing",
    "salt", "allow_override", "variants", "upstream", "weight", "model", "params",
    "system_prompt", "mode", "template",
]  # fmt: skip

INTERESTING_TEXT = [
    "", " ", "x", "openai", "local-vllm", "control", "default", "header:x-user-id", "path",
    "body:a.b", "body:a..b", "query:", "cookie:s", "http://h", "https://h/v1/", "ftp://h",
    "{{route}}", "{{header:x}}", "{{nope}}", "{{", "(", "[a-z]+", "\\", "\x00", "a\x00b",
    "random", "reject", "replace", "prepend", "append", "é", "日本語", "🙂", "x" * 300,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 50, 100, 101, 65535, 65536, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.01, 0.005, 33.33, 33.34, 99.99, 100.0, 1e-300, math.inf, math.nan]),
    st.sampled_from(INTERESTING_TEXT),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=5)),
    max_leaves=12,
)


def must_load_or_refuse(data: Any) -> None:
    try:
        config = config_from_mapping(data)
    except ConfigError as exc:
        assert exc.errors
        for e in exc.errors:
            assert isinstance(e.path, str)
            assert isinstance(e.message, str) and e.message
        return
    # A config that validates must compile.
    Router(config)
    try:
        build_snapshot(config, env=ENV)
    except ConfigError as exc:
        # Only secrets can fail at this stage.
        assert all(".api_key_" in e.path for e in exc.errors), exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_documents_load_or_raise_config_error(data: Any) -> None:
    must_load_or_refuse(data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["version", "gateway", "upstreams", "routes"]), values))
def test_random_top_level_mappings_load_or_raise_config_error(data: dict[str, Any]) -> None:
    must_load_or_refuse(data)


# --- mutations of the valid config ---------------------------------------------------------------


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict and list inside ``node`` (including the root)."""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict | list):
                out.extend(_containers(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, dict | list):
                out.extend(_containers(v, (*path, i)))
    return out


CONTAINERS = _containers(VALID)

mutation = st.tuples(
    st.sampled_from(CONTAINERS),
    st.sampled_from(["set", "delete", "add", "duplicate", "rename"]),
    st.integers(0, 50),  # which child
    values,
    keys,
)


def apply(data: dict[str, Any], m: tuple[Any, ...]) -> None:
    path, action, pick, value, new_key = m
    node: Any = data
    for part in path:
        node = node[part]
    children = list(node) if isinstance(node, dict) else list(range(len(node)))
    child = children[pick % len(children)] if children else None
    if isinstance(node, dict):
        if action == "add" or child is None:
            node[new_key] = value
        elif action == "set":
            node[child] = value
        elif action == "delete":
            del node[child]
        elif action == "duplicate":
            node[new_key] = copy.deepcopy(node[child])
        else:
            node[new_key] = node.pop(child)
    elif action in ("add", "rename") or child is None:
        node.insert(pick % (len(node) + 1), value)
    elif action == "set":
        node[child] = value
    elif action == "delete":
        del node[child]
    else:
        node.insert(child, copy.deepcopy(node[child]))


@settings(max_examples=400, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_configs_load_or_raise_config_error(mutations: list[tuple[Any, ...]]) -> None:
    data = copy.deepcopy(VALID)
    for m in mutations:
        try:
            apply(data, m)
        except (KeyError, IndexError, TypeError, AttributeError):
            break  # an earlier mutation reshaped the tree; test what we have
    must_load_or_refuse(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=3))
def test_mutated_configs_through_yaml_text(mutations: list[tuple[Any, ...]]) -> None:
    data = copy.deepcopy(VALID)
    for m in mutations:
        try:
            apply(data, m)
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    with contextlib.suppress(ConfigError):
        config_from_text(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_loads_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        config_from_text(text)
