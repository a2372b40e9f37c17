#!/usr/bin/env python3
"""What a feature costs, measured as two targets that share one core at the same time.

    bench/.venv-stack/bin/python bench/stack/paired.py                 # turnout vs turnout-bare
    bench/.venv-stack/bin/python bench/stack/paired.py --a turnout-nolog --b turnout-bare
    bench/.venv-stack/bin/python bench/stack/paired.py --smoke         # seconds, no claims

(``bash bench/stack/run.sh`` once first: it installs nginx, wrk and the bench venv.)

Why: on this kind of machine (a VM on a shared host) the speed of a core drifts by
10-20% over minutes, more than the 10% a feature may cost, so targets measured one
after the other (``harness.py``, even with ``--rounds``) compare moments as much as
code. Here both targets run at once, each in its own session (the kernel's autogroup
scheduling gives each session an equal share of the core), both pinned to the proxy
core and each saturated by its own wrk at the same connection count. Whatever the
core does, it does to both. A target's whole process tree counts against it: the
request log's writer process is in its session, on its core.

``--modes sse/json --b turnout`` runs one target twice over, streaming against
non-streaming: issue 6's "streaming within 15% of non-streaming", free of drift too.

Reported per mode and round: each target's requests/s and CPU µs per request (its
processes' CPU time over the requests it answered), and their ratios; the summary
is the median round. ``rps a/b`` is the throughput of A as a share of B's, the
figure issue 3's target is stated in (with B doing less work, 1 - that ratio is
what the extra work costs); ``cpu a/b`` says the same from CPU time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness as h

PORT_A_OFFSET, PORT_B_OFFSET = 10, 20  # gateways on base+10 and base+20 (admin +1 each)


def start(t: h.Target, port: int, mode: str, up: h.Upstream, wd: Path, python: str) -> h.Proc:
    stream = mode == "sse"
    ctx = h.Ctx(port=port, upstream_a=up.ports[(mode, "a")], upstream_b=up.ports[(mode, "b")],
                stream=stream, workdir=wd, python=python)
    wd.mkdir(parents=True)
    assert t.start is not None
    proc = h.Proc(t.start(ctx), core=h.PROXY_CORE, cwd=h.PROXIES, log=wd / "out.log")
    h.wait_port(port, proc, t.start_timeout)
    problems = h.preflight(t, port, stream)
    if problems:
        proc.stop()
        raise RuntimeError(f"{t.name} answers wrong: " + "; ".join(problems))
    return proc


def load_both(ports: tuple[int, int], conns: int, seconds: int, streams: tuple[bool, ...]
              ) -> list[dict]:
    """Two wrk runs at once, one per target; their results in the same order."""
    out: list[dict] = [{}, {}]

    def run(i: int) -> None:
        out[i] = h.run_wrk(ports[i], conns, seconds, streams[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def one_round(a: h.Target, b: h.Target, modes: tuple[str, str], up: h.Upstream, wd: Path,
              args) -> dict:
    """A in ``modes[0]`` and B in ``modes[1]`` at once (the same mode, or JSON against
    SSE for one target)."""
    streams = tuple(mode == "sse" for mode in modes)
    base = args.base_port
    ports = (base + PORT_A_OFFSET, base + PORT_B_OFFSET)
    procs: list[h.Proc] = []
    try:
        for side, t, port, mode in zip("ab", (a, b), ports, modes, strict=True):
            procs.append(start(t, port, mode, up, wd / side, sys.executable))
        if args.warmup:
            load_both(ports, args.conns, args.warmup, streams)
        cpu0 = [p.cpu_seconds() for p in procs]
        results = load_both(ports, args.conns, args.duration, streams)
        cpu = [p.cpu_seconds() - c for p, c in zip(procs, cpu0, strict=True)]
    finally:
        for p in procs:
            p.stop()
    row: dict = {"mode": modes[0] if modes[0] == modes[1] else "/".join(modes)}
    for name, res, seconds in zip("ab", results, cpu, strict=True):
        errors = sum(res["errors"].values())
        if errors:
            raise RuntimeError(f"target {name}: {errors} errors: {res['errors']}")
        n = res["requests"]
        row[name] = {"rps": n / (res["duration_us"] / 1e6), "requests": n,
                     "cpu_us_per_req": 1e6 * seconds / n if n else None}
    row["rps_ratio"] = row["a"]["rps"] / row["b"]["rps"]
    if row["a"]["cpu_us_per_req"] and row["b"]["cpu_us_per_req"]:
        row["cpu_ratio"] = row["a"]["cpu_us_per_req"] / row["b"]["cpu_us_per_req"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default="turnout", help="the target doing more (default turnout)")
    ap.add_argument("--b", default="turnout-bare", help="the baseline (default turnout-bare)")
    ap.add_argument("--modes", default="json,sse",
                    help="json, sse or both, each compared in turn; or a pair A/B, e.g. sse/json: "
                         "A in the first mode against B in the second, at once")
    ap.add_argument("--conns", type=int, default=32, help="connections per target (default 32)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per round (default 10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--base-port", type=int, default=18180)
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s per mode: a check")
    ap.add_argument("--out", type=Path, help="write the rounds and summary as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0
    targets = {t.name: t for t in h.TARGETS}
    a, b = targets[args.a], targets[args.b]
    if "/" in args.modes:
        pair = tuple(args.modes.split("/"))
        if len(pair) != 2 or not set(pair) <= {"json", "sse"}:
            raise SystemExit("--modes A/B takes two of json, sse")
        pairs = [pair]
    else:
        pairs = [(m, m) for m in args.modes.split(",") if m in ("json", "sse")]
    modes = ["/".join(p) if p[0] != p[1] else p[0] for p in pairs]
    base = args.base_port
    up = h.Upstream({("json", "a"): base + 1, ("json", "b"): base + 2,
                     ("sse", "a"): base + 3, ("sse", "b"): base + 4})
    busy = [p for p in [*up.ports.values(), base + PORT_A_OFFSET, base + PORT_B_OFFSET]
            if not h.port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy}; pick another --base-port")
    wd = Path(tempfile.mkdtemp(prefix="turnout-paired-"))
    rows: list[dict] = []
    nginx = None
    try:
        (wd / "upstream.conf").write_text(h.upstream_conf(up, wd))
        nginx = h.Proc([h._nginx_bin(), "-p", str(wd), "-e", str(wd / "upstream-error.log"),
                        "-c", str(wd / "upstream.conf")], core=h.LOAD_CORE, log=wd / "nginx.out")
        for port in up.ports.values():
            h.wait_port(port, nginx, 15)
        for rnd in range(args.rounds):
            for pair, mode in zip(pairs, modes, strict=True):
                row = one_round(a, b, pair, up, wd / f"r{rnd + 1}-{mode.replace('/', '-')}", args)
                row["round"] = rnd + 1
                rows.append(row)
                print(f"r{rnd + 1} {mode:4}  {a.name} {row['a']['rps']:>8,.0f} req/s "
                      f"{row['a']['cpu_us_per_req']:6.1f} us/req   {b.name} {row['b']['rps']:>8,.0f} "
                      f"req/s {row['b']['cpu_us_per_req']:6.1f} us/req   rps a/b "
                      f"{row['rps_ratio']:.3f}  cpu a/b {row.get('cpu_ratio', 0):.3f}", flush=True)
    finally:
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(wd, ignore_errors=True)
    summary = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {
            "rounds": len(mine),
            "rps_ratio_median": statistics.median(r["rps_ratio"] for r in mine),
            "rps_ratio_range": [min(r["rps_ratio"] for r in mine),
                                max(r["rps_ratio"] for r in mine)],
            "cpu_ratio_median": statistics.median(r.get("cpu_ratio", 0.0) for r in mine),
            "a_rps_median": statistics.median(r["a"]["rps"] for r in mine),
            "b_rps_median": statistics.median(r["b"]["rps"] for r in mine),
        }
        s = summary[mode]
        print(f"{mode}: {a.name} / {b.name}: throughput {s['rps_ratio_median']:.3f} "
              f"(rounds {s['rps_ratio_range'][0]:.3f}-{s['rps_ratio_range'][1]:.3f}), "
              f"CPU per request {s['cpu_ratio_median']:.3f}; median of {s['rounds']} rounds"
              + (" (SMOKE: no timing claims)" if args.smoke else ""))
    if args.out:
        doc = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "argv": sys.argv[1:], "a": a.name, "b": b.name, "conns": args.conns,
               "duration_s": args.duration, "machine": h.machine_info(sys.executable),
               "rounds": rows, "summary": summary}
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(f"paired: {len(rows)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
