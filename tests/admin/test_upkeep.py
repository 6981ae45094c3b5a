"""Every key family bounded: dead letters by count and age, the incidents index and silences after retention."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis.asyncio as aioredis
from structlog.testing import capture_logs

from bridge.admin.upkeep import Upkeep
from bridge.core import keys
from bridge.engine.silences import Silences, new_silence
from tests.conftest import FAST, Snow, eventually, mapping
from tests.running import base_url, scrape, value

QUIET = dataclasses.replace(FAST, upkeep_every_s=3600)  # the test runs the upkeep's passes itself


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_dead_letters_are_capped_by_count_and_the_drops_counted_and_logged(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Past dlq_max_len the oldest letters go as new ones come; the metric and one log line say how many."""
    await redis.config_set("stream-node-max-entries", 2)  # `~` trims whole nodes: small ones keep the cap tight
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(QUIET, dlq_max_len=10))
    with capture_logs() as logs:
        for n in range(40):  # unreadable intake entries: each one a dead letter
            await redis.xadd(keys.INTAKE, {"a": b'{"n": %d}' % n})

        async def all_decided() -> bool:
            letters = await redis.xrange(keys.DLQ, "-", "+")
            return bool(letters) and letters[-1][1][b"raw"] == b'{"n": 39}'

        await eventually(all_decided, within=10)
    kept = await redis.xlen(keys.DLQ)
    assert 10 <= kept <= 12
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_dead_letters_dropped_total", reason="length") == 40 - kept
    dropped = [e for e in logs if e["event"] == "dead_letters_dropped"]
    assert dropped and sum(e["by_length"] for e in dropped) == 40 - kept


async def test_dead_letters_older_than_their_age_are_dropped_by_the_upkeep(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """With no new letter coming, the upkeep still drops those older than dlq_max_age_ms, and counts them."""
    await redis.config_set("stream-node-max-entries", 2)
    hour = 3_600_000
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(QUIET, dlq_max_age_ms=hour))
    now = now_ms()
    for n in range(6):
        await redis.xadd(keys.DLQ, {"kind": "bad_alert", "n": n}, id=f"{now - 3 * hour + n}-0")
    fresh = await redis.xadd(keys.DLQ, {"kind": "bad_alert", "n": "fresh"})
    trimmed = await Upkeep(bridge.runtime).trim()
    assert trimmed.dead_letters == 6
    assert [entry_id for entry_id, _ in await redis.xrange(keys.DLQ, "-", "+")] == [fresh]
    assert bridge.runtime.metrics.dead_letters_dropped.labels("age")._value.get() == 6


async def test_the_index_keeps_incidents_whose_keys_live_and_those_changed_within_retention(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A base last changed over `retention` ago whose keys expired leaves the index; open or recent ones stay."""
    retention = 60_000
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(QUIET, retention_ms=retention))
    now = now_ms()
    old = now - retention - 1000
    gone = {f"r:gone{n}": old - n for n in range(1200)}  # more than a page of the index
    await redis.zadd(keys.INCIDENTS, {**gone, "r:open": old - 5000, "r:recent": now})
    await redis.hset(keys.IncidentKeys("r:open").state, mapping={"state": "open", "epoch": "1"})
    trimmed = await Upkeep(bridge.runtime).trim()
    assert trimmed.index == 1200
    assert sorted(m.decode() for m in await redis.zrange(keys.INCIDENTS, 0, -1)) == ["r:open", "r:recent"]


async def test_silences_are_deleted_retention_after_their_end(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """An expired silence stays for `retention` (to be listed), then the upkeep deletes it; others stay."""
    retention = 60_000
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(QUIET, retention_ms=retention))
    now = now_ms()
    store = Silences(redis)
    long_ago = await store.add(new_silence(['team="db"'], now_ms=now - 10 * retention, duration_s=60))
    lately = await store.add(new_silence(['team="db"'], now_ms=now - retention // 2, duration_s=1))
    active = await store.add(new_silence(['team="db"'], now_ms=now, duration_s=3600))
    trimmed = await Upkeep(bridge.runtime).trim()
    assert trimmed.silences == 1
    assert sorted(s.id for s in await store.list()) == sorted([lately.id, active.id])
    assert long_ago.id not in {s.id for s in await store.list()}
