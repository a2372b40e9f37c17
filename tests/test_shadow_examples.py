"""The shadow examples in examples/shadows/ are valid configs whose shadows compile,
pointing at the local simulators of docs/simulator.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.config import load_config
from turnout.snapshot import build_snapshot

SHADOWS = Path(__file__).resolve().parents[1] / "examples" / "shadows"
FILES = sorted(SHADOWS.glob("*.y*ml"))


def test_there_are_examples() -> None:
    assert [p.name for p in FILES] == ["shadow.yaml", "two-shadows.yaml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_compiles_with_its_shadows(path: Path) -> None:
    config = load_config(path)
    snapshot = build_snapshot(config, base_dir=path.parent)
    routes = [r for r in config.routes if r.shadows]
    assert routes, "an example of shadows has at least one"
    for route in routes:
        plans = snapshot.shadows[route.name]
        assert [p.name for p in plans] == [s.name for s in route.shadows]
    assert all(u.base_url.startswith("http://127.0.0.1:") for u in config.upstreams)
