"""Placement: which incident an alert joins when a topology parent or a storm absorbs it.

An alert normally belongs to its own incident (its route and correlation key). A live topology
parent (e.g. the host's DOWN incident) takes the alerts of its children, and a route in a storm
sends alerts that would open a new incident to the route's one major incident. Once an alert has
joined one of those, its later states (re-fires, clears) follow it there. So do those of an alert
whose incident is of a route the mapping no longer has (a route renamed without keeping its `id`):
while that incident is live and the alert one of its firing members, its repeats and its clear go
there, and its ticket resolves as it would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.core import keys
from bridge.core.models import Status, stable_hash
from bridge.core.routing import Routed
from bridge.runtime.scripts import Redis

LIVE = (b"open", b"resolving")


async def place(redis: Redis, items: Sequence[tuple[Routed, Status]], retired: Sequence[str] = ()) -> list[str]:
    """The incident base for each (routed alert, status); one round trip, none without the features.
    `retired`: the ids of routes gone from the mapping whose incidents still live."""
    bases = [routed.base for routed, _ in items]
    todo = [
        i for i, (routed, _) in enumerate(items) if (routed.parent and not routed.is_parent) or routed.storm or retired
    ]
    if not todo:
        return bases
    storm_routes = sorted({items[i][0].route.id for i in todo if items[i][0].storm})
    async with redis.pipeline(transaction=False) as pipe:
        for route in storm_routes:
            pipe.exists(keys.storm_flag(route))
        for i in todo:
            routed, _ = items[i]
            pipe.hget(keys.IncidentKeys(routed.base).state, "state")
            for other in _candidates(routed):
                pipe.hget(keys.IncidentKeys(other).state, "state")
                pipe.hexists(keys.IncidentKeys(other).members, routed.identity)
            for other in _former(routed, retired):
                pipe.hget(keys.IncidentKeys(other).state, "state")
                pipe.hget(keys.IncidentKeys(other).members, routed.identity)
        replies: list[Any] = await pipe.execute()
    storming = {route for route, flag in zip(storm_routes, replies, strict=False) if flag}
    cursor = len(storm_routes)
    for i in todo:
        routed, status = items[i]
        own_state = replies[cursor]
        cursor += 1
        found: dict[str, tuple[bool, bool]] = {}
        for other in _candidates(routed):
            found[other] = (replies[cursor] in LIVE, bool(replies[cursor + 1]))
            cursor += 2
        former = None
        for other in _former(routed, retired):
            member = replies[cursor + 1]
            firing = bool(member) and member.split(b"|", 2)[1:2] != [b"resolved"]  # occurrence|status|...
            if former is None and replies[cursor] in LIVE and firing:
                former = other
            cursor += 2
        bases[i] = former or _choose(routed, status, own_state, found, routed.route.id in storming)
    return bases


def _former(routed: Routed, retired: Sequence[str]) -> list[str]:
    """Where the alert's incident is if it was opened under a route now retired with the same key."""
    if not retired or routed.is_parent:
        return []
    key_hash = stable_hash(routed.key, length=12)
    return [f"{route_id}:{key_hash}" for route_id in retired]


def _candidates(routed: Routed) -> list[str]:
    out = [routed.parent] if routed.parent and not routed.is_parent else []
    return out + ([routed.storm] if routed.storm else [])


def _choose(routed: Routed, status: Status, own_state: Any, found: dict[str, tuple[bool, bool]], storm: bool) -> str:
    if own_state in LIVE or own_state == b"pending":
        return routed.base
    for other, (live, member) in found.items():
        if live and member:
            return other  # it joined there earlier: its later states follow it
    if status is Status.RESOLVED:
        return routed.base
    parent = routed.parent if routed.parent and not routed.is_parent else None
    if parent and found[parent][0]:
        return parent
    if storm and routed.storm:
        return routed.storm
    return routed.base
