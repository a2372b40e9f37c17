"""``turnout shadow diff ROUTE``: the newest disagreeing pairs, for a person to read."""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

from turnout.cli.admin_client import admin_request

_WIDTH = 100
_SHOWN_CHARS = 1_200  # of each text; the admin API has the whole (clipped) text


def _text(value: object) -> str:
    if value is None:
        return "(none)"
    text = str(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + f" … ({len(text) - _SHOWN_CHARS} more characters)"
    # Answers come from models: never send their control characters to the terminal.
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def _block(label: str, value: object) -> list[str]:
    lines = [f"  {label}:"]
    for paragraph in _text(value).splitlines() or [""]:
        wrapped = textwrap.wrap(paragraph, _WIDTH - 4) or [""]
        lines.extend(f"    {line}" for line in wrapped)
    return lines


def _side(status: object, error: object) -> str:
    return f"HTTP {status}" + (f", {error}" if error else "")


def render_samples(doc: dict[str, Any]) -> str:
    samples = doc.get("samples") or []
    route = doc.get("route", "?")
    if not samples:
        return f"route {route}: no disagreeing pairs stored (shadows: {doc.get('shadows')})"
    out = [f"route {route}: {len(samples)} newest disagreeing pairs, newest first"]
    for s in samples:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(s["ts"])))
        scores = ", ".join(
            f"{name} {'-' if value is None else f'{value:.2f}'}"
            for name, value in (s.get("scores") or {}).items()
        )
        out.append("")
        out.append(
            f"{when}  request {s['request_id']}  live {s['variant']} vs shadow {s['shadow']}"
        )
        out.append(
            f"  live {_side(s['live_status'], s.get('live_error'))};"
            f" shadow {_side(s['shadow_status'], s.get('shadow_error'))}"
        )
        out.append(f"  scores: {scores or '(none)'}")
        out.extend(_block("request", s.get("request")))
        out.extend(_block("live answer", s.get("live")))
        out.extend(_block("shadow answer", s.get("shadow_text")))
    return "\n".join(out)


def _diff(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.shadow:
        query["shadow"] = args.shadow
    doc = admin_request(args, "GET", f"/admin/shadows/{args.route}/samples", **query)
    print(json.dumps(doc, indent=2) if args.json else render_samples(doc))
    return 0


def add_shadow_commands(
    sub: Any, add_admin_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    top = sub.add_parser("shadow", help="shadow deployments: stored disagreements")
    cmds = top.add_subparsers(dest="shadow_command", required=True)
    p = cmds.add_parser("diff", help="the newest pairs where a shadow disagreed with live")
    add_admin_args(p)
    p.add_argument("route")
    p.add_argument("--shadow", help="only this shadow of the route")
    p.add_argument("--limit", type=int, default=10, help="pairs to show (1-500)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_diff)
