"""Storm: one outage, hosts x names alerts firing at once, then all of them clearing.

The alerts arrive as Alertmanager sends a storm: webhook groups of 50, as fast as 16 senders can
post. Correlated by host (default; `--storm-correlate`), so 1,000 hosts make 1,000 incidents of
100 alerts each. Measured: the desk calls made (against the bound of one open and one resolve per
incident plus the notes, coalesced), the time until every ticket is open with its notes and until
every ticket is resolved, Redis memory per open alert, and the bridge's resident memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import procs
from bench.common import TOKEN, am_alert, webhook_body, write_mapping
from bridge.core import keys

CORRELATE = {
    "host": ["{{ labels.instance }}"],
    "alertname": ["{{ labels.alertname }}"],
    "alert": ["{{ labels.alertname }}", "{{ labels.instance }}"],
}
PER_REQUEST, SENDERS = 50, 16
RESOLVE_AFTER = "2s"


def alerts(hosts: int, names: int, *, resolved: bool = False) -> list[dict[str, Any]]:
    out = []
    for h in range(hosts):
        for n in range(names):
            labels = {"alertname": f"Storm{n}", "instance": f"host-{h}:9100", "job": "node", "severity": "critical"}
            if resolved:
                out.append(am_alert(labels, status="resolved", ends="2026-01-01T00:10:00Z"))
            else:
                out.append(am_alert(labels))
    return out


async def run(
    work: Path, *, hosts: int, names: int, correlate: str, latency_ms: int, workers: int, flush: str = "1s"
) -> dict[str, Any]:
    """`flush` is the route's `ticket.flush_interval` (`--storm-flush`, 1 s by default: the coalescing
    the README sets for storms). With 0 s a note goes out as soon as its incident is free, so alerts
    that arrive while the open is at the desk make a note of their own and the bound is exceeded
    (4,389 desk calls against 4,000 in `*-s5-storm-flush0s-defer`)."""
    total = hosts * names
    incidents = {"host": hosts, "alertname": names, "alert": total}[correlate]
    with ExitStack() as stack:
        server = stack.enter_context(procs.redis_server(work / "redis"))
        desk = procs.desk(work=work, latency_ms=latency_ms)
        stack.callback(desk.stop)
        config = write_mapping(
            work / "mapping.yaml", desk_url=desk.url, correlate=CORRELATE[correlate], resolve_after=RESOLVE_AFTER,
            flush_interval=flush,
        )  # fmt: skip
        bridge = procs.bridge(config, server.url, work=work, workers=workers, tuning={"claim_every_s": "1"})
        stack.callback(bridge.stop)
        redis = aioredis.Redis.from_url(server.url)
        try:
            base_memory = int((await redis.info("memory"))["used_memory"])
            started = time.perf_counter()
            await _post_all(bridge.url, alerts(hosts, names))
            fire_send_s = time.perf_counter() - started
            fire_ok = await _settled(redis, desk.url, incidents, want="open", within=600)
            fire_settled_s = time.perf_counter() - started
            intake_left = await _wait_trimmed(redis, within=15)
            open_memory = int((await redis.info("memory"))["used_memory"])
            started = time.perf_counter()
            await _post_all(bridge.url, alerts(hosts, names, resolved=True))
            resolve_ok = await _settled(redis, desk.url, incidents, want="resolved", within=600)
            resolve_settled_s = time.perf_counter() - started
            calls = await _get(desk.url + "/_bench/times")
        finally:
            await redis.aclose()
        rss, peak = bridge.rss_bytes(), bridge.peak_rss_bytes()
    kinds = [c["kind"] for c in calls]
    notes_entries = 2 * (total - incidents)  # every alert but an incident's first one is a note, twice
    bound = 2 * incidents + incidents * 2 * math.ceil((total / incidents - 1) / 100)  # 100: delivery's batch
    return {
        "alerts": total,
        "hosts": hosts,
        "names": names,
        "correlate": correlate,
        "latency_ms": latency_ms,
        "workers": workers,
        "incidents": incidents,
        "desk_calls": len(calls),
        "opens": kinds.count("open"),
        "notes": kinds.count("note"),
        "resolves": kinds.count("resolve"),
        "other_calls": len(calls) - kinds.count("open") - kinds.count("note") - kinds.count("resolve"),
        "note_entries": notes_entries,
        "desk_call_bound": bound,
        "fire_send_s": round(fire_send_s, 2),
        "fire_send_rate": round(total / fire_send_s, 1) if fire_send_s else 0.0,
        "fire_settled": fire_ok,
        "fire_settled_s": round(fire_settled_s, 2),
        "resolve_after": RESOLVE_AFTER,
        "flush_interval": flush,
        "resolve_settled": resolve_ok,
        "resolve_settled_s": round(resolve_settled_s, 2),
        "intake_entries_at_measure": intake_left,
        "bytes_per_open_alert": round((open_memory - base_memory) / total, 1),
        "redis_open_mb": round((open_memory - base_memory) / 2**20, 1),
        "bridge_rss_mb": round(rss / 2**20, 1),
        "bridge_peak_rss_mb": round(peak / 2**20, 1),
    }


async def _post_all(url: str, items: list[dict[str, Any]]) -> None:
    bodies = [webhook_body(items[i : i + PER_REQUEST]) for i in range(0, len(items), PER_REQUEST)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def sender() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                for _ in range(20):  # a 503 is retried, as Alertmanager would
                    async with session.post(url + "/webhook/alertmanager", data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 202:
                            break
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(sender() for _ in range(SENDERS)))


async def _settled(redis: aioredis.Redis, desk_url: str, incidents: int, *, want: str, within: float) -> bool:
    """Every incident's ticket in the wanted desk state, and no work left: intake, outboxes, ready queue."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        groups = await redis.xinfo_groups(keys.INTAKE)
        if any(g.get("lag") or g.get("pending") for g in groups):
            continue
        if await redis.zcard(keys.READY):
            continue
        records = (await _get(desk_url + "/_sim/records"))["incidents"]
        states = [r["record"].get("state") for r in records]
        resolved = sum(1 for s in states if s in ("6", "7"))
        if len(records) >= incidents and (resolved == len(records) if want == "resolved" else True):
            if want == "open" and not await _outboxes_empty(redis):
                continue
            return True
    return False


async def _outboxes_empty(redis: aioredis.Redis) -> bool:
    bases: list[bytes] = await redis.zrange(keys.INCIDENTS, 0, -1)  # type: ignore[assignment]
    async with redis.pipeline(transaction=False) as pipe:
        for base in bases:
            pipe.llen(keys.IncidentKeys(base.decode()).outbox)
        lengths = await pipe.execute()
    return not any(lengths)


async def _wait_trimmed(redis: aioredis.Redis, within: float) -> int:
    """Let the engine trim acknowledged intake entries (it does so every claim_every_s)."""
    deadline = time.monotonic() + within
    length = int(await redis.xlen(keys.INTAKE))
    while length > 1000 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        length = int(await redis.xlen(keys.INTAKE))
    return length


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return orjson.loads(await resp.read())
