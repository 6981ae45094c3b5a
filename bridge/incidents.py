"""Reading incidents back: the list, and one incident with its members, outbox and audit trail."""

from __future__ import annotations

from typing import Any

import orjson

from bridge import keys
from bridge.store import Redis


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def list_incidents(redis: Redis, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest change first; `state` filters on open, resolving, resolved."""
    bases = await redis.zrevrange(keys.INCIDENTS, 0, max(limit * 4, limit) - 1)
    async with redis.pipeline(transaction=False) as pipe:
        for base in bases:
            pipe.hgetall(keys.IncidentKeys(_s(base)).state)
        rows = await pipe.execute()
    out: list[dict[str, Any]] = []
    for base, row in zip(bases, rows, strict=True):
        if not row:
            continue  # expired
        summary = _summary(_s(base), {_s(k): _s(v) for k, v in row.items()})
        if state is None or summary["state"] == state:
            out.append(summary)
        if len(out) >= limit:
            break
    return out


async def show_incident(redis: Redis, incident: str) -> dict[str, Any] | None:
    """By incident id (`route:hash:epoch`) or base (`route:hash`)."""
    base = incident if incident.count(":") == 1 else keys.base_of(incident)
    ik = keys.IncidentKeys(base)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(ik.state)
        pipe.hgetall(ik.members)
        pipe.lrange(ik.outbox, 0, -1)
        pipe.lrange(ik.audit, 0, -1)
        state, members, outbox, audit = await pipe.execute()
    if not state:
        return None
    summary = _summary(base, {_s(k): _s(v) for k, v in state.items()})
    summary["members"] = {
        _s(identity): dict(zip(("occurrence", "status", "severity"), _s(v).split("|"), strict=True))
        for identity, v in members.items()
    }
    summary["outbox"] = [orjson.loads(e) for e in outbox]
    summary["audit"] = [orjson.loads(e) for e in audit]
    return summary


def _summary(base: str, row: dict[str, str]) -> dict[str, Any]:
    epoch = row.get("epoch", "")
    ticket = row.get(f"ticket:{epoch}")
    ref = orjson.loads(ticket) if ticket else None
    return {
        "id": f"{base}:{epoch}",
        "route": row.get("route", base.split(":", 1)[0]),
        "state": row.get("state", ""),
        "firing": int(row.get("firing", "0") or 0),
        "opened_at": int(row.get("opened_at", "0") or 0),
        "resolved_at": int(row.get("resolved_at", "0") or 0),
        "reopened": int(row.get("reopened", "0") or 0),
        "ticket": {"id": ref[0], "display": ref[1], "url": ref[2]} if ref else None,
    }
