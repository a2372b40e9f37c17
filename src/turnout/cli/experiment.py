"""``turnout experiment ...``: an experiment's report, its units, and ending it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.cli.admin_client import admin_request, admin_text
from turnout.cli.control import actor


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if pct else f"{x:.4g}"


def render_report(r: dict[str, Any]) -> str:
    srm = r["srm"]
    lines = [
        f"experiment {r['name']} on route {r['route']}: control {r['control']},"
        f" {r['analysis']} analysis",
        f"  units: {r['units']['analysed']} analysed,"
        f" {r['units']['excluded_multiple_variants']} excluded (saw more than one variant)",
        "  SRM: "
        + (
            f"MISMATCH (p={srm['p_value']:.2g}): the split is broken; do not trust these numbers"
            if srm["mismatch"]
            else f"ok (p={srm['p_value']:.3g})"
        ),
    ]
    for arm, a in srm["arms"].items():
        lines.append(
            f"    {arm:16} {a['units']:>8} units  {a['share']:.2%} (expected {a['expected']:.2%})"
        )
    key = "sequential" if r["analysis"] != "fixed" else "fixed"
    for metric in [r["primary"], *r["guardrails"]]:
        role = "primary" if metric == r["primary"] else "guardrail"
        lines.append(f"  {metric} ({role})")
        lines.append(
            f"    {'variant':16} {'control':>10} {'variant':>10} {'effect':>8} {'interval':>19}"
            f" {'p':>8} {'P(better)':>9}  verdict"
        )
        for arm, by_metric in r["comparisons"].items():
            c = by_metric[metric]
            if c["verdict"] == "no_data":
                lines.append(f"    {arm:16} no data (n={c['n_control']}/{c['n_variant']})")
                continue
            interval = c.get(key) or {}
            low, high = interval.get("relative_low"), interval.get("relative_high")
            ci = f"{_fmt(low, True)}..{_fmt(high, True)}"
            bayes = c.get("bayesian") or {}
            lines.append(
                f"    {arm:16} {_fmt(c.get('control_mean')):>10} {_fmt(c.get('variant_mean')):>10}"
                f" {_fmt(c.get('relative'), True):>8} {ci:>19} {_fmt(interval.get('p_value')):>8}"
                f" {_fmt(bayes.get('prob_better')):>9}  {c['verdict'].upper()}"
            )
    lines.append(f"  winner: {r['winner'] or 'none yet (control stays)'}")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    report = admin_request(args, "GET", f"/admin/experiments/{args.name}")
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    return 0


def _export(args: argparse.Namespace) -> int:
    text = admin_text(args, f"/admin/experiments/{args.name}/units.csv")
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output).write_text(text)
        print(f"wrote {text.count(chr(10)) - 1} units to {args.output}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    body = {"winner": args.winner, "reason": args.reason, "author": actor()}
    result = admin_request(args, "POST", f"/admin/experiments/{args.name}/stop", body)
    print(
        f"experiment {args.name} stopped as config version {result['version']}"
        + (f"; {args.winner} now has all of the route's traffic" if args.winner else "")
    )
    return 0


def add_experiment_commands(
    sub: Any, add_admin_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    top = sub.add_parser("experiment", help="A/B experiments: report, export, stop")
    cmds = top.add_subparsers(dest="experiment_command", required=True)
    p = cmds.add_parser("report", help="effects, intervals, verdicts, SRM and the winner")
    add_admin_args(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)
    p = cmds.add_parser("export", help="one CSV row per unit (user or session)")
    add_admin_args(p)
    p.add_argument("name")
    p.add_argument("-o", "--output", default="-")
    p.set_defaults(func=_export)
    p = cmds.add_parser("stop", help="end it; --winner gives that variant all the traffic")
    add_admin_args(p)
    p.add_argument("name")
    p.add_argument("--winner")
    p.add_argument("--reason", default="")
    p.set_defaults(func=_stop)
