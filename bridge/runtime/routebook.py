"""The routes Redis remembers, so that incidents outlive a change of mapping.

Incidents know their route by its `id` (its name unless it sets one), so a route renamed with its
old name as `id` keeps its incidents. Every mapping a bridge loads (at start-up, at each reload) is
recorded here under each route's id: its settings, by their hash, and which hash is its latest. An
incident records, when it opens a ticket, the desk it opened it in and its route's settings hash
(apply_alert.lua, from the policy JSON). A route that left the mapping while incidents of it are
live is *retired*: its incidents keep their desk and the settings they opened under, so their notes,
their timers (hold-down, auto-resolve), their clears and a resolve by hand still reach their ticket.
The bridge says so when it loads the mapping: a `route_retired` log line per route with the count of
its live incidents, and `bridge_retired_route_incidents`.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from bridge.core import keys
from bridge.core.config import MappingConfig, Route
from bridge.core.routing import Retired, Router, settings_hash
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Redis

log = structlog.get_logger("bridge.runtime.routebook")
LIVE = ("open", "resolving")


async def record(redis: Redis, config: MappingConfig, router: Router) -> None:
    """Remember every route of `config`: its settings, by hash, and that they are its latest."""
    fields: dict[str, bytes] = {}
    for route in [*config.routes, *config.heartbeat_routes.values()]:  # heartbeats' own routes too
        settings = settings_hash(route)
        fields[route.id] = settings.encode()
        policy = orjson.loads(router.policies[route.id])
        dump = {"route": route.model_dump(mode="json", by_alias=True), "policy": policy}
        fields[f"{route.id}@{settings}"] = orjson.dumps(dump)
    await redis.hset(keys.ROUTES, mapping=fields)  # type: ignore[arg-type]


def _retired(route_id: str, stored: dict[str, bytes]) -> Retired | None:
    """A route as `stored` (the routes hash, or the part of it about this route) has it, if readable."""
    latest = stored.get(route_id)
    if latest is None:
        return None
    versions: dict[str, Route] = {}
    policy = b""
    for field, raw in stored.items():
        owner, at, settings = field.partition("@")
        if owner != route_id or not at:
            continue
        try:
            entry: dict[str, Any] = orjson.loads(raw)
            versions[settings] = Route.model_validate(entry["route"])
        except (orjson.JSONDecodeError, KeyError, ValidationError) as exc:  # written by another version
            log.warning("route_record_unreadable", route=route_id, settings=settings, error=str(exc))
            continue
        if settings == latest.decode():
            policy = orjson.dumps(entry["policy"])
    if latest.decode() not in versions:
        return None
    return Retired(route_id, latest.decode(), versions, policy)


async def retired(redis: Redis, config: MappingConfig) -> dict[str, Retired]:
    """The routes Redis remembers that `config` no longer has and that still have live incidents."""
    raw: dict[Any, Any] = await redis.hgetall(keys.ROUTES)
    stored: dict[str, bytes] = {_s(k): v for k, v in raw.items()}
    current = {route.id for route in [*config.routes, *config.heartbeat_routes.values()]}
    gone = sorted({field for field in stored if "@" not in field} - current)
    out: dict[str, Retired] = {}
    for route_id in gone:
        live = await _live(redis, route_id)
        if not live:
            continue
        found = _retired(route_id, stored)
        if found is None:
            log.error("route_record_missing", route=route_id, live_incidents=live)
            continue
        found.live = live
        out[route_id] = found
    return out


async def _live(redis: Redis, route_id: str) -> int:
    """How many incidents of the route are open or resolving (a scan of the incident index)."""
    count = 0
    pattern = "".join("[" + c + "]" if c in "*?[]\\" else c for c in route_id) + ":*"
    bases = [_s(base) async for base, _ in redis.zscan_iter(keys.INCIDENTS, match=pattern, count=500)]
    for start in range(0, len(bases), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for base in bases[start : start + 500]:
                pipe.hget(keys.IncidentKeys(base).state, "state")
            states = await pipe.execute()
        count += sum(1 for state in states if state is not None and _s(state) in LIVE)
    return count


async def refresh(rt: Runtime, *, reason: str) -> dict[str, Retired]:
    """Record the running mapping and find the routes it retired; log them and count their live
    incidents in `bridge_retired_route_incidents`. Called at start-up and after each reload."""
    await record(rt.redis, rt.config, rt.router)
    found = await retired(rt.redis, rt.config)
    rt.retired = found
    rt.metrics.retired_routes(found)
    for route in found.values():
        log.warning(
            "route_retired",
            route=route.id,
            live_incidents=route.live,
            reason=reason,
            hint="its incidents keep their desk and settings: their clears, timers and `bridge incidents resolve` "
            "still close their tickets",
        )
    return found


async def lookup(rt: Runtime, route_id: str) -> Retired | None:
    """A route no longer in the mapping, as Redis remembers it (kept in `rt.retired` once read)."""
    found = rt.retired.get(route_id)
    if found is not None:
        return found
    raw: dict[Any, Any] = await rt.redis.hgetall(keys.ROUTES)
    found = _retired(route_id, {_s(k): v for k, v in raw.items() if _s(k).partition("@")[0] == route_id})
    if found is not None and rt.config.by_id(route_id) is None:
        rt.retired[route_id] = found
    return found


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
