"""The engine on repeats: CPU per alert to drain a backlog of repeats of open alerts, in-process.

    python -m bench.drain_repeats [--alerts 30000] [--rounds 3]

The ingest section's repeats case (`bench/ingest.py`) measures the whole bridge under wrk, where the
engine shares the cores with the request path and, at 50 alerts per request, falls behind: its CPU per
alert there depends on how much of the backlog it drained. This measures the engine's part alone, as
the engine section (`bench/drain.py`) does for unique alerts: REPEAT_POOL alerts (`bench.common.repeat_alert`,
one incident each, the ingest section's mapping for that case) opened first, then a backlog of repeats
of them, drained by one `Engine` with its readers; the engine's process CPU and its Redis's CPU per alert.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop

from bench import procs
from bench.common import write_trivial_desk_mapping
from bench.ingest import REPEAT_POOL
from bridge.core import config as config_mod
from bridge.core import keys, logs
from bridge.core.models import Alert, Severity
from bridge.engine.consumer import Engine
from bridge.process.server import collect_less
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import open_scripts


def entries(n: int, pool: int = REPEAT_POOL) -> list[bytes]:
    """N intake entries, as the ingress writes them: alert k % pool of the repeats case, received now."""
    now = datetime.now(UTC)
    out = []
    for k in range(n):
        i = k % pool
        labels = {"alertname": f"BenchAlert{i % 100}", "instance": f"host-rep-{i}", "job": "node",
                  "severity": "critical", "run": "repeats"}  # fmt: skip
        alert = Alert(
            source="alertmanager", kind="alertmanager", identity=f"{i:016x}", name=labels["alertname"],
            resource=labels["instance"], severity=Severity.CRITICAL, summary=f"bench alert rep-{i}",
            description="synthetic load", labels=labels,
            annotations={"summary": f"bench alert rep-{i}", "description": "synthetic load"},
            starts_at=datetime(2026, 1, 1, tzinfo=UTC), received_at=now + timedelta(milliseconds=k),
            links=["http://prometheus:9090/graph?g0.expr=up"],
            raw={"groupKey": "{}:{}", "externalURL": "http://alertmanager:9093", "receiver": "bridge"},
        )  # fmt: skip
        out.append(alert.model_dump_json().encode())
    return out


async def once(work: Path, alerts: int) -> dict[str, float]:
    mapping = write_trivial_desk_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9",
                                         correlate=["{{ labels.instance }}"])  # fmt: skip
    config = config_mod.load([str(mapping)])
    tuning = config_mod.tuning()
    with procs.redis_server(work / "redis") as server:
        scripts = open_scripts(server.url, timeout=30)
        redis = scripts.redis
        try:
            await scripts.load()
            engine = Engine(Runtime(redis, scripts, config, tuning=tuning, consumer="bench"))
            await engine.ensure_group()

            async def fill(items: list[bytes]) -> None:
                for start in range(0, len(items), 1000):
                    async with redis.pipeline(transaction=False) as pipe:
                        for entry in items[start : start + 1000]:
                            pipe.xadd(keys.INTAKE, {"a": entry})
                        await pipe.execute()

            await fill(entries(REPEAT_POOL))  # opened: one incident each
            while await engine.step(block_ms=None):
                pass
            await fill(entries(alerts))
            collect_less()  # as `bridge serve` does once started
            redis_pid = server.process.pid if server.process else 0
            redis_started, cpu_started = procs.cpu_seconds(redis_pid), time.process_time()
            started, done = time.perf_counter(), 0

            async def reader() -> None:  # as Engine.run's readers, without the housekeeping
                nonlocal done
                while got := await engine.step(block_ms=None):
                    done += got

            await asyncio.gather(*(reader() for _ in range(tuning.engine_readers)))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            redis_cpu = procs.cpu_seconds(redis_pid) - redis_started
        finally:
            await scripts.aclose()
            await redis.aclose()
    return {"drained": done, "alerts_per_s": done / seconds, "engine_cpu_us_per_alert": cpu / done * 1e6,
            "redis_cpu_us_per_alert": redis_cpu / done * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_repeats")
    parser.add_argument("--alerts", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.install()
    logs.configure(level="info")  # as `bridge serve` does
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-repeats-") as tmp:
            r = asyncio.run(once(Path(tmp), args.alerts))
        print(f"repeats drained {r['drained']:,.0f}: {r['alerts_per_s']:,.0f} alerts/s, engine CPU "
              f"{r['engine_cpu_us_per_alert']:.1f} µs/alert, its Redis {r['redis_cpu_us_per_alert']:.1f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
