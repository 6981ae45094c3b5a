"""Ingest: the same wrk load against the bridge, the aiohttp ceiling and Alertmanager's own API.

Targets, each fresh (its own Redis where it has one), one after another for each payload size:
  bridge        `bridge serve --workers N`: ingress, engine, delivery and timers, as deployed; the
                engine drains the intake stream meanwhile, on the same cores
  ingress-only  the bridge's request path alone (`bench.ingress_only`): same app, no engine
  aiohttp       (b) a handler that reads the body and answers 202: the framework ceiling
  alertmanager  (c) Prometheus Alertmanager's POST /api/v2/alerts: the Go peer's same first step
  bridge-fsync  the bridge with BRIDGE_DURABILITY=fsync, its Redis on `appendfsync always`
  bridge-wait1  the bridge with BRIDGE_WAIT_REPLICAS=1, a replica of its Redis in sync
The last two are the durability settings' cost (bridge.runtime.durability), against `bridge` of the
same run in `durability`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from bench import procs
from bench.common import WrkResult, ratio, write_mapping, wrk
from bridge.core import keys

DURABILITY: dict[str, dict[str, str]] = {
    "bridge-fsync": {"durability": "fsync"},
    "bridge-wait1": {"wait_replicas": "1"},
}
TARGETS = ("bridge", "ingress-only", "aiohttp", "alertmanager", *DURABILITY)


def run(
    work: Path,
    *,
    workers: int,
    connections: int,
    seconds: float,
    warmup_s: float,
    sizes: tuple[int, ...] = (1, 50),
    targets: tuple[str, ...] = TARGETS,
    rounds: int = 1,
) -> dict[str, Any]:
    """Each target under the same wrk load, one after another in the order given, for each payload size
    (`targets`, a subset of TARGETS: the durability settings are compared with `bridge` of the same run).

    With `rounds` > 1 the sequence of targets runs that many times over, so that each durability setting
    is compared with the default run just before it, round by round: on a machine shared with other
    work the load drifts over minutes, and the median of the rounds' ratios is steadier than one."""
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown ingest targets {sorted(unknown)}: choose among {', '.join(TARGETS)}")
    rows: list[dict[str, Any]] = []
    log = work / "wrk.log"
    if "alertmanager" in targets and procs.alertmanager_binary() is None:
        targets = tuple(t for t in targets if t != "alertmanager")
    for per in sizes:
        for turn, target in ((turn, target) for turn in range(rounds) for target in targets):
            with ExitStack() as stack:
                url, check, cpu = _start(stack, target, work / f"{target}-{per}-{turn}", workers)
                fmt = "amapi" if target == "alertmanager" else "webhook"
                path = "/api/v2/alerts" if target == "alertmanager" else "/webhook/alertmanager"
                if warmup_s > 0:
                    wrk(url + path, fmt=fmt, per_request=per, connections=connections, seconds=warmup_s,
                        tag="warm", log=log)  # fmt: skip
                cpu_before = cpu()
                result = wrk(url + path, fmt=fmt, per_request=per, connections=connections, seconds=seconds, log=log)
                cpu_used = cpu() - cpu_before
                rows.append({**_row(target, per, result, check(), cpu_used), "round": turn})
    return {"rows": rows, "ratios": _ratios(rows), "durability": _durability(rows), "workers": workers,
            "connections": connections, "seconds": seconds, "rounds": rounds}  # fmt: skip


