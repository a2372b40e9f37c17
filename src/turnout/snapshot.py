"""The immutable, validated snapshot the data plane serves from.

The control plane builds a new ``Snapshot`` from a ``Config`` and swaps it in;
a request reads the gateway's snapshot once, at its start, so it is served by
one version from beginning to end. Building one resolves upstream secrets from
the environment or files (the only I/O here) so a bad key reference is refused
before the swap, like any other config error.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from yarl import URL

from turnout.config.model import Config, Upstream
from turnout.exceptions import ConfigError, FieldError
from turnout.resilience.chains import RoutePolicy, compile_policy, ejection_policy
from turnout.resilience.ejection import EjectionPolicy
from turnout.routing import Router
from turnout.shadow.plan import ShadowPlan, build_evaluators, compile_shadows

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
    stream_usage: bool
    ejection: EjectionPolicy


Redactor = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class BodySampler:
    rate: float
    redact: Redactor | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    config: Config
    router: Router
    upstreams: Mapping[str, UpstreamTarget]
    models_body: bytes  # GET /v1/models, rendered once
    max_body_bytes: int
    # model -> nano-dollars per input token, per output token
    prices: Mapping[str, tuple[float, float]]
    body_sampling: Mapping[str, BodySampler]  # by route name; absent = never
    policies: Mapping[str, RoutePolicy]  # by route name: fallback chains, retries
    version_text: str  # the x-turnout-config-version header, rendered once
    # by route name; only routes that have shadows
    shadows: Mapping[str, tuple[ShadowPlan, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def with_version(self, version: int) -> Snapshot:
        return replace(self, version=version, version_text=str(version))

    def cost_nano(self, model: str | None, input_tokens: int | None, out: int | None) -> int:
        price = self.prices.get(model) if model else None
        if price is None:
            return 0
        return round((input_tokens or 0) * price[0] + (out or 0) * price[1])


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
        stream_usage=up.stream_usage,
        ejection=ejection_policy(up),
    )


def _models_body(config: Config) -> bytes:
    names: dict[str, None] = {}
    for route in config.routes:
        for v in route.variants:
            if v.model:
                names.setdefault(v.model)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "turnout"} for n in names]
    return orjson.dumps({"object": "list", "data": data})


def _redactor(spec: str, where: str) -> Redactor:
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except Exception as exc:  # any import-time failure of user code is a config error
        raise ConfigError.single(where, f"cannot load {spec}: {exc}") from None
    if not callable(fn):
        raise ConfigError.single(where, f"{spec} is not callable")
    redact: Redactor = fn
    return redact


def _samplers(config: Config) -> dict[str, BodySampler]:
    out: dict[str, BodySampler] = {}
    for i, route in enumerate(config.routes):
        spec = route.log_bodies
        if spec is None or spec.sample_rate <= 0:
            continue
        where = f"routes[{i}].log_bodies.redact"
        out[route.name] = BodySampler(
            spec.sample_rate, _redactor(spec.redact, where) if spec.redact else None
        )
    return out


async def _unreachable_judge(body: dict[str, Any]) -> str:
    raise RuntimeError("evaluators built to validate a config never run")


def _shadows(config: Config) -> dict[str, tuple[ShadowPlan, ...]]:
    """Each route's shadows; their redaction hooks and evaluators (plug-ins, schemas)
    are loaded here so that one that cannot be is refused with the config."""
    out: dict[str, tuple[ShadowPlan, ...]] = {}
    errors: list[FieldError] = []
    for i, route in enumerate(config.routes):
        if not route.shadows:
            continue
        hooks: dict[str, Redactor] = {}
        for j, shadow in enumerate(route.shadows):
            at = f"routes[{i}].shadows[{j}]"
            spec = shadow.samples.redact
            where = f"{at}.samples.redact"
            if spec is None and route.log_bodies is not None:
                spec, where = route.log_bodies.redact, f"routes[{i}].log_bodies.redact"
            try:
                if spec is not None:
                    hooks[spec] = _redactor(spec, where)
            except ConfigError as exc:
                errors.extend(exc.errors)
            for k, evaluator in enumerate(shadow.evaluators):
                try:
                    build_evaluators((evaluator,), lambda _: _unreachable_judge)
                except (ValueError, RuntimeError) as exc:
                    errors.append(FieldError(f"{at}.evaluators[{k}]", str(exc)))
        if not errors:
            out[route.name] = compile_shadows(route, hooks.get)
    if errors:
        raise ConfigError(errors)
    return out


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
    try:
        samplers = _samplers(config)
    except ConfigError as exc:
        errors.extend(exc.errors)
    try:
        shadows = _shadows(config)
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
        # USD per million tokens = 1e9 nano-dollars per 1e6 tokens: x 1000 per token.
        prices=MappingProxyType(
            {m: (p.input * 1000, p.output * 1000) for m, p in config.prices.items()}
        ),
        body_sampling=MappingProxyType(samplers),
        policies=MappingProxyType({r.name: compile_policy(r, targets) for r in config.routes}),
        version_text=str(version),
        shadows=MappingProxyType(shadows),
    )
