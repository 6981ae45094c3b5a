"""A bridge whose intake, ready queue and timers are split into shards (BRIDGE_SHARDS; 16 by default on
Redis Cluster, where tests/runtime/test_cluster.py runs them): alerts spread over the intake's shards and
still make one ticket per incident, resolved after the hold-down; the count is fixed for a Redis."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.errors import ConfigError
from bridge.process.embedded import EmbeddedRedis
from bridge.process.server import Bridge
from bridge.runtime import shards
from tests.amp import alert, group
from tests.conftest import FAST, ON_CLUSTER, Snow, eventually, mapping, post

pytestmark = pytest.mark.skipif(ON_CLUSTER, reason="sets one Redis's shard count (a cluster's: test_cluster.py)")
SHARDED = dataclasses.replace(FAST, shards=4)


def url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


async def test_alerts_spread_over_the_shards_and_make_one_ticket_each(
    snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis
) -> None:
    """Two replicas with four shards each: 24 hosts' alerts, each sent to both (an HA pair), land in
    every intake shard; each host gets one ticket, every ticket resolves after the hold-down (the
    timers and ready markers of the four shards are all read), and every shard is drained."""
    first = await make_bridge(mapping(snow.url), tuning=SHARDED, consumer="a")
    second = await make_bridge(mapping(snow.url), tuning=SHARDED, consumer="b")
    hosts = [f"h{i:02d}:9100" for i in range(24)]
    for bridge in (first, second):
        assert (await post(url(bridge), group(*[alert(instance=h) for h in hosts])))[0] == 202
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        infos = [await client.xinfo_stream(s) for s in first.runtime.shards.intakes]
        assert all(i["last-generated-id"] != b"0-0" for i in infos), infos  # each shard had entries
        assert not await client.exists(keys.INTAKE)  # shard 0 of four is not the one-shard key
        await eventually(lambda: len(snow.incidents()) == 24, within=15)
        for bridge in (first, second):
            assert (await post(url(bridge), group(*[alert("resolved", instance=h) for h in hosts])))[0] == 202
        await eventually(lambda: all(t["state"] == "6" for t in snow.incidents()), within=15)
        assert len(snow.incidents()) == 24
        assert len({t["short_description"] for t in snow.incidents()}) == 24

        async def no_work_marked() -> bool:  # every drain settled its marker, in whichever shard it was
            return sum([await client.zcard(zset) for zset in first.runtime.shards.readies]) == 0

        await eventually(no_work_marked, within=10)
        pending = [int((await client.xpending(s, keys.ENGINE_GROUP))["pending"]) for s in first.runtime.shards.intakes]
        assert pending == [0, 0, 0, 0]
        assert await shards.recorded(client) == keys.Shards(4)
    finally:
        await client.aclose()


async def test_a_replica_with_another_shard_count_refuses_to_start(snow: Snow, redis_server: EmbeddedRedis) -> None:
    """The first replica records its count; one started with another would never read some shards, and
    stops at start with a config error that names the count to set."""
    first = await Bridge(mapping(snow.url), redis_server.url, port=0, tuning=SHARDED).start()
    other = Bridge(mapping(snow.url), redis_server.url, port=0, tuning=FAST)
    try:
        with pytest.raises(ConfigError, match="BRIDGE_SHARDS=4"):
            await other.start()
    finally:
        await other.stop()
        await first.stop()


async def test_a_redis_with_one_shard_keys_from_before_counts_as_one_shard(
    snow: Snow, redis_server: EmbeddedRedis
) -> None:
    """A Redis written by a bridge from before the count was recorded (its intake the one-shard key) is
    one shard's: a bridge with four refuses to start rather than strand what that stream holds."""
    client = aioredis.Redis.from_url(redis_server.url)
    bridge = Bridge(mapping(snow.url), redis_server.url, port=0, tuning=SHARDED)
    try:
        await client.xadd(keys.INTAKE, {"a": b"{}"})
        with pytest.raises(ConfigError, match="BRIDGE_SHARDS=1"):
            await bridge.start()
        assert await client.get(keys.SHARDS) == b"1"
    finally:
        await bridge.stop()
        await client.aclose()
