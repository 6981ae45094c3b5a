"""How many shards this Redis's intake stream, ready queue and timers are split into (keys.Shards).

The count is fixed for a Redis's life: the first replica to start records it, and a process started
with another refuses to start, since entries in shards it would not read would be stranded. The
command-line tools, which have no Runtime, read the recorded count.
"""

from __future__ import annotations

from typing import Any

from bridge.core import keys
from bridge.core.errors import ConfigError
from bridge.runtime.connect import is_cluster


def default(redis: Any, configured: int = 0) -> keys.Shards:
    """`configured` (BRIDGE_SHARDS) or, at 0, the default for this kind of Redis: 1, or 16 on a cluster."""
    return keys.Shards(configured or (keys.CLUSTER_SHARDS if is_cluster(redis) else 1))


async def check(redis: Any, shards: keys.Shards) -> None:
    """Record `shards`' count if none is yet; a ConfigError if another was. A Redis that holds the
    one-shard keys of a bridge from before shards were recorded counts as one shard's."""
    if await redis.get(keys.SHARDS) is None:
        legacy = [await redis.exists(key) for key in (keys.INTAKE, keys.READY, keys.TIMERS)]  # one slot each
        await redis.set(keys.SHARDS, 1 if any(legacy) else shards.count, nx=True)
    recorded = int(await redis.get(keys.SHARDS) or shards.count)
    if recorded != shards.count:
        raise ConfigError(
            f"this Redis holds the bridge's intake, ready queue and timers in {recorded} shards, and this"
            f" process would use {shards.count} (BRIDGE_SHARDS, or its default for this kind of Redis): set"
            f" BRIDGE_SHARDS={recorded}, as every replica must have the same"
        )


async def recorded(redis: Any) -> keys.Shards:
    """The shards the bridge's processes on this Redis use (the default if none started yet)."""
    found = await redis.get(keys.SHARDS)
    return keys.Shards(int(found)) if found else default(redis)
