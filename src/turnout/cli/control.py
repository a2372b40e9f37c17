"""CLI commands that change or inspect the live config through the admin API."""

from __future__ import annotations

import argparse
import getpass
import time
from collections.abc import Callable
from typing import Any

from turnout.cli.admin_client import admin_request
from turnout.config import load_config


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _changed(result: dict[str, Any]) -> int:
    if not result.get("changed"):
        print(f"no change; the live config is still version {result['version']}")
        return 0
    print(f"accepted as version {result['version']} ({len(result['changes'])} change(s)):")
    for c in result["changes"][:20]:
        print(f"  {c['kind']:8} {c['path']}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    # Validate locally first: the same errors, before anything is sent.
    document = load_config(args.file).model_dump(mode="json", by_alias=True, exclude_none=True)
    body = {"config": document, "reason": args.reason, "author": actor()}
    return _changed(admin_request(args, "PUT", "/admin/config", body))


def _weights(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for pair in args.pairs:
        name, sep, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise SystemExit(f"turnout: {pair!r}: write VARIANT=PERCENT, e.g. canary=25")
    body = {"weights": weights, "reason": args.reason, "author": actor()}
    return _changed(admin_request(args, "PUT", f"/admin/routes/{args.route}/weights", body))


def _promote(args: argparse.Namespace) -> int:
    body = {"variant": args.variant, "reason": args.reason, "author": actor()}
    return _changed(admin_request(args, "POST", f"/admin/routes/{args.route}/promote", body))


def _rollback(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason, "author": actor(), "force": args.force}
    if args.to is not None:
        body["to"] = args.to
    return _changed(admin_request(args, "POST", "/admin/rollback", body))


def _history(args: argparse.Namespace) -> int:
    result = admin_request(args, "GET", "/admin/versions", limit=str(args.limit))
    for v in result["versions"]:
        live = " (live)" if v["version"] == result["live"] else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"]))
        print(f"{v['version']:>5}{live:7} {when}  {v['source']:10} {v['author']:20} {v['reason']}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    query = {"a": str(args.a)} | ({"b": str(args.b)} if args.b is not None else {})
    result = admin_request(args, "GET", "/admin/diff", **query)
    print(result["text"] or "no differences")
    return 0


def _status(args: argparse.Namespace) -> int:
    live = admin_request(args, "GET", "/admin/config")
    print(f"live config version {live['version']}")
    for route in live["config"]["routes"]:
        weights = ", ".join(f"{v['name']}={v.get('weight', 100):g}" for v in route["variants"])
        lock = live["locks"].get(route["name"])
        locked = f"  [locked by {lock['actor']}: {lock['reason']}]" if lock else ""
        print(f"  {route['name']}: {weights}{locked}")
    return 0


def _lock(args: argparse.Namespace) -> int:
    method = "DELETE" if args.unlock else "POST"
    body = None if args.unlock else {"reason": args.reason, "author": actor()}
    result = admin_request(args, method, f"/admin/routes/{args.route}/lock", body)
    print(f"route {result['route']} {'locked' if result['locked'] else 'unlocked'}")
    return 0


def add_control_commands(
    sub: Any, add_admin_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    def command(name: str, help_: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = sub.add_parser(name, help=help_)
        add_admin_args(p)
        p.set_defaults(func=func)
        return p

    p = command("apply", "validate a config file and make it the live config", _apply)
    p.add_argument("file")
    p.add_argument("--reason", default="")
    p = command("weights", "change one route's weights: weights ROUTE v1=90 v2=10", _weights)
    p.add_argument("route")
    p.add_argument("pairs", nargs="+", metavar="VARIANT=PERCENT")
    p.add_argument("--reason", default="")
    p = command("promote", "send all of a route's traffic to one variant", _promote)
    p.add_argument("route")
    p.add_argument("variant")
    p.add_argument("--reason", default="")
    p = command("rollback", "go back to the previous config version (or --to N)", _rollback)
    p.add_argument("--to", type=int)
    p.add_argument("--force", action="store_true", help="also over locked routes")
    p.add_argument("--reason", default="")
    p = command("history", "accepted config versions, newest first", _history)
    p.add_argument("--limit", type=int, default=20)
    p = command("diff", "what changed between two versions (B: the live one)", _diff)
    p.add_argument("a", type=int)
    p.add_argument("b", type=int, nargs="?")
    command("status", "the live version and each route's weights and locks", _status)
    p = command("lock", "lock a route against changes (--unlock to lift)", _lock)
    p.add_argument("route")
    p.add_argument("--unlock", action="store_true")
    p.add_argument("--reason", default="")
