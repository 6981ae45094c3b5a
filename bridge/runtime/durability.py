"""What a 202 means for an alert, and making it mean more (`BRIDGE_DURABILITY`, `BRIDGE_WAIT_REPLICAS`).

A webhook is answered 202 once its alerts are in the intake stream. What survives a crash then is
Redis's to say:

    everysec (default)  AOF, fsync once a second: a crash of Redis or its machine may lose the alerts of
                        the last second. A resolved notification is sent once: if it was in that
                        second, its ticket stays open until the alert fires and resolves again (or
                        auto-resolve, where the route has it, closes it).
    fsync               AOF `appendfsync always`: on disk before the answer; nothing answered 202 is
                        lost with Redis's machine, at the cost of a disk sync per write round trip.
    wait_replicas N     also in N replicas' memory before the answer (Redis `WAIT`, within
                        BRIDGE_WAIT_TIMEOUT_MS; fewer in time is a 503 and the sender sends again):
                        a failover to a replica loses nothing answered.

The embedded Redis is started with the setting; an external one is asked at start (`check`), and a
warning says when a 202 will not mean what the setting asks (or when it cannot be asked).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.exceptions
import structlog

from bridge.core import keys
from bridge.core.errors import RequestError
from bridge.core.tuning import Tuning
from bridge.runtime.connect import is_cluster

log = structlog.get_logger("bridge.runtime.durability")
LOSES = {
    "always": "nothing answered 202 (each write is on disk first)",
    "everysec": "up to the last second of alerts answered 202, if Redis or its machine crashes",
    "no": "the alerts answered 202 since the operating system last flushed (tens of seconds)",
}


class NotReplicated(RequestError):
    """The alerts are in Redis but not yet in as many replicas as asked: the sender must send again."""

    status, code = 503, "unavailable"


async def check(client: Any, tuning: Tuning) -> dict[str, str]:
    """Read Redis's persistence settings and say what a 202 can lose; a warning when it is less than
    `tuning.durability` asks, or when Redis will not say (CONFIG refused, as managed services do)."""
    try:
        found = {**await client.config_get("appendonly"), **await client.config_get("appendfsync")}
    except redis.exceptions.ResponseError as exc:
        log.warning(
            "durability_unknown", durability=tuning.durability, error=str(exc),
            hint="Redis refuses CONFIG GET: check its appendonly/appendfsync yourself; a 202 means in Redis's memory",
        )  # fmt: skip
        return {}
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:  # gone again since reached:
        log.warning("durability_unknown", durability=tuning.durability, error=str(exc))  # the start goes on
        return {}
    settings = {_s(k): _s(v) for k, v in found.items()}
    appendonly, appendfsync = settings.get("appendonly", ""), settings.get("appendfsync", "")
    loses = LOSES.get(appendfsync, "unknown") if appendonly == "yes" else "everything since the last snapshot"
    fields = {"appendonly": appendonly, "appendfsync": appendfsync, "a_crash_loses": loses}
    if tuning.wait_replicas:
        fields["wait_replicas"] = str(tuning.wait_replicas)
    if tuning.durability == "fsync" and (appendonly, appendfsync) != ("yes", "always"):
        log.warning(
            "durability_not_fsynced", durability="fsync", **fields,
            hint="a 202 does not mean on disk: set `appendonly yes` and `appendfsync always` in this Redis",
        )  # fmt: skip
    elif appendonly != "yes":
        log.warning("durability_no_aof", **fields, hint="set `appendonly yes` in this Redis")
    else:
        log.info("durability", durability=tuning.durability, **fields)
    return settings


def queue_wait(pipe: Any, tuning: Tuning, streams: Iterable[str] = (keys.INTAKE,)) -> int:
    """Queue `WAIT <replicas> <timeout>` after a request's writes (same connection, so it covers them);
    how many it queued (0 or 1; on Redis Cluster one per stream written). Their replies are the number
    of replicas that have the writes."""
    if not tuning.wait_replicas:
        return 0
    if is_cluster(pipe):
        # On Redis Cluster, to the master of each stream written (the intake's shards; the desk events'
        # for those) only, after the XADDs on the same connection (redis-py's default would ask every
        # node and add up their answers): the cluster batcher sends it to the node that serves `wait_key`
        # as it runs (bridge/runtime/batch.py). It covers those streams' entries; other writes of the
        # request (dead letters, the Opsgenie door's record, a desk's ticket index) may be on other
        # masters, not waited for.
        written = list(dict.fromkeys(streams))
        for stream in written:
            pipe.execute_command("WAIT", tuning.wait_replicas, tuning.wait_timeout_ms, wait_key=stream)
        return len(written)
    pipe.execute_command("WAIT", tuning.wait_replicas, tuning.wait_timeout_ms)
    return 1


def replicated(replies: list[Any], tuning: Tuning) -> None:
    """NotReplicated (503) unless every WAIT's reply (of `queue_wait`) says enough replicas have the writes."""
    count = min((r if isinstance(r, int) else 0 for r in replies), default=0)
    if count < tuning.wait_replicas:
        raise NotReplicated(
            f"the alerts are in Redis but only {count} of {tuning.wait_replicas} replicas had them within"
            f" {tuning.wait_timeout_ms} ms (BRIDGE_WAIT_REPLICAS): send them again"
        )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
