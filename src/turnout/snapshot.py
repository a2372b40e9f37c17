"""The immutable, validated snapshot the data plane serves from.

The control plane builds a new ``Snapshot`` from a ``Config`` and swaps it in;
a request reads the gateway's snapshot once, at its start, so it is served by
one version from beginning to end. Building one resolves upstream secrets from
the environment or files (the only I/O here) so a bad key reference is refused
before the swap, like any other config error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import orjson
from yarl import URL

from turnout.config.model import Config, Upstream
from turnout.exceptions import ConfigError, FieldError
from turnout.routing import Router

# The OpenAI endpoints the gateway proxies, relative to an upstream's base URL.
ENDPOINTS: tuple[str, ...] = ("chat/completions", "completions", "embeddings")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """An upstream ready to be called: URLs built and headers (with the key) set."""

    name: str
    base_url: str
    urls: Mapping[str, URL]  # endpoint -> full URL
    headers: Mapping[str, str]
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    total_timeout: float
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    config: Config
    router: Router
    upstreams: Mapping[str, UpstreamTarget]
    models_body: bytes  # GET /v1/models, rendered once
    max_body_bytes: int


def _api_key(up: Upstream, index: int, env: Mapping[str, str], base_dir: Path) -> str | None:
    if up.api_key_env:
        key = env.get(up.api_key_env)
        if not key:
            raise ConfigError.single(
                f"upstreams[{index}].api_key_env",
                f"environment variable {up.api_key_env} is not set",
            )
        return key
    if up.api_key_file:
        where = f"upstreams[{index}].api_key_file"
        try:
            # A relative path is relative to the config file, not to where turnout runs.
            key = (base_dir / up.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError.single(where, f"cannot read the key file: {exc.strerror}") from None
        except UnicodeDecodeError:
            # The exception holds the file's bytes, the key among them: never pass it on.
            raise ConfigError.single(where, "the key file is not UTF-8 text") from None
        if not key:
            raise ConfigError.single(where, "the key file is empty")
        return key
    return None


def _target(up: Upstream, index: int, env: Mapping[str, str], base_dir: Path) -> UpstreamTarget:
    headers = {"content-type": "application/json"}
    key = _api_key(up, index, env, base_dir)
    if key:
        headers["authorization"] = f"Bearer {key}"
    t = up.timeouts
    return UpstreamTarget(
        name=up.name,
        base_url=up.base_url,
        urls=MappingProxyType({e: URL(f"{up.base_url}/{e}") for e in ENDPOINTS}),
        headers=MappingProxyType(headers),
        connect_timeout=t.connect,
        first_byte_timeout=t.first_byte,
        idle_timeout=t.idle,
        total_timeout=t.total,
        labels=MappingProxyType(dict(up.labels)),
    )


def _models_body(config: Config) -> bytes:
    names: dict[str, None] = {}
    for route in config.routes:
        for v in route.variants:
            if v.model:
                names.setdefault(v.model)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "turnout"} for n in names]
    return orjson.dumps({"object": "list", "data": data})


def build_snapshot(
    config: Config,
    version: int = 0,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Snapshot:
    """Compile a validated config; raises ConfigError if a secret cannot be resolved.

    ``base_dir`` is where relative key files are found: the config file's folder.
    """
    base_dir = Path.cwd() if base_dir is None else base_dir
    env = os.environ if env is None else env
    errors: list[FieldError] = []
    targets: dict[str, UpstreamTarget] = {}
    for i, up in enumerate(config.upstreams):
        try:
            targets[up.name] = _target(up, i, env, base_dir)
        except ConfigError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    return Snapshot(
        version=version,
        config=config,
        router=Router(config),
        upstreams=MappingProxyType(targets),
        models_body=_models_body(config),
        max_body_bytes=config.gateway.max_body_bytes,
    )
