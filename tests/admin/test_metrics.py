"""/metrics: counters move as alerts flow, shared-state gauges are read in the background, promtool agrees."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import subprocess
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

from bridge.admin.upkeep import Upkeep
from bridge.core import keys
from bridge.process.app import make_app
from bridge.process.server import collect_less
from bridge.runtime.context import Runtime
from bridge.runtime.metrics import INCIDENT_SCAN_LIMIT
from bridge.runtime.scripts import open_scripts
from tests.admin.test_hostile_input import loop_lag
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post, require, start_app
from tests.running import base_url, scrape, value, webhook_url


@contextlib.contextmanager
def collector_as_served() -> Iterator[None]:
    """The garbage collector as `bridge serve` runs it (`collect_less`: what exists is frozen, the young
    generation collected rarely), so a lag measured here is the code's and not a full collection of the
    test process's own garbage; restored after."""
    threshold = gc.get_threshold()
    gc.collect()
    collect_less()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_metrics_change_as_alerts_flow(snow: Snow, make_bridge: Any) -> None:
    """Received alerts, decisions, desk calls, their latency and open incidents all show in a scrape."""
    bridge = await make_bridge(mapping(snow.url))
    _, before = await scrape(base_url(bridge))
    assert value(before, "bridge_alerts_received_total", source="alertmanager", status="firing") == 0
    assert value(before, "bridge_incidents", state="open") == 0
    assert value(before, "bridge_redis_up") == 1

    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sda1")))
    await eventually(lambda: snow.incidents())
    await asyncio.sleep(0.3)
    _, after = await scrape(base_url(bridge))
    assert value(after, "bridge_alerts_received_total", source="alertmanager", status="firing") == 2
    assert value(after, "bridge_decisions_total", route="prometheus", decision="OPEN") == 1
    assert value(after, "bridge_desk_calls_total", desk="snow", action="open", outcome="ok") == 1
    assert value(after, "bridge_desk_call_duration_seconds_count", desk="snow", action="open") == 1
    assert value(after, "bridge_incidents", state="open") == 1
    assert value(after, "bridge_outbox_incidents") == 0
    assert value(after, "bridge_intake_pending_entries") == 0


async def test_backlog_gauges_are_read_from_redis(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """Undecided intake entries, queued desk actions and dead letters are counted from Redis (every gauges_every_s)."""
    slow_claim = dataclasses.replace(FAST, claim_idle_ms=600_000)
    bridge = await make_bridge(mapping(snow.url), tuning=slow_claim)
    snow.faults.set(fail_5xx=1000)  # the desk is down: actions wait in the outbox
    await post(webhook_url(bridge), group(alert()))
    await eventually(lambda: redis.zcard(keys.READY))
    # A consumer that read an entry and died: it stays pending (the long claim idle keeps it there).
    # One transaction, so that the running engine cannot read the entry first.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(keys.INTAKE, {"a": b"{}"})
        pipe.xreadgroup(keys.ENGINE_GROUP, "ghost", {keys.INTAKE: ">"}, count=1)
        await pipe.execute()
    await redis.xadd(keys.DLQ, {"kind": "bad_alert", "reason": "test"})
    await asyncio.sleep(0.2)

    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_outbox_incidents") == 1
    assert value(samples, "bridge_outbox_actions") >= 1
    assert value(samples, "bridge_dead_letters") == await redis.xlen(keys.DLQ) == 1
    assert value(samples, "bridge_intake_pending_entries") == 1
    assert value(samples, "bridge_intake_lag_seconds") > 0
    assert value(samples, "bridge_desk_calls_total", desk="snow", action="open", outcome="transient") >= 1


async def test_rate_limited_desk_calls_count_as_waits(snow: Snow, make_bridge: Any) -> None:
    """A 429 with Retry-After is a rate_limited call and one rate-limit wait of the announced length."""
    snow.faults.set(rate_limit=1, retry_after=1)
    bridge = await make_bridge(mapping(snow.url))
    await post(webhook_url(bridge), group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_desk_calls_total", desk="snow", action="open", outcome="rate_limited") == 1
    assert value(samples, "bridge_desk_rate_limit_waits_total", desk="snow") == 1
    assert value(samples, "bridge_desk_rate_limit_wait_seconds_total", desk="snow") == 1


async def test_metrics_survive_redis_down(snow: Snow, make_bridge: Any, redis_server: Any) -> None:
    """With Redis gone the scrape still answers, with bridge_redis_up 0 once a refresh failed."""
    bridge = await make_bridge(mapping(snow.url))
    redis_server.stop(kill=True)

    async def down() -> bool:
        _, samples = await scrape(base_url(bridge))
        return value(samples, "bridge_redis_up") == 0

    await eventually(down, within=5)
    redis_server.start()


async def test_promtool_check_metrics_passes(snow: Snow, make_bridge: Any) -> None:
    """`promtool check metrics` finds no naming or format problem in a scrape taken after traffic."""
    promtool = require("promtool")
    bridge = await make_bridge(mapping(snow.url, resolve_after="100ms"))
    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sda1")))
    await eventually(lambda: snow.incidents())
    await post(webhook_url(bridge), group(alert("resolved"), alert("resolved", device="/dev/sda1")))
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=5)
    text, _ = await scrape(base_url(bridge))
    assert "bridge_desk_calls_total" in text and "bridge_desk_call_duration_seconds_bucket" in text
    checked = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text.encode(), capture_output=True
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == "", checked.stdout.decode()


async def seed_incidents(redis: aioredis.Redis, count: int) -> None:
    """`count` open incidents in the index, each with its state hash, as the engine leaves them."""
    for start in range(0, count, 10_000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 10_000)):
                base = f"prometheus:{n:012x}"
                pipe.zadd(keys.INCIDENTS, {base: n})
                pipe.hset(keys.IncidentKeys(base).state, mapping={"state": "open", "epoch": "1"})
            await pipe.execute()