def _start(
    stack: ExitStack, target: str, work: Path, workers: int
) -> tuple[str, Callable[[], int | None], Callable[[], float]]:
    """Start one target; returns its URL, how many alerts it holds (None: n/a), its CPU seconds so far.

    The CPU counts the target's own processes and, where it has one, its Redis.
    """
    work.mkdir(parents=True, exist_ok=True)
    if target == "aiohttp":
        proc = procs.trivial(work=work, workers=workers)
        stack.callback(proc.stop)
        return proc.url, lambda: None, proc.cpu_seconds
    if target == "alertmanager":
        proc = procs.alertmanager(work=work)
        stack.callback(proc.stop)
        return proc.url, lambda: None, proc.cpu_seconds
    fsync = "always" if target == "bridge-fsync" else "everysec"
    server = stack.enter_context(procs.redis_server(work / "redis", appendfsync=fsync))
    client = redis.Redis.from_url(server.url)
    stack.callback(client.close)
    redis_pid = server.process.pid if server.process else 0

    def redis_cpu() -> float:
        return procs.cpu_seconds(redis_pid)

    if target == "ingress-only":
        config = write_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9", correlate=["x"])
        proc = procs.ingress_only(config, server.url, work=work, workers=workers)
        stack.callback(proc.stop)
        return proc.url, lambda: int(client.xlen(keys.INTAKE)), lambda: proc.cpu_seconds() + redis_cpu()
    desk = procs.desk(work=work, latency_ms=0)
    stack.callback(desk.stop)
    config = write_mapping(work / "mapping.yaml", desk_url=desk.url, correlate=["{{ labels.alertname }}"])
    setting = DURABILITY.get(target, {})
    if "wait_replicas" in setting:  # a replica in sync, that WAIT waits for
        replica = stack.enter_context(procs.redis_server(work / "replica", appendonly=False))
        redis.Redis(port=replica.port).replicaof("127.0.0.1", server.port)
        while redis.Redis(port=replica.port).info("replication").get("master_link_status") != "up":
            time.sleep(0.05)
    proc = procs.bridge(config, server.url, work=work, workers=workers, tuning=setting)
    stack.callback(proc.stop)
    return proc.url, lambda: None, lambda: proc.cpu_seconds() + redis_cpu()


def _row(target: str, per: int, result: WrkResult, held: int | None, cpu_s: float) -> dict[str, Any]:
    alerts = result.requests * per
    return {
        "target": target,
        "alerts_per_request": per,
        "alerts_per_s": round(result.per_second(per), 1),
        "requests_per_s": round(result.per_second(), 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "requests": result.requests,
        "cpu_us_per_alert": round(cpu_s / alerts * 1e6, 1) if alerts else None,  # server (and its Redis)
        "errors": result.errors,
        "held_in_redis": held,  # ingress-only: intake stream length, warm-up included
    }


def _durability(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each durability setting's ingest against the default bridge of the same run and round
    (bridge.runtime.durability): per size, the median of the rounds' ratios and their range."""
    out: list[dict[str, Any]] = []
    for target in DURABILITY:
        for per in sorted({r["alerts_per_request"] for r in rows}):
            pairs = []
            for row in rows:
                if (row["target"], row["alerts_per_request"]) != (target, per):
                    continue
                same = ("bridge", per, row.get("round"))
                base = next((r for r in rows if (r["target"], r["alerts_per_request"], r.get("round")) == same), None)
                if base is not None:
                    pairs.append((row, base))
            if not pairs:
                continue
            ratios = sorted(q for q in (ratio(r["alerts_per_s"], b["alerts_per_s"]) for r, b in pairs) if q is not None)
            extra = sorted(
                r["cpu_us_per_alert"] - b["cpu_us_per_alert"]
                for r, b in pairs
                if r.get("cpu_us_per_alert") is not None and b.get("cpu_us_per_alert") is not None
            )
            out.append(
                {
                    "target": target,
                    "alerts_per_request": per,
                    "rounds": len(pairs),
                    "alerts_per_s_vs_default": round(statistics.median(ratios), 3) if ratios else None,
                    "alerts_per_s_vs_default_range": [ratios[0], ratios[-1]] if ratios else None,
                    "p99_ms": statistics.median(r["p99_ms"] for r, _ in pairs),
                    "default_p99_ms": statistics.median(b["p99_ms"] for _, b in pairs),
                    "cpu_us_per_alert_extra": round(statistics.median(extra), 1) if extra else None,
                }
            )
    return out


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for per in sorted({r["alerts_per_request"] for r in rows}):
        by = {
            target: statistics.median(
                r["alerts_per_s"] for r in rows if (r["target"], r["alerts_per_request"]) == (target, per)
            )
            for target in {r["target"] for r in rows if r["alerts_per_request"] == per}
        }  # the median of the rounds
        for mine in ("bridge", "ingress-only"):
            if mine in by:
                out.append(
                    {
                        "target": mine,
                        "alerts_per_request": per,
                        "vs_aiohttp": ratio(by[mine], by.get("aiohttp", 0.0)),
                        "vs_alertmanager": ratio(by[mine], by.get("alertmanager", 0.0)),
                    }
                )
    return out
