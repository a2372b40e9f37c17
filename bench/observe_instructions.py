"""What metrics and the request log cost the gateway per request, in instructions.

    python3 bench/observe_instructions.py            # needs valgrind (apt install valgrind)
    python3 bench/observe_instructions.py --n 5000   # quicker

Instructions, counted by callgrind, because this machine's core speed drifts by more
than the differences measured here; a count does not drift (two runs agree within
0.1%). The work is the gateway's own share of observing a request, in-process:
``Observer.begin`` then ``Observer.finish`` on N finished exchanges (90/10 over two
variants, as in bench/stack), with metrics and the request log on or off. The log is
never started, so its queue and frames are counted, its writer process is not (its
cost per row: bench/requestlog.py). Each mode runs in its own process under callgrind;
a run that only builds the exchanges is subtracted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("setup", "none", "metrics", "log", "metrics+log")


def workload(mode: str, n: int) -> None:
    from turnout.config import config_from_mapping  # noqa: PLC0415
    from turnout.observe.exchange import Exchange  # noqa: PLC0415
    from turnout.observe.metrics import Registry  # noqa: PLC0415
    from turnout.observe.observer import Observer  # noqa: PLC0415
    from turnout.snapshot import build_snapshot  # noqa: PLC0415
    from turnout.store import RequestLog  # noqa: PLC0415

    config = {
        "upstreams": [{"name": "primary", "base_url": "http://primary/v1"}],
        "routes": [{"name": "chat", "variants": [
            {"name": "stable", "upstream": "primary", "weight": 90, "model": "m1"},
            {"name": "canary", "upstream": "primary", "weight": 10, "model": "m1"},
        ]}],
        "prices": {"m1": {"input": 1, "output": 2}},
    }
    snap = build_snapshot(config_from_mapping(config))
    log = None
    if "log" in mode:
        log = RequestLog(Path(tempfile.mkdtemp()) / "log.db", queue_limit=n + 1)
    observer = Observer(Registry(), log, metrics=mode.startswith("metrics"))
    rnd = random.Random(1)
    exchanges = []
    for i in range(n):
        start = 1000.0 + i * 1e-4
        x = Exchange(f"a1b2c3d4e5f6{i:010x}", 1.7e9 + i * 1e-4, start, route="chat",
                     key=f"user-{i % 5000}")
        x.model, x.status, x.attempts = "m1", 200, 1
        x.sent = start + 1e-4
        x.upstream_done = start + 4e-4 + rnd.random() * 1e-4
        x.end = x.upstream_done + 5e-5
        x.input_tokens, x.output_tokens = 25, 12
        exchanges.append(x)
    variants = ["canary" if rnd.random() < 0.1 else "stable" for _ in range(n)]
    if mode == "setup":
        return
    for x, variant in zip(exchanges, variants, strict=True):
        observer.begin(x, variant, "primary")
        observer.finish(x, snap)
    observer.registry.fold()


def count(mode: str, n: int, workdir: Path) -> int:
    out = workdir / f"callgrind.{mode}"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--run", mode, "--n", str(n)],
        check=True, capture_output=True,
    )
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="exchanges per run (default 20,000)")
    ap.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)  # the child under callgrind
    args = ap.parse_args()
    if args.run:
        workload(args.run, args.n)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        totals = {mode: count(mode, args.n, Path(tmp)) for mode in MODES}
    base = totals["setup"]
    per = {mode: (totals[mode] - base) / args.n for mode in MODES[1:]}
    print(f"instructions a request, {args.n:,} requests (callgrind):")
    for mode in MODES[1:]:
        print(f"  {mode:12} {per[mode]:8,.0f}   +{per[mode] - per['none']:,.0f} over none")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
