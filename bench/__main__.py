"""`python -m bench`: run the benchmark sections and write bench/results/<UTC time>.{json,md}.

python -m bench                              # all but the soak, default sizes (about 6 minutes)
python -m bench --only ingest --seconds 5    # one section
python -m bench --quick                      # a tiny configuration (for the smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, report

SECTIONS = ("ingest", "engine", "lua", "e2e", "storm", "ui", "soak")
DEFAULT = SECTIONS[:-1]  # the soak runs when asked for: `--only soak`


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bridge/aiohttp processes")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--seconds", type=float, default=10.0, help="wrk measurement per target")
    p.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per target")
    p.add_argument("--sizes", default="1,50", help="alerts per request, comma-separated")
    p.add_argument(
        "--ingest-targets", help="the ingest targets to run, comma-separated (default all; e.g."
        " bridge,bridge-fsync,bridge-wait1: the durability settings against the default alone)",
    )  # fmt: skip
    p.add_argument("--ingest-rounds", type=int, default=1, help="the ingest targets' sequence, this many times over")
    p.add_argument(
        "--ingest-cases", default="unique,repeats,new", help="the ingest section's alerts, comma-separated: unique"
        " (every alert unseen), repeats (a fixed set of open alerts, over and over), new (every alert a new ticket)",
    )  # fmt: skip
    p.add_argument("--repeat-pool", type=int, default=500, help="open alerts the ingest repeats case re-sends")
    p.add_argument("--engine-alerts", type=int, default=50_000)
    p.add_argument("--lua-sizes", default="10,10000", help="the incident sizes the lua section compares (members)")
    p.add_argument("--lua-rounds", type=int, default=7, help="incidents per case and size (the median is kept)")
    p.add_argument("--lua-script", type=Path, help="measure this apply_alert.lua instead (an older one: an A/B)")
    p.add_argument("--e2e-rate", type=int, default=500)
    p.add_argument("--e2e-seconds", type=float, default=20.0)
    p.add_argument("--e2e-warmup", type=float, default=2.0, help="seconds at the e2e rate not measured")
    p.add_argument("--desk-latency-ms", type=int, default=50)
    p.add_argument("--storm-hosts", type=int, default=1000)
    p.add_argument("--storm-names", type=int, default=100)
    p.add_argument("--storm-correlate", choices=["host", "alertname", "alert"], default="host")
    p.add_argument("--storm-flush", default="1s", help="the storm route's ticket.flush_interval (0s: none)")
    p.add_argument("--soak-alerts", type=int, default=100_000, help="unique alerts the soak sends (bench/README.md)")
    p.add_argument("--soak-rate", type=int, default=300, help="alerts/s the soak sends (2 desk calls each)")
    p.add_argument("--soak-hosts", type=int, default=1000, help="rotating hosts")
    p.add_argument("--soak-retention", type=float, default=10.0, help="seconds a resolved incident's keys live")
    p.add_argument("--ui-incidents", type=int, default=10_000, help="incidents the status page's section lists")
    p.add_argument("--ui-rounds", type=int, default=30, help="requests per status page case (the median is kept)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--tag", default="", help="appended to the result file names")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.sizes, args.connections = 1.0, 0.0, "1,50", 4
        args.engine_alerts, args.e2e_rate, args.e2e_seconds, args.e2e_warmup = 500, 50, 1.0, 0.2
        args.storm_hosts, args.storm_names, args.desk_latency_ms = 10, 5, 5
        args.soak_alerts, args.soak_rate, args.soak_retention = 400, 200, 1.0
        args.lua_sizes, args.lua_rounds = "10,200", 1
        args.ui_incidents, args.ui_rounds = 200, 3
    return args


def meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    def out(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    dirty = out("git", "-C", str(procs.ROOT), "status", "--porcelain", "--", "bridge", "adapters", "bench")
    commit = out("git", "-C", str(procs.ROOT), "rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": out(procs.redis_binary(), "--version").split(" ")[2].removeprefix("v="),
        "workers": args.workers,
        "quick": args.quick,
        "python_ns_per_turn": python_ns_per_turn(),
    }


def python_ns_per_turn() -> float:
    """Nanoseconds per turn of a bare Python loop (3 million turns, best of 3): how fast this machine
    ran Python at the start of the run. Machines of one kind differ by 2x and more from one session to
    the next, so absolute figures of different runs compare only once divided by this."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best / 3_000_000 * 1e9, 1)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    from bridge.core import logs

    uvloop.install()
    logs.configure(level="info")  # in-process sections (engine) log as `bridge serve` does
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sections = args.only or list(DEFAULT)
    results: dict[str, Any] = {"meta": meta(args, argv)}
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        work = Path(tmp)
        for section in sections:
            (work / section).mkdir()
        if "ingest" in sections:
            from bench import ingest

            sizes = tuple(int(s) for s in args.sizes.split(","))
            cases = tuple(args.ingest_cases.split(","))
            print(f"ingest: cases {cases}, sizes {sizes}, {args.seconds}s per target ...", flush=True)
            chosen = {"targets": tuple(args.ingest_targets.split(","))} if args.ingest_targets else {}
            results["ingest"] = ingest.run(work / "ingest", workers=args.workers, connections=args.connections,
                                           seconds=args.seconds, warmup_s=args.warmup, sizes=sizes,
                                           rounds=args.ingest_rounds, cases=cases, pool=args.repeat_pool,
                                           **chosen)  # fmt: skip
        if "engine" in sections:
            from bench import drain

            print(f"engine: backlog of {args.engine_alerts} alerts ...", flush=True)
            results["engine"] = asyncio.run(drain.run(work / "engine", alerts=args.engine_alerts))
        if "lua" in sections:
            from bench import lua

            small, large = (int(n) for n in args.lua_sizes.split(","))
            print(f"lua: apply_alert.lua against incidents of {small} and {large} members ...", flush=True)
            results["lua"] = asyncio.run(
                lua.run(work / "lua", sizes=(small, large), rounds=args.lua_rounds, script=args.lua_script)
            )
        if "e2e" in sections:
            from bench import e2e

            print(f"e2e: {args.e2e_rate} alerts/s for {args.e2e_seconds}s ...", flush=True)
            results["e2e"] = asyncio.run(
                e2e.run(
                    work / "e2e",
                    rate=args.e2e_rate,
                    seconds=args.e2e_seconds,
                    latency_ms=args.desk_latency_ms,
                    workers=args.workers,
                    warmup=args.e2e_warmup,
                )
            )
        if "storm" in sections:
            from bench import storm

            print(f"storm: {args.storm_hosts} hosts x {args.storm_names} names ...", flush=True)
            results["storm"] = asyncio.run(
                storm.run(
                    work / "storm",
                    hosts=args.storm_hosts,
                    names=args.storm_names,
                    correlate=args.storm_correlate,
                    latency_ms=args.desk_latency_ms,
                    workers=args.workers,
                    flush=args.storm_flush,
                )
            )
        if "ui" in sections:
            from bench import ui

            print(f"ui: the status page with {args.ui_incidents} incidents ...", flush=True)
            results["ui"] = asyncio.run(ui.run(work / "ui", incidents=args.ui_incidents, rounds=args.ui_rounds))
        if "soak" in sections:
            from bench import soak

            print(f"soak: {args.soak_alerts} alerts at {args.soak_rate}/s ...", flush=True)
            results["soak"] = asyncio.run(
                soak.run(
                    work / "soak", alerts=args.soak_alerts, rate=args.soak_rate, hosts=args.soak_hosts, batch=10,
                    retention_s=args.soak_retention, auto_resolve_s=2.0, workers=args.workers,
                    sample_s=0.5 if args.quick else 2.0,
                )
            )  # fmt: skip
    results["targets"] = report.targets(results)
    stem = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + (f"-{args.tag}" if args.tag else "")
    json_path, md_path = report.write(results, args.out, stem)
    print(report.markdown(results))
    print(f"written: {json_path} {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
