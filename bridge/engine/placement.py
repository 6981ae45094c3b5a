"""Placement: which incident an alert joins when a topology parent or a storm absorbs it.

An alert normally belongs to its own incident (its route and correlation key). A live topology
parent (e.g. the host's DOWN incident) takes the alerts of its children (and adopts the children that
went live before it: bridge/engine/adoption.py), and a route's storm guard admits new incidents up to
its limit (storm_admit.lua, one atomic count across replicas) and sends the alerts of the others to the
one major incident of their storm group (a topology parent is never refused: it is the root cause
its children wait for; with `storm.group_by: [<topology key>]` the storm incident of a key is one more
child of its parent). Once an alert has joined one of those, its later states (re-fires, clears)
follow it there. So do those of an alert
whose incident is of a route the mapping no longer has (a route renamed without keeping its `id`):
while that incident is live and the alert one of its firing members, its repeats and its clear go
there, and its ticket resolves as it would have.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from bridge.core import keys
from bridge.core.models import Status, stable_hash
from bridge.core.routing import Routed
from bridge.runtime.scripts import Scripts

LIVE = (b"open", b"resolving")


async def place(
    scripts: Scripts,
    items: Sequence[tuple[Routed, Status]],
    retired: Sequence[str] = (),
    *,
    now: int = 0,
    silenced: Collection[int] = (),
) -> list[str]:
    """The incident base for each (routed alert, status); one round trip, none without the features,
    and one more when alerts of a storm-guarded route would open new incidents. Sets `Routed.live` where
    the alert stays on its own incident because that is live (or pending). `retired`: the ids of routes
    gone from the mapping whose incidents still live; `silenced`: the indexes of alerts a silence covers
    (they open nothing, so the storm guard does not count them)."""
    bases = [routed.base for routed, _ in items]
    todo = [
        i for i, (routed, _) in enumerate(items) if (routed.parent and not routed.is_parent) or routed.storm or retired
    ]
    if not todo:
        return bases
    async with scripts.redis.pipeline(transaction=False) as pipe:
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
    cursor = 0
    new: dict[tuple[str, str], list[int]] = {}  # (route id, storm base) -> alerts that would open a new incident
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
        bases[i] = former or _choose(routed, status, own_state, found)
        routed.live = bases[i] == routed.base and (own_state in LIVE or own_state == b"pending")
        opens = bases[i] == routed.base and not routed.live and status is not Status.RESOLVED and i not in silenced
        if routed.storm and opens and not routed.is_parent:  # a topology parent is a root cause: never absorbed
            new.setdefault((routed.incidents.id, routed.storm), []).append(i)
    if new:
        await _admit(scripts, items, bases, new, now)
    return bases


async def _admit(
    scripts: Scripts,
    items: Sequence[tuple[Routed, Status]],
    bases: list[str],
    new: dict[tuple[str, str], list[int]],
    now: int,
) -> None:
    """The storm guard: each group's would-be new incidents, counted atomically (storm_admit.lua); the
    alerts of those refused go to the group's major incident."""
    pipe = scripts.redis.pipeline(transaction=False)
    asked: list[tuple[str, list[str]]] = []
    for (route_id, storm), indexes in new.items():
        storm_cfg = items[indexes[0]][0].incidents.storm
        assert storm_cfg is not None
        group = items[indexes[0]][0].storm_group
        candidates = list(dict.fromkeys(bases[i] for i in indexes))  # each incident once, in arrival order
        scripts.storm_admit(
            keys.storm_count(route_id, group),
            keys.storm_flag(route_id, group),
            now,
            int(storm_cfg.window * 1000),
            storm_cfg.max_new_per_minute,
            candidates,
            pipe,
        )
        asked.append((storm, candidates))
    replies = await scripts.execute(pipe)
    for ((storm, candidates), flags), indexes in zip(zip(asked, replies, strict=True), new.values(), strict=True):
        refused = {base for base, ok in zip(candidates, flags, strict=True) if not int(ok)}
        for i in indexes:
            if bases[i] in refused:
                bases[i] = storm


def _former(routed: Routed, retired: Sequence[str]) -> list[str]:
    """Where the alert's incident is if it was opened under a route now retired with the same key."""
    if not retired or routed.is_parent:
        return []
    key_hash = stable_hash(routed.key, length=12)
    return [f"{route_id}:{key_hash}" for route_id in retired]


def _candidates(routed: Routed) -> list[str]:
    out = [routed.parent] if routed.parent and not routed.is_parent else []
    return out + ([routed.storm] if routed.storm else [])


def _choose(routed: Routed, status: Status, own_state: Any, found: dict[str, tuple[bool, bool]]) -> str:
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
    return routed.base
