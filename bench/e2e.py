"""End to end: a steady rate of alerts in, the ServiceNow simulator answering after a fixed latency.

Each alert is its own incident, so each makes one desk call (the open). For each alert: the time
from the moment the bridge answered 202 to the moment the simulator answered the open, minus the
simulator's fixed latency, i.e. what the bridge adds between accepting an alert and the desk call.
The sender is open-loop (it keeps the schedule whatever the answers), as Alertmanager's are. The
first `warmup` seconds at the same rate are sent but not measured.
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import procs
from bench.common import TOKEN, am_alert, percentile, webhook_body, write_mapping


async def run(
    work: Path, *, rate: int, seconds: float, latency_ms: int, workers: int, warmup: float = 2.0
) -> dict[str, Any]:
    """`warmup` seconds at the same rate come first and are not measured (the bridge and the desk open
    their connections then), as wrk's warm-up in the ingest section."""
    warm = int(rate * warmup)
    total = max(1, int(rate * seconds)) + warm
    with ExitStack() as stack:
        server = stack.enter_context(procs.redis_server(work / "redis"))
        desk = procs.desk(work=work, latency_ms=latency_ms)
        stack.callback(desk.stop)
        config = write_mapping(work / "mapping.yaml", desk_url=desk.url, correlate=["{{ labels.bench_id }}"])
        bridge = procs.bridge(config, server.url, work=work, workers=workers)
        stack.callback(bridge.stop)
        redis_pid = server.process.pid if server.process else 0
        cpu_before = bridge.cpu_seconds(), procs.cpu_seconds(redis_pid)
        gc.disable()  # the sender reads the clock as each 202 comes: no pause of its own in between
        try:
            accepted, round_trips, failures, started, ended = await _send(bridge.url, total, rate)
        finally:
            gc.enable()
        calls = await _wait_for_desk(desk.url, set(accepted), within=30 + latency_ms * total / 1000 / 16)
        bridge_cpu = bridge.cpu_seconds() - cpu_before[0]
        redis_cpu = procs.cpu_seconds(redis_pid) - cpu_before[1]
    latency = latency_ms / 1000
    measured_trips = [ms for i, ms in round_trips if i >= warm]
    overhead, to_call = [], []
    opens = {c["key"]: c for c in calls if c["method"] == "POST"}
    for key, t_accepted in accepted.items():
        if int(key.rsplit("-", 1)[1]) < warm:
            continue
        call = opens.get(key)
        if call is not None:
            overhead.append((call["t_out"] - t_accepted - latency) * 1000)
            to_call.append((call["t_in"] - t_accepted) * 1000)
    return {
        "rate": rate,
        "seconds": seconds,
        "warmup_s": warmup,
        "warmup_alerts": warm,
        "latency_ms": latency_ms,
        "workers": workers,
        "sent": total - warm,
        "failed": failures,
        "achieved_rate": round(total / (ended - started), 1) if ended > started else 0.0,
        "matched": len(overhead),
        "desk_calls": len(calls),
        "overhead_p50_ms": round(percentile(overhead, 50), 2),
        "overhead_p99_ms": round(percentile(overhead, 99), 2),
        "overhead_max_ms": round(max(overhead, default=0.0), 2),
        "to_call_p50_ms": round(percentile(to_call, 50), 2),
        "to_call_p99_ms": round(percentile(to_call, 99), 2),
        "webhook_p50_ms": round(percentile(measured_trips, 50), 2),
        "webhook_p99_ms": round(percentile(measured_trips, 99), 2),
        # CPU from the first alert sent (warm-up included) to the last desk call seen, per alert: steadier
        # than latency near saturation, where a few per cent of CPU moves the p99 by tens of ms
        "bridge_cpu_us_per_alert": round(bridge_cpu / total * 1e6, 1),
        "redis_cpu_us_per_alert": round(redis_cpu / total * 1e6, 1),
    }


async def _send(url: str, total: int, rate: int) -> tuple[dict[str, float], list[tuple[int, float]], int, float, float]:
    """Post `total` one-alert webhooks on a fixed schedule; returns when each was accepted (wall clock)."""
    accepted: dict[str, float] = {}
    round_trips: list[tuple[int, float]] = []  # (alert number, ms)
    failures = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal failures
            key = f"e2e-{i}"
            labels = {"alertname": "E2E", "instance": f"host-{i}", "severity": "critical", "bench_id": key}
            body = webhook_body([am_alert(labels)])
            sent = time.perf_counter()
            async with session.post(url + "/webhook/alertmanager", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 202:
                    accepted[key] = time.time()
                    round_trips.append((i, (time.perf_counter() - sent) * 1000))
                else:
                    failures += 1

        tasks = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        started = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        ended = time.perf_counter()
    return accepted, round_trips, failures, started, ended


async def _wait_for_desk(desk_url: str, keys: set[str], within: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(desk_url + "/_bench/times") as resp:
                calls: list[dict[str, Any]] = orjson.loads(await resp.read())
            seen = {c["key"] for c in calls if c["method"] == "POST"}
            if keys <= seen or time.monotonic() > deadline:
                return calls
            await asyncio.sleep(0.5)
