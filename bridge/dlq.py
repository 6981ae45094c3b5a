"""The dead-letter stream: list, retry (back into the incident's outbox) and drop."""

from __future__ import annotations

from typing import Any

import orjson

from bridge import keys
from bridge.store import Redis


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


async def list_letters(redis: Redis, *, limit: int = 100) -> list[dict[str, Any]]:
    found: Any = await redis.xrange(keys.DLQ, count=limit)
    return [_decode(i, f) for i, f in found]


async def retry(redis: Redis, letter_id: str, now_ms: int) -> bool:
    """Put a rejected desk action back at the head of its incident's outbox. False: not retryable."""
    found: Any = await redis.xrange(keys.DLQ, letter_id, letter_id)
    if not found:
        return False
    letter = _decode(*found[0])
    if letter.get("kind") != "desk_rejected":
        return False
    base = keys.base_of(letter["incident"])
    ik = keys.IncidentKeys(base)
    async with redis.pipeline(transaction=True) as pipe:
        for entry in reversed(letter["entries"]):
            pipe.lpush(ik.outbox, orjson.dumps(entry))
        pipe.zadd(keys.READY, {base: now_ms})
        pipe.xdel(keys.DLQ, letter_id)
        await pipe.execute()
    return True


async def drop(redis: Redis, letter_id: str) -> bool:
    return bool(await redis.xdel(keys.DLQ, letter_id))
