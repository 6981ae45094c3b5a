"""Engine: drain a backlog of N alerts through routing and the Lua step, against the state-store ceiling.

One engine (as in one bridge process) reads the intake stream in its batches, routes each alert
(matchers, Jinja correlation key), runs apply_alert.lua for each in one pipeline, records the
decisions and XACKs. The ceiling replays the very EVALSHA calls the engine made (same arguments,
same order, same batches, as many in flight as the engine keeps: `tuning.engine_readers`) as bare
redis-py pipelines on an emptied Redis: what Redis and the client library cost for the decisions
alone, with no routing, no stream and no bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import procs
from bench.common import ratio, write_mapping
from bridge.core import config as config_mod
from bridge.core import keys
from bridge.core.models import Alert, Severity
from bridge.engine.consumer import Engine
from bridge.process.server import collect_less
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import AlertStep, open_scripts

CORRELATE = ["{{ labels.alertname }}", "{{ labels.instance | default('') }}"]  # as bridge/samples/example.yaml


def backlog(n: int, *, hosts: int = 1000) -> list[bytes]:
    """N distinct firing alerts (intake entries as the ingress writes them), over `hosts` hosts."""
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        host, name = i % hosts, i // hosts
        labels = {"alertname": f"Alert{name}", "instance": f"host-{host}:9100", "job": "node", "severity": "critical"}
        alert = Alert(
            source="alertmanager",
            kind="alertmanager",
            identity=f"{i:016x}",
            name=labels["alertname"],
            resource=labels["instance"],
            severity=Severity.CRITICAL,
            summary=f"{labels['alertname']} on {labels['instance']}",
            labels=labels,
            annotations={"summary": "synthetic"},
            starts_at=now - timedelta(seconds=60),
            received_at=now,
            links=["http://prometheus:9090/graph"],
        )
        out.append(alert.model_dump_json().encode())
    return out


async def run(work: Path, *, alerts: int, readers: int | None = None) -> dict[str, Any]:
    config = config_mod.load(
        [str(write_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9", correlate=CORRELATE))]
    )
    entries = backlog(alerts)
    tuning = config_mod.tuning()  # BRIDGE_<FIELD> variables apply, as for `bridge serve`
    readers = readers or tuning.engine_readers  # batches in flight, as Engine.run keeps them
    with procs.redis_server(work / "redis") as server:
        scripts = open_scripts(server.url, timeout=30)  # as `bridge serve` opens them
        redis = scripts.redis
        try:
            await scripts.load()
            rt = Runtime(redis, scripts, config, tuning=tuning, consumer="bench")
            engine = Engine(rt)
            await engine.ensure_group()
            await redis.config_resetstat()
            for start in range(0, len(entries), 1000):
                async with redis.pipeline(transaction=False) as pipe:
                    for entry in entries[start : start + 1000]:
                        pipe.xadd(keys.INTAKE, {"a": entry})
                    await pipe.execute()

            calls: list[tuple[Any, list[tuple[AlertStep, int]]]] = []  # per engine pipeline: its calls
            real_apply = scripts.apply_alert

            async def recording(step: AlertStep, now_ms: int, pipe: Any = None) -> Any:
                if pipe is not None:
                    if not calls or calls[-1][0] is not pipe:
                        calls.append((pipe, []))
                    calls[-1][1].append((step, now_ms))
                return await real_apply(step, now_ms, pipe)

            scripts.apply_alert = recording  # type: ignore[method-assign]
            collect_less()  # as `bridge serve` does once started
            await redis.config_resetstat()  # the backlog's XADDs are not the engine's
            done, started, cpu_started = 0, time.perf_counter(), time.process_time()

            async def reader() -> None:  # as Engine.run's readers, without the housekeeping
                nonlocal done
                while done < alerts:
                    got = await engine.step(block_ms=None)
                    if not got:
                        return
                    done += got

            await asyncio.gather(*(reader() for _ in range(readers)))
            engine_s = time.perf_counter() - started
            engine_cpu_s = time.process_time() - cpu_started
            redis_engine_us = await _lua_usec(redis)
            scripts.apply_alert = real_apply  # type: ignore[method-assign]
            pending = await redis.xpending(keys.INTAKE, keys.ENGINE_GROUP)
            outboxes = await redis.zcard(keys.READY)

            await redis.flushall()
            await scripts.load()
            await redis.config_resetstat()
            pipelines = []
            for _, batch in calls:
                pipe = redis.pipeline(transaction=False)
                for step, now_ms in batch:
                    await scripts.apply_alert(step, now_ms, pipe)
                pipelines.append(pipe)
            calls_made = sum(len(b) for _, b in calls)

            async def replay(mine: list[Any]) -> None:  # as many pipelines in flight as the engine had
                for pipe in mine:
                    await pipe.execute()

            started = time.perf_counter()
            await asyncio.gather(*(replay(pipelines[i::readers]) for i in range(readers)))
            pipeline_s = time.perf_counter() - started
            redis_pipeline_us = await _lua_usec(redis)
        finally:
            await scripts.aclose()
            await redis.aclose()
    engine_rate = done / engine_s if engine_s else 0.0
    pipeline_rate = calls_made / pipeline_s if pipeline_s else 0.0
    return {
        "alerts": alerts,
        "drained": done,
        "left_pending": int(pending.get("pending", 0)) if pending else 0,
        "incidents_with_work": outboxes,
        "batch": tuning.batch,
        "readers": readers,
        "engine_s": round(engine_s, 4),
        "engine_alerts_per_s": round(engine_rate, 1),
        "engine_cpu_us_per_alert": round(engine_cpu_s / done * 1e6, 1) if done else None,  # the engine's Python
        "evalsha_calls": calls_made,
        "pipeline_s": round(pipeline_s, 4),
        "pipeline_alerts_per_s": round(pipeline_rate, 1),
        "vs_pipeline": ratio(engine_rate, pipeline_rate),
        "redis_cpu_s_engine": round(redis_engine_us / 1e6, 3),  # INFO commandstats, all commands
        "redis_cpu_s_pipeline": round(redis_pipeline_us / 1e6, 3),
    }


async def _lua_usec(redis: aioredis.Redis) -> float:
    """Microseconds Redis spent executing commands since the last call (then resets the counters)."""
    stats = await redis.info("commandstats")
    await redis.config_resetstat()
    return float(sum(v["usec"] for v in stats.values()))
