"""The engine's loop outlives Redis being away: at its start (before its groups exist) and when Redis
comes back without them (restarted empty), it makes them inside its retrying loop, not once before it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bridge.core import keys
from bridge.core.models import Alert, Severity, Status
from bridge.engine.consumer import Engine
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.connect import connect
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts
from tests.conftest import FAST, Snow, eventually, mapping


def firing(host: str) -> Alert:
    now = datetime.now(UTC)
    return Alert(
        source="alertmanager", kind="alertmanager", identity=f"Disk|{host}", name="Disk", resource=host,
        severity=Severity.CRITICAL, status=Status.FIRING, labels={"alertname": "Disk", "instance": host},
        starts_at=now, received_at=now,
    )  # fmt: skip


async def test_an_engine_whose_redis_is_away_at_its_start_waits_for_it(redis_server: EmbeddedRedis, snow: Snow) -> None:
    """Redis is down when the engine starts: it keeps trying, and once Redis is back it makes the intake
    group and decides what comes in. (It used to make the group once, before its loop, and die there.)"""
    client = connect(redis_server.url)
    scripts = Scripts(client)
    await scripts.load()
    rt = Runtime(client, scripts, mapping(snow.url), tuning=FAST)
    redis_server.stop(kill=True)
    stop = asyncio.Event()
    running = asyncio.create_task(Engine(rt).run(stop))
    try:
        await asyncio.sleep(1.5)  # a try or two, refused
        assert not running.done(), running.exception() if running.done() else None
        redis_server.start()
        await scripts.load()  # the scripts went with the restart (no AOF of them)
        await client.xadd(keys.INTAKE, {"a": firing("db:9100").model_dump_json()})

        async def decided() -> bool:  # read, acknowledged, and an open queued for the delivery
            groups = await client.xinfo_groups(keys.INTAKE)
            return bool(groups) and groups[0]["pending"] == 0 and await client.zcard(keys.READY) == 1

        await eventually(decided, within=15)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await client.aclose()


async def test_an_engine_whose_redis_comes_back_empty_makes_its_group_again(
    redis_server: EmbeddedRedis, snow: Snow
) -> None:
    """FLUSHALL under a running engine (a Redis restarted without its data): the next read finds no group
    (NOGROUP), the engine makes it again, and decides the next alert."""
    client = connect(redis_server.url)
    scripts = Scripts(client)
    await scripts.load()
    rt = Runtime(client, scripts, mapping(snow.url), tuning=FAST)
    stop = asyncio.Event()
    running = asyncio.create_task(Engine(rt).run(stop))
    try:

        async def group_made() -> bool:
            return await client.exists(keys.INTAKE) == 1

        await eventually(group_made, within=10)
        await client.flushall()
        await asyncio.sleep(0.5)  # a read or two: NOGROUP
        await client.xadd(keys.INTAKE, {"a": firing("web:9100").model_dump_json()})

        async def decided() -> bool:
            groups = await client.xinfo_groups(keys.INTAKE)
            return bool(groups) and groups[0]["pending"] == 0 and await client.zcard(keys.READY) == 1

        await eventually(decided, within=15)
        assert not running.done()
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await client.aclose()
