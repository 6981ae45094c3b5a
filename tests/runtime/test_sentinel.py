"""Redis through Sentinel: the bridge follows the master, also across a failover."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.process.embedded import EmbeddedRedis, find_redis_server, free_port
from bridge.process.server import Bridge
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A master, a replica of it, and one Sentinel watching them (quorum 1, 1 s down-after)."""
    master = EmbeddedRedis(tmp_path / "master", appendonly=False).start()
    replica = EmbeddedRedis(tmp_path / "replica", appendonly=False).start()
    redis.Redis(port=replica.port).replicaof("127.0.0.1", master.port)
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
    )
    sentinel = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        yield {"url": f"redis+sentinel://127.0.0.1:{port}/mymaster", "master": master, "replica": replica}
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        replica.stop()
        master.stop()


async def test_bridge_works_through_sentinel_and_follows_a_failover(snow: Snow, sentinel_setup: dict[str, Any]) -> None:
    """Alerts become tickets through a Sentinel URL; after the master dies, the promoted replica is used."""
    bridge = await Bridge(mapping(snow.url), sentinel_setup["url"], port=0, tuning=FAST).start()
    try:
        url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
        assert (await post(url, group(alert(instance="before:1"))))[0] == 202
        await eventually(lambda: len(snow.incidents()) == 1)
        master, replica = (redis.Redis(port=sentinel_setup[n].port) for n in ("master", "replica"))

        def replica_in_sync() -> bool:  # asynchronous replication: only what the replica has survives
            mine: dict[str, Any] = replica.info("replication")
            offset = master.info("replication")["master_repl_offset"]
            return mine.get("master_link_status") == "up" and mine.get("slave_repl_offset") == offset

        await eventually(replica_in_sync, within=20)
        sentinel_setup["master"].stop(kill=True)

        async def accepted_after_failover() -> bool:
            status, _ = await post(url, group(alert(instance="after:1")))
            return status == 202

        await eventually(accepted_after_failover, within=30, interval=0.5)
        await eventually(lambda: len(snow.incidents()) == 2, within=30)
        role = redis.Redis(port=sentinel_setup["replica"].port).role()[0]
        assert role in (b"master", "master")
    finally:
        await bridge.stop()
