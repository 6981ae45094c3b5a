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

Cases, the alerts sent (every target gets the same ones, Alertmanager its own API's form of them):
  unique        every alert one no earlier request carried (`bench/alerts.lua`), correlated by alertname:
                new members of a few incidents, each a note at the ServiceNow simulator (no latency)
  repeats       a fixed set of REPEAT_POOL alerts sent over and over, as an Alertmanager HA pair and its
                repeat_interval do; sent once before wrk runs and waited for until every one is an open
                incident with its ticket: what wrk sends then are repeats of open alerts
  new           every alert unique and its own incident (correlated by instance): each opens a ticket,
                at the generic webhook desk against `bench/trivial.py`, which keeps nothing
The durability targets run in the unique case only (they are compared with `bridge` of that case).
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import redis

from bench import procs
from bench.common import TOKEN, WrkResult, ratio, repeat_alert, write_mapping, write_trivial_desk_mapping, wrk
from bridge.core import keys

DURABILITY: dict[str, dict[str, str]] = {
    "bridge-fsync": {"durability": "fsync"},
    "bridge-wait1": {"wait_replicas": "1"},
}
TARGETS = ("bridge", "ingress-only", "aiohttp", "alertmanager", *DURABILITY)
CASES = ("unique", "repeats", "new")
REPEAT_POOL = 500  # the open alerts the repeats case re-sends (issue 35: "repeats of 500 open alerts")


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
    cases: tuple[str, ...] = CASES,
    pool: int = REPEAT_POOL,
) -> dict[str, Any]:
    """Each target under the same wrk load, one after another in the order given, for each payload size
    (`targets`, a subset of TARGETS: the durability settings are compared with `bridge` of the same run).

    With `rounds` > 1 the sequence of targets runs that many times over, so that each durability setting
    is compared with the default run just before it, round by round: on a machine shared with other
    work the load drifts over minutes, and the median of the rounds' ratios is steadier than one."""
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown ingest targets {sorted(unknown)}: choose among {', '.join(TARGETS)}")
    if set(cases) - set(CASES):
        raise ValueError(f"unknown ingest cases {sorted(set(cases) - set(CASES))}: choose among {', '.join(CASES)}")
    rows: list[dict[str, Any]] = []
    log = work / "wrk.log"
    if "alertmanager" in targets and procs.alertmanager_binary() is None:
        targets = tuple(t for t in targets if t != "alertmanager")
    for case in cases:
        mode = f"repeat:{pool}" if case == "repeats" else "unique"
        chosen = targets if case == "unique" else tuple(t for t in targets if t not in DURABILITY)
        for per in sizes:
            for turn, target in ((turn, target) for turn in range(rounds) for target in chosen):
                with ExitStack() as stack:
                    where = work / f"{case}-{target}-{per}-{turn}"
                    url, check, cpu, _, redis_cpu = start(stack, target, where, workers, case)
                    fmt = "amapi" if target == "alertmanager" else "webhook"
                    path = "/api/v2/alerts" if target == "alertmanager" else "/webhook/alertmanager"
                    opened = preopen(url + path, fmt, pool, check) if case == "repeats" else None
                    if warmup_s > 0:
                        wrk(url + path, fmt=fmt, per_request=per, connections=connections, seconds=warmup_s,
                            tag="warm", log=log, mode=mode)  # fmt: skip
                    cpu_before, redis_before, xadds_before = cpu(), redis_cpu(), check.xadds()
                    result = wrk(url + path, fmt=fmt, per_request=per, connections=connections, seconds=seconds,
                                 log=log, mode=mode)  # fmt: skip
                    cpu_used, redis_used = cpu() - cpu_before, redis_cpu() - redis_before
                    row = _row(target, per, result, check.held(), cpu_used)
                    alerts = result.requests * per
                    redis_us = round(redis_used / alerts * 1e6, 1) if alerts and redis_used else None
                    xadds = check.xadds() - xadds_before if xadds_before is not None else None
                    written = round(xadds / alerts * 1000, 1) if alerts and xadds is not None else None
                    rows.append({"case": case, **row, "redis_cpu_us_per_alert": redis_us, "round": turn,
                                 "preopened": opened, "xadds_per_1000_alerts": written})  # fmt: skip
    return {"rows": rows, "ratios": _ratios(rows), "durability": _durability(rows), "workers": workers,
            "connections": connections, "seconds": seconds, "rounds": rounds, "cases": list(cases),
            "repeat_pool": pool}  # fmt: skip


