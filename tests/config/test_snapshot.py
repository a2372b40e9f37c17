"""``build_snapshot``: upstream secrets resolved from the environment or files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from turnout.config import config_from_mapping
from turnout.config.model import Config
from turnout.exceptions import ConfigError
from turnout.routing import Router
from turnout.snapshot import build_snapshot

SECRET = "sk-live-0123456789abcdef"


def config(*upstreams: dict[str, Any]) -> Config:
    ups = [
        {"name": f"u{i}", "base_url": f"http://u{i}.test/v1/", **u} for i, u in enumerate(upstreams)
    ]
    variants = [
        {"name": f"v{i}", "upstream": u["name"], "weight": 0, "model": f"m{i % 2}"}
        for i, u in enumerate(ups)
    ]
    variants[0]["weight"] = 100
    return config_from_mapping({"upstreams": ups, "routes": [{"name": "r", "variants": variants}]})


def refused(cfg: Config, env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_snapshot(cfg, env=env)
    return info.value


def assert_secret_hidden(exc: ConfigError, secret: str = SECRET) -> None:
    for text in (str(exc), repr(exc), *(str(e) for e in exc.errors), repr(exc.errors)):
        assert secret not in text


def test_unset_api_key_env_is_a_config_error_at_its_upstream() -> None:
    cfg = config({}, {"api_key_env": "TURNOUT_TEST_KEY"})
    exc = refused(cfg, {})
    (error,) = exc.errors
    assert error.path == "upstreams[1].api_key_env"
    assert "TURNOUT_TEST_KEY" in error.message and "not set" in error.message


def test_empty_api_key_env_is_a_config_error() -> None:
    exc = refused(config({"api_key_env": "K"}), {"K": ""})
    assert [e.path for e in exc.errors] == ["upstreams[0].api_key_env"]


def test_set_api_key_env_becomes_the_authorization_header() -> None:
    cfg = config({"api_key_env": "K"}, {})
    snap = build_snapshot(cfg, version=7, env={"K": SECRET})
    assert snap.version == 7
    assert snap.upstreams["u0"].headers["authorization"] == f"Bearer {SECRET}"
    assert snap.upstreams["u0"].headers["content-type"] == "application/json"
    assert "authorization" not in snap.upstreams["u1"].headers


def test_default_env_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"TURNOUT_TEST_KEY_{os.getpid()}"
    monkeypatch.setenv(name, SECRET)
    snap = build_snapshot(config({"api_key_env": name}))
    assert snap.upstreams["u0"].headers["authorization"] == f"Bearer {SECRET}"
    monkeypatch.delenv(name)
    assert_secret_hidden(refused(config({"api_key_env": name}), dict(os.environ)))


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {SECRET}\n\n", encoding="utf-8")
    snap = build_snapshot(config({"api_key_file": str(key_file)}), env={})
    assert snap.upstreams["u0"].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_api_key_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope" if kind == "missing" else tmp_path
    exc = refused(config({}, {}, {"api_key_file": str(path)}), {})
    (error,) = exc.errors
    assert error.path == "upstreams[2].api_key_file"
    assert "cannot read the key file" in error.message


def test_every_unresolvable_secret_is_reported(tmp_path: Path) -> None:
    cfg = config(
        {"api_key_env": "A"},
        {"api_key_env": "B"},
        {"api_key_file": str(tmp_path / "missing")},
        {"api_key_env": "C"},
    )
    exc = refused(cfg, {"B": SECRET})
    assert [e.path for e in exc.errors] == [
        "upstreams[0].api_key_env",
        "upstreams[2].api_key_file",
        "upstreams[3].api_key_env",
    ]
    # The key that did resolve is nowhere in the error.
    assert_secret_hidden(exc)


def test_key_never_in_the_error_when_a_file_key_resolved(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    cfg = config({"api_key_file": str(key_file)}, {"api_key_env": "UNSET"})
    assert_secret_hidden(refused(cfg, {}))


def test_key_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xff" + SECRET.encode())
    exc = refused(config({"api_key_file": str(key_file)}), {})
    assert [e.path for e in exc.errors] == ["upstreams[0].api_key_file"]
    assert_secret_hidden(exc)


def test_empty_key_file_is_a_config_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(" \n", encoding="utf-8")
    exc = refused(config({"api_key_file": str(key_file)}), {})
    assert [e.path for e in exc.errors] == ["upstreams[0].api_key_file"]


def test_snapshot_targets_router_and_models() -> None:
    cfg = config({"timeouts": {"connect": 1, "first_byte": 2, "idle": 3, "total": 4}}, {}, {})
    snap = build_snapshot(cfg, env={})
    assert snap.config is cfg
    assert isinstance(snap.router, Router)
    assert snap.max_body_bytes == cfg.gateway.max_body_bytes
    t = snap.upstreams["u0"]
    assert t.base_url == "http://u0.test/v1"
    assert t.urls["chat/completions"] == URL("http://u0.test/v1/chat/completions")
    assert t.urls["embeddings"] == URL("http://u0.test/v1/embeddings")
    assert (t.connect_timeout, t.first_byte_timeout, t.idle_timeout, t.total_timeout) == (
        1,
        2,
        3,
        4,
    )
    models = json.loads(snap.models_body)
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["m0", "m1"]  # unique, in config order


def test_relative_api_key_file_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text(SECRET, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config({"api_key_file": "secrets/key"})
    snap = build_snapshot(cfg, env={}, base_dir=tmp_path)
    assert snap.upstreams["u0"].headers["authorization"] == f"Bearer {SECRET}"
    with pytest.raises(ConfigError):
        build_snapshot(cfg, env={})  # relative to the working directory: not there
