"""The engine on repeats: CPU per alert to drain a backlog of repeats of open alerts, in-process.

    python -m bench.drain_repeats [--alerts 30000] [--rounds 3]
    python -m bench.drain_repeats --rate 1000 [--seconds 5] [--lingers 0,10]

The ingest section's repeats case (`bench/ingest.py`) measures the whole bridge under wrk, where the
engine shares the cores with the request path and, at 50 alerts per request, falls behind: its CPU per
alert there depends on how much of the backlog it drained. This measures the engine's part alone, as
the engine section (`bench/drain.py`) does for unique alerts: REPEAT_POOL alerts (`bench.common.repeat_alert`,
one incident each, the ingest section's mapping for that case) opened first, then a backlog of repeats
of them, drained by one `Engine` with its readers; the engine's process CPU and its Redis's CPU per alert.

With `--rate`, the repeats arrive at that many per second instead (a thread writes them every few
milliseconds), taken by `Engine.run` as a bridge runs it, once per `BRIDGE_ENGINE_LINGER_MS` setting
of `--lingers`, one after the other: the engine's (event-loop thread's) CPU and its Redis's per alert,
and the batches' mean size. Repeats that trickle in are what reaches the engine from the ingress's
repeat window (one written copy per open alert per window).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import threading
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


def batches(engine: Engine) -> float:
    """The engine's batches so far (`bridge_engine_batch_alerts`' count)."""
    samples = (s for m in engine.rt.metrics.engine_batch.collect() for s in m.samples)
    return next(s.value for s in samples if s.name.endswith("_count"))


async def trickle(work: Path, rate: int, seconds: float, linger_ms: int) -> dict[str, float]:
    """Repeats written at `rate` per second for `seconds`, taken by a running engine lingering `linger_ms`."""
    import redis as sync_redis

    mapping = write_trivial_desk_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9",
                                         correlate=["{{ labels.instance }}"])  # fmt: skip
    config = config_mod.load([str(mapping)])
    tuning = dataclasses.replace(config_mod.tuning(), engine_linger_ms=linger_ms)
    with procs.redis_server(work / "redis") as server:
        scripts = open_scripts(server.url, timeout=30)
        redis = scripts.redis
        feeder = sync_redis.Redis.from_url(server.url)
        try:
            await scripts.load()
            engine = Engine(Runtime(redis, scripts, config, tuning=tuning, consumer="bench"))
            await engine.ensure_group()
            opened = entries(REPEAT_POOL)
            feeder.xadd(keys.INTAKE, {"a": opened[0]})  # the stream, before the engine reads it
            for start in range(0, len(opened), 100):
                with feeder.pipeline(transaction=False) as pipe:
                    for entry in opened[start : start + 100]:
                        pipe.xadd(keys.INTAKE, {"a": entry})
                    pipe.execute()
            while await engine.step(block_ms=None):
                pass
            load = entries(int(rate * seconds))
            tick = 0.005  # a write every 5 ms: about as smooth as requests spread over a second

            def feed() -> None:
                per, begun = max(1, int(rate * tick)), time.perf_counter()
                for n, start in enumerate(range(0, len(load), per)):
                    time.sleep(max(0.0, begun + n * tick - time.perf_counter()))
                    with feeder.pipeline(transaction=False) as pipe:
                        for entry in load[start : start + per]:
                            pipe.xadd(keys.INTAKE, {"a": entry})
                        pipe.execute()

            stop = asyncio.Event()
            batches_before = batches(engine)
            collect_less()
            redis_pid = server.process.pid if server.process else 0
            redis_started, cpu_started = procs.cpu_seconds(redis_pid), time.thread_time()
            running = asyncio.create_task(engine.run(stop))
            thread = threading.Thread(target=feed)
            thread.start()
            await asyncio.to_thread(thread.join)  # all written; then all taken
            while True:
                lag = (await redis.xinfo_groups(keys.INTAKE))[0]["lag"]
                if not lag and not (await redis.xpending(keys.INTAKE, keys.ENGINE_GROUP))["pending"]:
                    break
                await asyncio.sleep(0.01)
            cpu, redis_cpu = time.thread_time() - cpu_started, procs.cpu_seconds(redis_pid) - redis_started
            stop.set()
            await running
        finally:
            feeder.close()
            await scripts.aclose()
            await redis.aclose()
    done = len(load)
    return {"linger_ms": linger_ms, "alerts": done, "engine_cpu_us_per_alert": cpu / done * 1e6,
            "redis_cpu_us_per_alert": redis_cpu / done * 1e6,
            "alerts_per_batch": done / max(batches(engine) - batches_before, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_repeats")
    parser.add_argument("--alerts", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=0, help="repeats per second, taken as they come (0: a backlog)")
    parser.add_argument("--seconds", type=float, default=5.0, help="with --rate: how long they come")
    parser.add_argument("--lingers", default="0,10", help="with --rate: BRIDGE_ENGINE_LINGER_MS settings, in turn")
    args = parser.parse_args()
    uvloop.install()
    logs.configure(level="info")  # as `bridge serve` does
    if args.rate:
        for _ in range(args.rounds):
            for linger in (int(x) for x in args.lingers.split(",")):
                with tempfile.TemporaryDirectory(prefix="bench-trickle-") as tmp:
                    t = asyncio.run(trickle(Path(tmp), args.rate, args.seconds, linger))
                print(f"{args.rate}/s, linger {linger} ms: engine CPU {t['engine_cpu_us_per_alert']:.1f} µs/alert,"
                      f" its Redis {t['redis_cpu_us_per_alert']:.1f}; {t['alerts_per_batch']:.1f} alerts a batch",
                      flush=True)  # fmt: skip
        return
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-repeats-") as tmp:
            r = asyncio.run(once(Path(tmp), args.alerts))
        print(f"repeats drained {r['drained']:,.0f}: {r['alerts_per_s']:,.0f} alerts/s, engine CPU "
              f"{r['engine_cpu_us_per_alert']:.1f} µs/alert, its Redis {r['redis_cpu_us_per_alert']:.1f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
