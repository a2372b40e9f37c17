"""The files in examples/ are valid, runnable, and do what their comments say.

``examples/turnout.yaml`` ends each route with lines such as::

    #   $ route -H 'x-app: support-web' -d '{"user": "u-1001"}'
    #     -> support-canary / stable

meaning ``turnout route examples/turnout.yaml ARGS`` answers that route and variant.
Every such promise is parsed from the file and checked against the real command.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from turnout.config import config_from_mapping, config_from_text, json_schema
from turnout.config.match import Match
from turnout.config.model import Config
from turnout.exceptions import ConfigError
from turnout.gateway.server import serve_gateway
from turnout.simulator import ModelProfile, profiles_from_mapping, start_simulator
from turnout.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FULL = EXAMPLES / "turnout.yaml"
SIMULATED = EXAMPLES / "simulated.yaml"
PROFILES = EXAMPLES / "simulator-profiles.yaml"
# Every YAML in examples/ is one of these two kinds; a new file must be added here.
CONFIGS = [FULL, SIMULATED]
PROFILE_FILES = [PROFILES]
KEY_FILE_IN_EXAMPLE = "/run/secrets/vllm-api-key"


TURNOUT = [sys.executable, "-m", "turnout"]


def turnout(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TURNOUT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- every example is valid -------------------------------------------------------


def test_every_yaml_in_examples_is_covered() -> None:
    found = sorted(p.name for p in EXAMPLES.glob("*.y*ml"))
    assert found == sorted(p.name for p in [*CONFIGS, *PROFILE_FILES])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    config = config_from_text(path.read_text(encoding="utf-8"), str(path))
    assert config.routes[-1].match is None, "the last route should be the catch-all"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_against_the_json_schema(path: Path) -> None:
    """What an editor checks with `turnout schema` agrees with the loader."""
    import jsonschema  # noqa: PLC0415

    schema = json.loads(json_schema())
    jsonschema.Draft202012Validator(schema).validate(
        yaml.safe_load(path.read_text(encoding="utf-8"))
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_validate_command_accepts(path: Path) -> None:
    out = turnout("validate", str(path.relative_to(ROOT)))
    assert out.returncode == 0, out.stderr
    assert f"{path.relative_to(ROOT)}: valid;" in out.stdout


def test_validate_command_names_the_field_of_a_broken_copy(tmp_path: Path) -> None:
    text = FULL.read_text(encoding="utf-8").replace("weight: 95", "weight: 94", 1)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    out = turnout("validate", str(broken))
    assert out.returncode == 2
    assert "routes[3].variants: weights add up to 99, they must add up to 100" in out.stderr


def test_simulated_config_has_no_secrets_and_builds() -> None:
    config = config_from_text(SIMULATED.read_text(encoding="utf-8"))
    assert all(u.api_key_env is None and u.api_key_file is None for u in config.upstreams)
    snapshot = build_snapshot(config, env={})
    assert {u.base_url for u in config.upstreams} == {
        "http://127.0.0.1:9101/v1",
        "http://127.0.0.1:9102/v1",
    }
    assert all("authorization" not in t.headers for t in snapshot.upstreams.values())


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.name)
def test_simulator_profiles_load(path: Path) -> None:
    profiles = profiles_from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert {"sim-stable", "sim-candidate", "default"} <= set(profiles)


def test_profiles_cover_the_models_the_simulated_configs_ask_for() -> None:
    profiles = profiles_from_mapping(yaml.safe_load(PROFILES.read_text(encoding="utf-8")))
    for path in CONFIGS:
        config = config_from_text(path.read_text(encoding="utf-8"))
        sims = {u.name for u in config.upstreams if u.base_url.startswith("http://127.0.0.1:91")}
        for route in config.routes:
            for v in route.variants:
                if v.upstream in sims:
                    assert v.model in profiles, f"{path.name}: {route.name}/{v.name}"


# --- secrets of the full example ------------------------------------------------------


def test_full_example_resolves_its_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = FULL.read_text(encoding="utf-8")
    assert KEY_FILE_IN_EXAMPLE in text
    key_file = tmp_path / "vllm-api-key"
    key_file.write_text("vllm-secret\n")  # as mounted secrets usually end
    config = config_from_text(text.replace(KEY_FILE_IN_EXAMPLE, str(key_file)))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")

    snapshot = build_snapshot(config)

    assert snapshot.upstreams["openai"].headers["authorization"] == "Bearer sk-test-123"
    assert snapshot.upstreams["vllm-llama"].headers["authorization"] == "Bearer vllm-secret"
    assert "authorization" not in snapshot.upstreams["sim-a"].headers
    assert "authorization" not in snapshot.upstreams["sim-b"].headers
    assert snapshot.max_body_bytes == 1048576


def test_full_example_without_its_secrets_names_both_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = config_from_text(FULL.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError) as caught:
        build_snapshot(config)
    paths = {e.path for e in caught.value.errors}
    assert paths == {"upstreams[0].api_key_env", "upstreams[1].api_key_file"}


# --- the full example exercises the whole schema -----------------------------------


def _conditions(m: Match | None) -> list[Match]:
    if m is None:
        return []
    out = [m]
    for child in [*(m.all or []), *(m.any or [])]:
        out += _conditions(child)
    return out + _conditions(m.not_)


def test_full_example_uses_every_feature() -> None:
    config: Config = config_from_text(FULL.read_text(encoding="utf-8"))
    nodes = [n for r in config.routes for n in _conditions(r.match)]
    every = {"all", "any", "not_", "equals", "in_", "prefix", "regex", "exists"}
    every |= {"gt", "gte", "lt", "lte"}
    assert {name for n in nodes for name in every if getattr(n, name) is not None} == every
    sources = {n.attr.partition(":")[0] for n in nodes if n.attr}
    sources |= {a.partition(":")[0] for r in config.routes for a in [r.sticky.key]}
    sources |= {a.partition(":")[0] for r in config.routes for a in r.sticky.fallback}
    assert {"header", "query", "cookie", "body", "path"} <= sources
    assert any(n.attr and n.attr.startswith("body:metadata.") for n in nodes)

    variants = [v for r in config.routes for v in r.variants]
    modes = {v.system_prompt.mode for v in variants if v.system_prompt}
    assert modes == {"replace", "prepend", "append"}
    templates = " ".join(v.system_prompt.template for v in variants if v.system_prompt)
    for placeholder in ("{{route}}", "{{variant}}", "{{model}}", "{{header:", "{{body:"):
        assert placeholder in templates
    assert any(v.params for v in variants)

    by_name = {r.name: r for r in config.routes}
    assert [v.weight for v in by_name["support-canary"].variants] == [95, 5]
    assert len(by_name["enterprise-ab"].variants) == 3
    assert {r.sticky.on_missing for r in config.routes} == {"random", "reject"}
    assert any(r.salt for r in config.routes)
    assert any(r.allow_override for r in config.routes)
    assert any(r.sticky.fallback for r in config.routes)
    assert any(len(r.variants) == 1 and r.variants[0].weight is None for r in config.routes)

    ups = {u.name: u for u in config.upstreams}
    assert ups["openai"].api_key_env == "OPENAI_API_KEY"
    assert any(u.api_key_file for u in ups.values())
    assert any(u.labels for u in ups.values())
    assert any("timeouts" in u.model_fields_set for u in ups.values())
    assert any(u.base_url.startswith("http://127.0.0.1:") for u in ups.values())
    assert config.routes[-1].match is None


# --- `turnout route` gives what the comments promise --------------------------------


@dataclass(frozen=True)
class Promise:
    args: str
    route: str | None
    variant: str | None
    forced: bool
    error: str | None

    def __str__(self) -> str:
        return self.args


_ARGS = re.compile(r"^\s*#\s+\$ route (?P<args>.+?)\s*$")
_OUTCOME = re.compile(
    r"^\s*#\s+-> (?:error: (?P<error>.+?)"
    r"|(?P<route>\S+) / (?P<variant>\S+)(?P<forced> \(forced\))?)"
    r"(?:\s{2,}.*)?$"
)


def promises() -> list[Promise]:
    lines = FULL.read_text(encoding="utf-8").splitlines()
    found: list[Promise] = []
    for i, line in enumerate(lines):
        m = _ARGS.match(line)
        if not m or m.group("args").startswith("ARGS "):
            continue
        outcome = _OUTCOME.match(lines[i + 1])
        assert outcome, f"line {i + 2} should say `-> ROUTE / VARIANT`: {lines[i + 1]!r}"
        found.append(
            Promise(
                m.group("args"),
                outcome.group("route"),
                outcome.group("variant"),
                outcome.group("forced") is not None,
                outcome.group("error"),
            )
        )
    return found


def test_the_promises_cover_every_route() -> None:
    found = promises()
    assert len(found) >= 20
    config = config_from_text(FULL.read_text(encoding="utf-8"))
    assert {p.route for p in found if p.route} == {r.name for r in config.routes}
    assert any(p.forced for p in found)
    assert any(p.error for p in found)


@pytest.mark.parametrize("promise", promises(), ids=str)
def test_route_command_keeps_the_promise(promise: Promise) -> None:
    out = turnout("route", str(FULL.relative_to(ROOT)), *shlex.split(promise.args))
    assert out.returncode == (1 if promise.error else 0), out.stderr
    if promise.error:
        assert f"→ error: {promise.error}" in out.stdout, out.stdout
    elif promise.forced:
        assert f"route {promise.route!r}: matches" in out.stdout, out.stdout
        expected = f"→ variant {promise.variant!r}: forced by the x-turnout-variant header"
        assert expected in out.stdout, out.stdout
    else:
        expected = f"→ route {promise.route!r}, variant {promise.variant!r}"
        assert expected in out.stdout, out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["-H", "x-app: support-ios", "-d", '{"user": "u-1010"}'],
        ["-d", '{"metadata": {"tier": "enterprise", "seats": "120"}}'],
    ],
    ids=["canary", "missing-key"],
)
def test_route_output_shown_in_the_gateway_docs(args: list[str]) -> None:
    """docs/gateway.md pastes these explanations verbatim; keep the two in step."""
    out = turnout("route", "examples/turnout.yaml", *args)
    assert out.returncode == (1 if "→ error" in out.stdout else 0), out.stderr
    docs = (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    command = f"$ turnout route examples/turnout.yaml {shlex.join(args)}"
    assert f"{command}\n{out.stdout}```" in docs


# --- the simulated example runs ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_command_serves_the_profiles() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*TURNOUT, "simulate", "--profiles", str(PROFILES), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        models: Any = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    models = json.load(r)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.1)
        assert models is not None, "the simulator did not come up"
        assert {m["id"] for m in models["data"]} == {"sim-stable", "sim-candidate", "sim-embed"}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


async def test_simulated_example_serves_end_to_end() -> None:
    """examples/simulated.yaml in front of simulators running the example profiles
    (on free ports instead of 9101/9102, so that parallel test runs do not collide)."""
    # The example's model names, with instant and faultless behaviour (the example
    # candidate fails 2% of requests on purpose, which would make this test flaky).
    names = profiles_from_mapping(yaml.safe_load(PROFILES.read_text(encoding="utf-8")))
    quick = {name: ModelProfile() for name in names}
    data = yaml.safe_load(SIMULATED.read_text(encoding="utf-8"))
    async with await start_simulator(quick) as one, await start_simulator(quick) as two:
        data["upstreams"][0]["base_url"] = one.base_url
        data["upstreams"][1]["base_url"] = two.base_url
        data["gateway"]["port"] = 0
        gateway, server = await serve_gateway(build_snapshot(config_from_mapping(data), env={}))
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        chat = {"model": "any", "messages": [{"role": "user", "content": "Hi"}]}
        try:
            async with aiohttp.ClientSession() as http:
                seen: dict[str, str] = {}
                for user in ("alice", "bob", "carol", "alice"):
                    async with http.post(url, json=chat, headers={"x-user-id": user}) as resp:
                        assert resp.status == 200
                        body = await resp.json()
                        variant = resp.headers["x-turnout-variant"]
                        assert seen.setdefault(user, variant) == variant  # sticky
                        model = {"stable": "sim-stable", "candidate": "sim-candidate"}[variant]
                        assert body["model"] == model
                        assert resp.headers["x-turnout-upstream"] == (
                            "sim-1" if variant == "stable" else "sim-2"
                        )
                forced = {"x-turnout-variant": "candidate"}
                async with http.post(url, json=chat, headers=forced) as resp:
                    assert resp.headers["x-turnout-variant"] == "candidate"
                    assert (await resp.json())["model"] == "sim-candidate"
        finally:
            await server.close()
            await gateway.close()
