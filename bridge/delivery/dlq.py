"""The dead-letter stream: list, retry (back into the incident's outbox) and drop."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

from bridge.core import keys
from bridge.runtime.connect import is_cluster
from bridge.runtime.scripts import Redis


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": _s(entry_id)}
    for key, value in fields.items():
        text = _s(value)
        if _s(key) in ("entries", "error", "raw"):
            try:
                out[_s(key)] = orjson.loads(text)
                continue
            except orjson.JSONDecodeError:
                pass
        out[_s(key)] = text
    return out


class Retried(StrEnum):
    RETRIED = "retried"
    NOT_FOUND = "not_found"
    NOT_RETRYABLE = "not_retryable"  # not a call (a bad or unrouted alert): nothing to put back


async def list_letters(
    redis: Redis, *, limit: int = 100, kind: str | None = None, after: str | None = None
) -> list[dict[str, Any]]:
    """Oldest first; `kind` filters (bad_alert, unrouted, desk_rejected, ...), `after` pages on ids."""
    out: list[dict[str, Any]] = []
    start = "(" + after if after else "-"
    while len(out) < limit:
        found: Any = await redis.xrange(keys.DLQ, start, "+", count=max(limit, 100))
        if not found:
            break
        for entry_id, fields in found:
            letter = _decode(entry_id, fields)
            if kind is None or letter.get("kind") == kind:
                out.append(letter)
                if len(out) >= limit:
                    break
        start = "(" + _s(found[-1][0])
    return out


async def get_letter(redis: Redis, letter_id: str) -> dict[str, Any] | None:
    found: Any = await redis.xrange(keys.DLQ, letter_id, letter_id)
    return _decode(*found[0]) if found else None


RETRYABLE = ("desk_rejected", "upstream_rejected")  # a desk's or a monitoring tool's refused call


async def retry(redis: Redis, letter_id: str, now_ms: int, shards: keys.Shards) -> Retried:
    """Put a rejected call back at the head of its incident's list: a desk action into the outbox (its
    incident marked in its ready shard), an upstream action (an acknowledgement, a silence, a comment in
    the monitoring tool) into the upstream list (marked in `upready`)."""
    letter = await get_letter(redis, letter_id)
    if letter is None:
        return Retried.NOT_FOUND
    if letter.get("kind") not in RETRYABLE:
        return Retried.NOT_RETRYABLE
    base = keys.base_of(letter["incident"])
    ik = keys.IncidentKeys(base)
    if letter["kind"] == "desk_rejected":
        into, ready = ik.outbox, shards.ready_for(base)
    else:
        into, ready = ik.upstream, keys.UPSTREAM_READY
    if is_cluster(redis):
        # The list, its ready set and the dead letters are in three slots: no MULTI spans them. The
        # letter is taken first (of two retries at once, one gets it); a crash right after loses this
        # retry, which the operator sees fail, and never makes the call twice.
        if not await redis.xdel(keys.DLQ, letter_id):
            return Retried.NOT_FOUND
        await redis.lpush(into, *[orjson.dumps(entry) for entry in reversed(letter["entries"])])
        await redis.zadd(ready, {base: now_ms})
        return Retried.RETRIED
    async with redis.pipeline(transaction=True) as pipe:
        for entry in reversed(letter["entries"]):
            pipe.lpush(into, orjson.dumps(entry))
        pipe.zadd(ready, {base: now_ms})
        pipe.xdel(keys.DLQ, letter_id)
        await pipe.execute()
    return Retried.RETRIED
    async with redis.pipeline(transaction=True) as pipe:
        for entry in reversed(letter["entries"]):
            pipe.lpush(ik.outbox, orjson.dumps(entry))
        pipe.zadd(shards.ready_for(base), {base: now_ms})
        pipe.xdel(keys.DLQ, letter_id)
        await pipe.execute()
    return Retried.RETRIED


async def drop(redis: Redis, letter_id: str) -> bool:
    return bool(await redis.xdel(keys.DLQ, letter_id))
