"""`python -m bench.cluster`: the engine's throughput on a Redis Cluster against one Redis, in the same
run, and how it grows with the number of bridge processes (1, 2, 4 by default).

A backlog of N distinct alerts (`bench.drain.backlog`: 1,000 hosts, correlated by alertname and instance
as `bridge/samples/example.yaml`) is written to the intake: its one stream on one Redis, its 16 shards on
the cluster (`bridge.core.keys.Shards`). Then P engine processes (`python -m bench.cluster engine ...`:
an `Engine` each, run as `bridge serve` runs it, without delivery and HTTP) are told to start at once
and drain it; measured is the time from that signal until every shard's group has read and
acknowledged every entry, and the CPU the engine processes and the Redis servers (the cluster's six
nodes, replicas included) spent per alert. Both Redis kinds run Debian's redis-server with AOF
(`appendfsync everysec`), as production runs them; the cluster is three masters with a replica each
(`tests/cluster.py`). Every process shares this machine's cores: read the ratios, and the CPU per alert.

    python -m bench.cluster                      # 20,000 alerts, 1, 2 and 4 processes, both kinds (~2 min)
    python -m bench.cluster --alerts 2000 --processes 1,2 --tag quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.common import ratio, write_mapping
from bench.drain import CORRELATE, backlog

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--alerts", type=int, default=20_000, help="the backlog drained in each run")
    p.add_argument("--processes", default="1,2,4", help="engine processes, comma-separated")
    p.add_argument("--rounds", type=int, default=1, help="each (kind, processes) run this many times (best kept)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tag", default="cluster")
    return p.parse_args(argv)


# ---- one engine process -------------------------------------------------------------------------


async def engine_process(url: str, config_path: str, consumer: str) -> None:
    """Connect, make the groups, say "ready"; on "go" on stdin, run the engine until SIGTERM."""
    from bridge.core import config as config_mod
    from bridge.engine.consumer import Engine
    from bridge.process.server import collect_less
    from bridge.runtime.context import Runtime
    from bridge.runtime.scripts import open_scripts

    config = config_mod.load([config_path])
    scripts = open_scripts(url, timeout=30)
    await scripts.load()
    rt = Runtime(scripts.redis, scripts, config, tuning=config_mod.tuning(), consumer=consumer)
    engine = Engine(rt)
    await engine.ensure_group()
    collect_less()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await engine.run(stop)
    await scripts.aclose()


# ---- the harness ----------------------------------------------------------------------------------


async def _client_and_shards(url: str) -> tuple[Any, Any]:
    from bridge.runtime import shards
    from bridge.runtime.connect import connect

    client = connect(url)
    if hasattr(client, "initialize"):
        await client.initialize()
    return client, shards.default(client)


async def fill(url: str, entries: list[tuple[str, bytes]]) -> None:
    """Empty the Redis (every master), then write the backlog to the intake shards of its identities."""
    from bridge.core import keys
    from bridge.runtime.connect import is_cluster

    client, sharded = await _client_and_shards(url)
    try:
        if is_cluster(client):
            await client.flushall(target_nodes=client.PRIMARIES)
        else:
            await client.flushall()
        for start in range(0, len(entries), 1000):
            pipe = client.pipeline(transaction=False)
            for identity, entry in entries[start : start + 1000]:
                pipe.xadd(sharded.intake_for(identity), {"a": entry})
            await pipe.execute()
        await client.set(keys.SHARDS, sharded.count)
    finally:
        await client.aclose()


async def until_drained(url: str, started: float, limit_s: float = 600.0) -> None:
    """Poll (one client, one pipelined round trip every 20 ms) until every intake shard's group has read
    every entry and acknowledged it."""

    client, sharded = await _client_and_shards(url)
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            for stream in sharded.intakes:
                pipe.xinfo_groups(stream)
                pipe.xinfo_stream(stream)
            replies = await pipe.execute(raise_on_error=False)
            if all(_drained(groups, info) for groups, info in zip(replies[0::2], replies[1::2], strict=True)):
                return
            if time.perf_counter() - started > limit_s:
                raise TimeoutError(f"the backlog was not drained within {limit_s:.0f} s")
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def _drained(groups: Any, info: Any) -> bool:
    from bridge.core import keys

    if isinstance(groups, Exception) or isinstance(info, Exception):  # no group yet
        return False
    group = next((g for g in groups if g["name"] in (keys.ENGINE_GROUP, keys.ENGINE_GROUP.encode())), None)
    return group is not None and not group["pending"] and group["last-delivered-id"] == info["last-generated-id"]


def redis_cpu(ports: list[int]) -> dict[int, float]:
    """CPU seconds each Redis server (by port) has used."""
    import redis

    used = {}
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        used[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return used


def one_run(
    url: str, ports: list[int], config: Path, work: Path, entries: list[tuple[str, bytes]], n: int
) -> dict[str, Any]:
    """Fill the backlog, start `n` engine processes, drain; the figures."""
    asyncio.run(fill(url, entries))
    env = {**os.environ, "BRIDGE_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "bench.cluster", "engine", url, str(config)]
    logs = [(work / f"engine-{n}-{i}.log").open("wb") for i in range(n)]
    workers = [
        subprocess.Popen(
            [*command, f"bench-{i}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=procs.ROOT, env=env
        )
        for i, log in enumerate(logs)
    ]
    try:
        for w in workers:
            line = w.stdout.readline() if w.stdout else b""
            if line.strip() != b"ready":
                raise RuntimeError(f"an engine process did not start: see {work}/engine-{n}-*.log")
        cpu0 = sum(procs.cpu_seconds(w.pid) for w in workers)
        redis0 = redis_cpu(ports)
        started = time.perf_counter()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(b"go\n")
            w.stdin.flush()
        asyncio.run(until_drained(url, started))
        seconds = time.perf_counter() - started
        engine_cpu = sum(procs.cpu_seconds(w.pid) for w in workers) - cpu0
        redis_used = {port: used - redis0[port] for port, used in redis_cpu(ports).items()}
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        for log in logs:
            log.close()
    alerts = len(entries)
    return {
        "processes": n,
        "seconds": round(seconds, 3),
        "alerts_per_s": round(alerts / seconds, 1),
        "engine_cpu_us_per_alert": round(engine_cpu / alerts * 1e6, 1),
        "redis_cpu_us_per_alert": round(sum(redis_used.values()) / alerts * 1e6, 1),
        # the busiest server's share: with a core of its own each, what caps the rate (1e6 / this)
        "busiest_redis_us_per_alert": round(max(redis_used.values()) / alerts * 1e6, 1),
    }


def run(work: Path, *, alerts: int, processes: list[int], rounds: int) -> dict[str, Any]:
    from tests.cluster import LocalCluster

    config = write_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9", correlate=CORRELATE)
    entries = [(json.loads(e)["identity"], e) for e in backlog(alerts)]
    results: dict[str, Any] = {"alerts": alerts, "runs": []}
    with procs.redis_server(work / "redis") as server:
        cluster = LocalCluster(work / "cluster")
        for node in cluster.nodes:
            node.binary = procs.redis_binary()  # the same redis-server as the one Redis
        cluster.start()
        try:
            kinds = {
                "one Redis": (server.url, [server.port]),
                "cluster (3 masters)": (cluster.url, [n.port for n in cluster.nodes]),
            }
            for n in processes:
                for kind, (url, ports) in kinds.items():
                    best: dict[str, Any] | None = None
                    for _ in range(rounds):
                        got = one_run(url, ports, config, work, entries, n)
                        if best is None or got["alerts_per_s"] > best["alerts_per_s"]:
                            best = got
                    assert best is not None
                    print(f"  {kind}, {n} process(es): {best['alerts_per_s']:,.0f} alerts/s", flush=True)
                    results["runs"].append({"kind": kind, **best})
        finally:
            cluster.stop()
    base = {r["processes"]: r["alerts_per_s"] for r in results["runs"] if r["kind"] == "one Redis"}
    one = next((r["alerts_per_s"] for r in results["runs"] if r["kind"] == "one Redis" and r["processes"] == 1), 0)
    for r in results["runs"]:
        r["vs_one_redis_same_processes"] = ratio(r["alerts_per_s"], base.get(r["processes"], 0))
        r["vs_one_redis_one_process"] = ratio(r["alerts_per_s"], one)
    return results


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# Engine on Redis Cluster against one Redis ({meta['started']})",
        "",
        f"`{meta['command']}` at `{meta['commit']}`, {meta['cpus']} CPUs, redis {meta['redis']},"
        f" {results['alerts']:,} alerts per run.",
        "",
        "| Redis | processes | alerts/s | ÷ one Redis, same processes | ÷ one Redis, 1 process"
        " | engine CPU µs/alert | Redis CPU µs/alert (all servers) | busiest server µs/alert |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['kind']} | {r['processes']} | {r['alerts_per_s']:,.0f} | {r['vs_one_redis_same_processes']}"
            f" | {r['vs_one_redis_one_process']} | {r['engine_cpu_us_per_alert']} | {r['redis_cpu_us_per_alert']}"
            f" | {r['busiest_redis_us_per_alert']} |"
        )
    return "\n".join(lines) + "\n"


def _out(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["engine"]:
        import uvloop

        from bridge.core import logs

        logs.configure(level="warning")
        uvloop.run(engine_process(*argv[1:4]))
        return 0
    args = parse_args(argv)
    from bench.__main__ import python_ns_per_turn

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench.cluster " + " ".join(argv),
        "commit": _out("git", "-C", str(procs.ROOT), "rev-parse", "--short", "HEAD"),
        "cpus": os.cpu_count(),
        "redis": _out(procs.redis_binary(), "--version").split(" ")[2].removeprefix("v="),
        "python_ns_per_turn": python_ns_per_turn(),
    }
    processes = [int(p) for p in args.processes.split(",")]
    print(f"cluster: {args.alerts} alerts, processes {processes} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-cluster-") as tmp:
        results = run(Path(tmp), alerts=args.alerts, processes=processes, rounds=args.rounds)
    stem = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{args.tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "cluster": results}, indent=2) + "\n")
    text = markdown(results, meta)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(f"written: {args.out / stem}.json .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
