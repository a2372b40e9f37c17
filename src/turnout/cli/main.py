"""The ``turnout`` command line: one subcommand a function, errors as clear messages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from turnout.exceptions import ConfigError


def _cmd_schema(args: argparse.Namespace) -> int:
    from turnout.config import json_schema  # noqa: PLC0415

    print(json_schema())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from turnout.config import load_config  # noqa: PLC0415

    config = load_config(args.file)
    routes = ", ".join(f"{r.name} ({len(r.variants)} variants)" for r in config.routes)
    print(f"{args.file}: valid; {len(config.upstreams)} upstreams; routes: {routes}")
    return 0


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":" if what == "header" else "=")
        if not sep:
            raise SystemExit(
                f"turnout: --{what} {item!r}: write NAME{':' if what == 'header' else '='}VALUE"
            )
        out[key.strip().lower() if what == "header" else key] = value.strip()
    return out


def _cmd_route(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode  # noqa: PLC0415

    from turnout.config import load_config  # noqa: PLC0415
    from turnout.routing import RequestView, Router  # noqa: PLC0415

    router = Router(load_config(args.file))
    body: Any = {}
    if args.body:
        text = args.body
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise SystemExit(f"turnout: --body {args.body}: {exc.strerror}") from None
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SystemExit(f"turnout: --body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise SystemExit("turnout: --body must be a JSON object")
    view = RequestView(
        args.path, _pairs(args.header, "header"), body, urlencode(_pairs(args.query, "query"))
    )
    lines = router.explain(view)
    print("\n".join(lines))
    # Scripts can tell "this request would be refused" from the exit status.
    return 1 if lines[-1].startswith("→ error") else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from turnout.serve import serve  # noqa: PLC0415

    serve(
        args.config,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        workers=args.workers,
        from_file=args.from_file,
        watch=args.watch,
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from turnout.cli.demo import run_demo  # noqa: PLC0415
    from turnout.control.auth import require_token_beyond_loopback  # noqa: PLC0415
    from turnout.serve import run  # noqa: PLC0415

    require_token_beyond_loopback(args.host)
    if args.scenario == "rollout":
        from turnout.cli.demo_rollout import run_rollout_demo  # noqa: PLC0415

        outcome: list[bool] = []

        async def scenario() -> None:
            outcome.append(await run_rollout_demo(args.host, 0, 0, args.window))

        run(scenario())
        return 0 if outcome and outcome[0] else 1
    run(run_demo(args.host, args.port, args.admin_port))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from turnout.serve import run  # noqa: PLC0415
    from turnout.simulator import profiles_from_mapping, run_simulator_forever  # noqa: PLC0415

    data = yaml.safe_load(Path(args.profiles).read_text()) if args.profiles else {}
    profiles = profiles_from_mapping(data or {})
    print(f"turnout simulator on http://{args.host}:{args.port}/v1", flush=True)
    run(run_simulator_forever(profiles, host=args.host, port=args.port, seed=args.seed))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from turnout.cli.admin_client import admin_get  # noqa: PLC0415
    from turnout.cli.stats_table import render_table  # noqa: PLC0415

    doc = admin_get(args, "/admin/stats", window=args.window)
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    color = not args.no_color and sys.stdout.isatty()
    print(render_table(doc, color=color))
    return 0


def add_admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin-url",
        default=os.environ.get("TURNOUT_ADMIN_URL", "http://127.0.0.1:8081"),
        help="admin API (default $TURNOUT_ADMIN_URL or http://127.0.0.1:8081);"
        " token from $TURNOUT_ADMIN_TOKEN or $TURNOUT_ADMIN_TOKEN_FILE",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout", description="Traffic-splitting gateway for LLMs")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="simulated upstreams + gateway, split 90/10")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--admin-port", type=int, default=8081)
    s.add_argument(
        "--scenario",
        choices=["split", "rollout"],
        default="split",
        help="split: serve a 90/10 split until Ctrl-C; rollout: a bad canary rolled back and"
        " a good one promoted, in accelerated time, then exit",
    )
    s.add_argument("--window", type=float, default=3.0, help="rollout: analysis window, seconds")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("stats", help="per-variant numbers side by side, from the admin API")
    add_admin_args(s)
    s.add_argument("--window", default="60s", help="60s, 300s, 3600s or cumulative")
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    s.add_argument("--no-color", action="store_true")
    s.set_defaults(func=_cmd_stats)

    from turnout.cli.control import add_control_commands  # noqa: PLC0415

    add_control_commands(sub, add_admin_args)
    from turnout.cli.rollout import add_rollout_commands  # noqa: PLC0415

    add_rollout_commands(sub, add_admin_args)
    from turnout.cli.experiment import add_experiment_commands  # noqa: PLC0415

    add_experiment_commands(sub, add_admin_args)
    from turnout.cli.shadow import add_shadow_commands  # noqa: PLC0415

    add_shadow_commands(sub, add_admin_args)

    s = sub.add_parser("serve", help="run the gateway from a config file")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("--host", help="override gateway.host")
    s.add_argument("--port", type=int, help="override gateway.port")
    s.add_argument("--admin-port", type=int, help="override admin.port")
    s.add_argument("--workers", "-w", type=int, default=1, help="processes sharing the port")
    s.add_argument(
        "--from-file",
        action="store_true",
        help="start on this file even if the store holds a later accepted version",
    )
    s.add_argument("--watch", action="store_true", help="apply the file again when it changes")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("validate", help="check a config file; errors name the field")
    s.add_argument("file")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("route", help="explain which route and variant a request gets")
    s.add_argument("file")
    s.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE")
    s.add_argument("--query", "-q", action="append", default=[], metavar="NAME=VALUE")
    s.add_argument("--body", "-d", help="JSON body, or @file")
    s.add_argument("--path", default="/v1/chat/completions")
    s.set_defaults(func=_cmd_route)

    s = sub.add_parser("schema", help="print the config's JSON Schema")
    s.set_defaults(func=_cmd_schema)

    s = sub.add_parser("simulate", help="run a simulated OpenAI-compatible upstream")
    s.add_argument("--profiles", help="YAML file of model profiles (docs/simulator.md)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9000)
    s.add_argument("--seed", type=int)
    s.set_defaults(func=_cmd_simulate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
