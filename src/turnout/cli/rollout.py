"""``turnout rollout ...``: start, watch and steer rollouts through the admin API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from turnout.cli.admin_client import admin_request
from turnout.cli.control import actor
from turnout.config.load import load_yaml
from turnout.config.rollout import RolloutSpec
from turnout.exceptions import ConfigError
from turnout.rollout.controller import parse_spec


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def _number(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if pct else f"{x:.4g}"


def render_status(view: dict[str, Any]) -> str:
    """The status of one rollout as a person reads it in a terminal."""
    lines = [
        f"rollout {view['name']}: {view['candidate']} over {view['stable']} on route"
        f" {view['route']} -- {view['phase'].upper()}"
        + (f" ({view['paused_reason']})" if view.get("paused_reason") else "")
    ]
    if view.get("reason"):
        lines.append(f"  why:      {view['reason']}")
    steps = view["steps"]
    marks = []
    for i, s in enumerate(steps):
        mark = "✓" if i < view["step"] else ("▶" if i == view["step"] else " ")
        marks.append(f"{mark} {s}")
    lines.append("  steps:    " + "  ".join(marks))
    if view.get("current_step"):
        lines.append(f"  now:      {view['current_step']}, {_seconds(view['time_left_s'])} left")
    weights = ", ".join(f"{k}={v:g}" for k, v in view["weights"].items())
    lines.append(f"  weights:  {weights}" + ("  (+ preview segment)" if view["preview"] else ""))
    if view.get("blocked"):
        lines.append(f"  BLOCKED:  {view['blocked']}")
    analysis = view.get("analysis")
    if analysis:
        lines.append(
            f"  analysis: {analysis['verdict'].upper()}, score {analysis['score']:.0f}"
            + (f", aborted by {analysis['aborted_by']}" if analysis.get("aborted_by") else "")
        )
        lines.append(
            f"    {'metric':22} {'status':8} {'n stable':>9} {'n cand.':>8}"
            f" {'stable':>9} {'cand.':>9} {'effect':>8} {'95% CI':>17} {'p':>8}"
        )
        for m in analysis["metrics"]:
            ci = (
                f"{_number(m.get('effect_low'), True)}..{_number(m.get('effect_high'), True)}"
                if m.get("effect_low") is not None
                else "-"
            )
            lines.append(
                f"    {m['name']:22} {m['status']:8} {m['stable_n']:>9} {m['candidate_n']:>8}"
                f" {_number(m.get('stable')):>9} {_number(m.get('candidate')):>9}"
                f" {_number(m.get('effect'), m.get('relative', True)):>8} {ci:>17}"
                f" {_number(m.get('p_value')):>8}"
            )
    for e in view.get("events", [])[-8:]:
        lines.append(f"  - {e['kind']:10} {e['message']}")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    found = admin_request(args, "GET", "/admin/rollouts")["rollouts"]
    if not found:
        print("no rollouts")
    for r in found:
        print(
            f"{r['name']:24} {r['phase']:11} route {r['route']:16}"
            f" {r['candidate']} at {r['candidate_percent']:g}%"
            f"  step {min(r['step'] + 1, len(r['steps']))}/{len(r['steps'])}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    print(render_status(admin_request(args, "GET", f"/admin/rollouts/{args.name}")))
    return 0


def _start(args: argparse.Namespace) -> int:
    try:
        document = load_yaml(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"turnout: cannot read {args.file}: {exc}") from None
    try:
        spec: RolloutSpec = parse_spec(document)  # the same errors, before anything is sent
    except ConfigError as exc:
        raise SystemExit(f"turnout: {args.file}: {exc}") from None
    body = {
        "rollout": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "author": actor(),
    }
    print(render_status(admin_request(args, "POST", "/admin/rollouts", body)))
    return 0


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        body = {"reason": args.reason, "author": actor()}
        print(
            render_status(admin_request(args, "POST", f"/admin/rollouts/{args.name}/{name}", body))
        )
        return 0

    return run


def add_rollout_commands(
    sub: Any, add_admin_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    top = sub.add_parser("rollout", help="canary and blue-green rollouts: list, status, abort...")
    cmds = top.add_subparsers(dest="rollout_command", required=True)

    def command(name: str, help_: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = cmds.add_parser(name, help=help_)
        add_admin_args(p)
        p.set_defaults(func=func)
        return p

    command("list", "every rollout, one line each", _list)
    command("status", "step, time left, weights and verdicts", _status).add_argument("name")
    command("start", "start the rollout in a YAML file", _start).add_argument("file")
    helps = {
        "abort": "give stable all the traffic back now",
        "promote": "skip the remaining steps: candidate gets all the traffic",
        "resume": "go on past a manual gate or a paused analysis",
        "retry": "start an aborted rollout again from its first step",
    }
    for name, help_ in helps.items():
        p = command(name, help_, _command(name))
        p.add_argument("name")
        p.add_argument("--reason", default="")