async def commands(redis: aioredis.Redis, action: Any) -> int:
    """Redis commands run while `action` runs (INFO commandstats of the private server), less the counting's own."""
    await redis.config_resetstat()
    await action()
    stats = await redis.info("commandstats")
    return sum(
        int(s["calls"]) for name, s in stats.items() if name.split("|")[0] not in ("cmdstat_info", "cmdstat_config")
    )


async def test_a_scrape_costs_the_same_with_no_incident_and_with_100000(redis: aioredis.Redis) -> None:
    """A scrape sends Redis nothing, with 0 or 100,000 incidents; the background refresh reads a bounded number."""
    scripts = open_scripts(_url(redis), timeout=5.0)
    rt = Runtime(scripts.redis, scripts, mapping("http://127.0.0.1:1"), tuning=FAST)
    runner, url = await start_app(make_app(rt))  # the app alone: no engine, delivery or upkeep talks to Redis
    upkeep = Upkeep(rt)

    async def scrapes() -> None:
        for _ in range(5):
            await scrape(url)

    try:
        await upkeep.refresh()
        empty = await commands(redis, scrapes)
        refresh_few = await commands(redis, upkeep.refresh)
        await seed_incidents(redis, INCIDENT_SCAN_LIMIT + 1)
        refresh_cap = await commands(redis, upkeep.refresh)
        await seed_incidents(redis, 100_000)
        with collector_as_served():
            async with loop_lag() as worst:
                refresh_many = await commands(redis, upkeep.refresh)
        full = await commands(redis, scrapes)
        _, samples = await scrape(url)
    finally:
        await runner.cleanup()
        await rt.aclose()
        await scripts.aclose()
        await scripts.redis.aclose()
    assert empty == full == 0
    assert refresh_few < 10
    assert refresh_many == refresh_cap  # capped at INCIDENT_SCAN_LIMIT, read in pages
    assert value(samples, "bridge_incidents", state="open") == INCIDENT_SCAN_LIMIT
    assert worst[0] < 0.05, f"the refresh held the event loop {worst[0] * 1000:.0f} ms"


def _url(redis: aioredis.Redis) -> str:
    kwargs = redis.get_connection_kwargs()
    return f"redis://{kwargs['host']}:{kwargs['port']}"