class _Check:
    """What a target holds, read from its Redis (none for the baselines): the intake stream's length
    (ingress-only) and, for a bridge, how many incidents have their ticket."""

    def __init__(self, client: redis.Redis | None = None, *, engine: bool = False) -> None:
        self.client, self.engine = client, engine

    def held(self) -> int | None:
        if self.client is None or self.engine:
            return None
        return int(self.client.xlen(keys.INTAKE))

    def xadds(self) -> int | None:
        """XADDs its Redis ran so far (scripts' included): the intake's writes, and the engine's streams'."""
        if self.client is None:
            return None
        return int(self.client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))

    def ticketed(self) -> int | None:
        """Incidents open with a ticket recorded (their open delivered); None where there is no engine."""
        if self.client is None or not self.engine:
            return None
        bases = [b.decode() for b in self.client.zrange(keys.INCIDENTS, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for base in bases:
            pipe.hmget(keys.IncidentKeys(base).state, "state", "epoch")
        states = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for base, (_state, epoch) in zip(bases, states, strict=True):
            pipe.hexists(keys.IncidentKeys(base).state, f"ticket:{(epoch or b'').decode()}")
        return sum(1 for (state, _), has in zip(states, pipe.execute(), strict=True) if state == b"open" and has)


def preopen(url: str, fmt: str, pool: int, check: _Check, timeout_s: float = 120.0) -> int | None:
    """Send the repeats case's fixed set once, 50 alerts a request, before wrk repeats it; for a bridge,
    wait until every one is an open incident with its ticket. Returns how many are (None: not a bridge)."""
    import orjson

    from bench.common import webhook_body

    alerts = [repeat_alert(i, fmt) for i in range(pool)]
    for start in range(0, pool, 50):
        group = alerts[start : start + 50]
        body = orjson.dumps(group) if fmt == "amapi" else webhook_body(group)
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status >= 300:
                raise RuntimeError(f"pre-open: {url} answered {answer.status}")
    deadline = time.monotonic() + timeout_s
    while True:
        opened = check.ticketed()
        if opened is None or opened >= pool:
            return opened
        if time.monotonic() > deadline:
            raise RuntimeError(f"pre-open: {opened} of {pool} incidents have their ticket after {timeout_s} s")
        time.sleep(0.2)


class Started(NamedTuple):
    url: str
    check: _Check  # what it holds
    cpu: Callable[[], float]  # its CPU seconds so far, its Redis's included
    proc: procs.Proc
    redis_cpu: Callable[[], float] = lambda: 0.0  # its Redis's alone


def start(stack: ExitStack, target: str, work: Path, workers: int, case: str = "unique") -> Started:
    """Start one target for a case (stopped when `stack` closes).

    The CPU counts the target's own processes and, where it has one, its Redis (not the desk's).
    """
    work.mkdir(parents=True, exist_ok=True)
    if target == "aiohttp":
        proc = procs.trivial(work=work, workers=workers)
        stack.callback(proc.stop)
        return Started(proc.url, _Check(), proc.cpu_seconds, proc)
    if target == "alertmanager":
        proc = procs.alertmanager(work=work)
        stack.callback(proc.stop)
        return Started(proc.url, _Check(), proc.cpu_seconds, proc)
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
        return Started(proc.url, _Check(client), lambda: proc.cpu_seconds() + redis_cpu(), proc, redis_cpu)
    if case == "unique":  # new members of a few incidents (by alertname): a note each
        desk = procs.desk(work=work, latency_ms=0)
        stack.callback(desk.stop)
        config = write_mapping(work / "mapping.yaml", desk_url=desk.url, correlate=["{{ labels.alertname }}"])
    else:  # an incident per alert, at a desk that keeps nothing
        desk = procs.trivial(work=work, workers=1)
        stack.callback(desk.stop)
        config = write_trivial_desk_mapping(work / "mapping.yaml", desk_url=desk.url,
                                            correlate=["{{ labels.instance }}"])  # fmt: skip
    setting = DURABILITY.get(target, {})
    if "wait_replicas" in setting:  # a replica in sync, that WAIT waits for
        replica = stack.enter_context(procs.redis_server(work / "replica", appendonly=False))
        redis.Redis(port=replica.port).replicaof("127.0.0.1", server.port)
        while redis.Redis(port=replica.port).info("replication").get("master_link_status") != "up":
            time.sleep(0.05)
    proc = procs.bridge(config, server.url, work=work, workers=workers, tuning=setting)
    stack.callback(proc.stop)
    return Started(proc.url, _Check(client, engine=True), lambda: proc.cpu_seconds() + redis_cpu(), proc, redis_cpu)


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
    rows = [r for r in rows if r.get("case", "unique") == "unique"]  # where the durability targets run
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
    """Per case and size, the bridge's and the request path's alerts/s against each baseline of the same
    case (the median of the rounds), with the CPU per alert of the bridge and of Alertmanager beside."""
    out: list[dict[str, Any]] = []
    for case in dict.fromkeys(r.get("case", "unique") for r in rows):
        mine_rows = [r for r in rows if r.get("case", "unique") == case]
        for per in sorted({r["alerts_per_request"] for r in mine_rows}):
            same = [r for r in mine_rows if r["alerts_per_request"] == per]

            def median(target: str, field: str, same: list[dict[str, Any]] = same) -> float | None:
                values = [r[field] for r in same if r["target"] == target and r.get(field) is not None]
                return statistics.median(values) if values else None

            for mine in ("bridge", "ingress-only"):
                rate = median(mine, "alerts_per_s")
                if rate is not None:
                    out.append(
                        {
                            "case": case,
                            "target": mine,
                            "alerts_per_request": per,
                            "vs_aiohttp": ratio(rate, median("aiohttp", "alerts_per_s") or 0.0),
                            "vs_alertmanager": ratio(rate, median("alertmanager", "alerts_per_s") or 0.0),
                            "cpu_us_per_alert": median(mine, "cpu_us_per_alert"),
                            "alertmanager_cpu_us_per_alert": median("alertmanager", "cpu_us_per_alert"),
                        }
                    )
    return out
