"""Turn YAML text or a mapping into a validated ``Config``, or a ``ConfigError``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from turnout.config.checks import semantic_errors
from turnout.config.model import Config
from turnout.exceptions import ConfigError, FieldError


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def field_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic's errors as (field path, reason) pairs."""
    return [
        FieldError(_path(tuple(e["loc"])), e["msg"].removeprefix("Value error, "))
        for e in exc.errors(include_url=False)
    ]


def config_from_mapping(data: Any) -> Config:
    """Validate a parsed document; every problem is reported, with its field path."""
    if not isinstance(data, Mapping):
        raise ConfigError.single("", "a config must be a mapping at the top level")
    try:
        config = Config.model_validate(data)
    except RecursionError:
        raise ConfigError.single("", "the config is nested too deeply") from None
    except ValidationError as exc:
        raise ConfigError(field_errors(exc)) from None
    problems = semantic_errors(config)
    if problems:
        raise ConfigError(problems)
    return config


class YamlLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2's booleans: only true and false. YAML 1.1 also reads on,
    off, yes and no as booleans, which turns keys such as ``retry: {on: [...]}`` and
    ``samples: {on: similarity}`` into ``True``."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse config YAML (see ``YamlLoader``); raises yaml.YAMLError."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader subclass: safe


def config_from_text(text: str, source: str = "<config>") -> Config:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError.single("", f"{source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError.single("", f"{source} is nested too deeply") from None
    return config_from_mapping(data)


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.single("", f"cannot read {p}: {exc.strerror}") from None
    return config_from_text(text, str(p))


def json_schema() -> str:
    """The JSON Schema of the config file, for editor completion (``turnout schema``)."""
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "turnout config"
    return json.dumps(schema, indent=2)
