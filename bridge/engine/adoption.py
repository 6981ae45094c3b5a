"""Late topology parents adopt their children: one ticket per root cause, whichever alert comes first.

A topology child (an alert whose route has `topology`, not matching `parent`) joins its parent's incident
while that is live (bridge/engine/placement.py). One that comes first opens its own incident, and the
engine records it in the parent's index of children (`inc:{<parent>}:children`, by when it went live).
When the parent opens (or reopens), an "adopt" timer, due at once, has it adopt the children indexed
within `topology.adopt_within` before: each by adopt.lua, atomically on both incidents, so replicas may
share the work and repeat a round one of them left half done. A round takes at most ROUND children; the
timer comes back for the rest. A child that goes live while its parent already is (a placement racing
with the parent's open) is adopted too: the engine finds the parent live as it records the child.
"""

from __future__ import annotations

from typing import Any

import structlog

from bridge.core import keys
from bridge.core.config import Route
from bridge.runtime import outbox
from bridge.runtime.connect import is_cluster
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts

log = structlog.get_logger("bridge.engine.adoption")
TIMER_KIND = "adopt"  # "<parent base>|adopt|<when the parent opened>"
ROUND = 50  # children one timer firing adopts at most (each costs O(its members) in Redis)
LIVE = (b"open", b"resolving")


def adopts(route: Route) -> bool:
    """Whether a route's topology parents adopt the children that came before them."""
    return bool(route.topology and route.topology.adopt_within > 0)


def index(pipe: Any, children: dict[str, dict[str, int]], retention_ms: int) -> list[str]:
    """Queue recording child incidents that went live (`children`: parent base -> child base -> when) in
    their parents' indexes, and, last, reading each parent's state; returns the parents, in the order
    of those last replies (for `late_children`)."""
    for parent, found in children.items():
        index_key = keys.IncidentKeys(parent).children
        pipe.zadd(index_key, found)
        pipe.pexpire(index_key, retention_ms)
    parents = list(children)
    for parent in parents:
        pipe.hget(keys.IncidentKeys(parent).state, "state")
    return parents


async def late_children(rt: Runtime, parents: list[str], states: list[Any], now: int) -> None:
    """Children that went live while their parent was live already: have it adopt them now."""
    live = [parent for parent, state in zip(parents, states, strict=True) if state in LIVE]
    due = {keys.timer_member(parent, TIMER_KIND, now): now for parent in live}
    if due:
        for timers, members in rt.shards.by_timers(due).items():
            await rt.redis.zadd(timers, members)


async def adopt_round(rt: Runtime, parent: str, since: int, now: int) -> bool:
    """One round of a parent's adoption of the children that went live from `adopt_within` before `since`
    (when it opened) on; returns whether it is over (else the timer comes back for more)."""
    route_id = parent.split(":", 1)[0]
    route = rt.config.by_id(route_id)
    policy = rt.router.policies.get(route_id)
    if route is None or policy is None or route.topology is None:
        return True
    index_key = keys.IncidentKeys(parent).children
    cutoff = since - int(route.topology.adopt_within * 1000)
    found: list[Any] = await rt.redis.zrangebyscore(index_key, cutoff, "+inf", start=0, num=ROUND)
    children = [c.decode() if isinstance(c, bytes) else str(c) for c in found]
    if not children:
        return True
    if is_cluster(rt.redis):
        replies = await _adopt_in_two_halves(rt, parent, children, now, policy)
    else:
        pipe = rt.redis.pipeline(transaction=False)
        for child in children:
            rt.scripts.adopt(parent, child, now, policy, pipe)
        replies = await rt.scripts.execute(pipe, raise_on_error=False)
    finished: list[str] = []
    ready: dict[str, int] = {}
    adopted = 0
    for child, reply in zip(children, replies, strict=True):
        if isinstance(reply, Exception):  # taken off the index all the same: it would fail again
            log.error("adoption_failed", parent=parent, child=child, error=str(reply))
            finished.append(child)
            continue
        outcome, moved, parent_len, child_len = Scripts.adopted(reply)
        if outcome == "parent_not_live":
            return True  # the parent is gone: its children stay as they are
        finished.append(child)
        if outcome == "adopted":
            adopted += 1
            log.info("child_adopted", parent=parent, child=child, alerts=moved)
            if parent_len:
                ready[parent] = now
            if child_len:
                ready[child] = now
    records = rt.redis.pipeline(transaction=False)
    if finished:
        records.zrem(index_key, *finished)
    if ready:
        outbox.signal(records, ready, rt.shards)
    if adopted:
        records.zadd(keys.INCIDENTS, dict.fromkeys([parent, *finished], now))
        rt.metrics.decisions.labels(route_id, "ADOPTED").inc(adopted)
    await rt.scripts.execute(records)
    return len(children) < ROUND and len(finished) == len(children)


async def _adopt_in_two_halves(rt: Runtime, parent: str, children: list[str], now: int, policy: bytes) -> list[Any]:
    """On Redis Cluster a parent's and a child's keys are in two slots, and no script spans them: each
    child's half (adopt_child.lua) runs first, then the parent's (adopt_parent.lua) with the share the
    child's half returned. Each half is atomic and may run again: a round cut between the two (a crash)
    leaves the child in the parent's index, and the timer's next round gets the same share from the
    merged child and completes the parent's half, which does nothing if it was done. The parent's
    liveness is read just before: should it close between that read and its half, the child is merged
    into a parent that took nothing (its alerts come back to the parent as they fire again).
    Returns adopt.lua's replies: [outcome, alerts moved, parent outbox length, child outbox length]."""
    parent_state: list[Any] = await rt.redis.hmget(keys.IncidentKeys(parent).state, ["state", "epoch", "route"])
    if parent_state[0] not in LIVE or parent_state[1] is None:
        return [[b"parent_not_live", 0, 0, 0] for _ in children]
    halves = rt.redis.pipeline(transaction=False)
    for child in children:
        rt.scripts.adopt_child(parent, parent_state, child, now, policy, halves)
    firsts = await rt.scripts.execute(halves, raise_on_error=False)
    halves = rt.redis.pipeline(transaction=False)
    shared: list[int] = []
    for i, (child, first) in enumerate(zip(children, firsts, strict=True)):
        if not isinstance(first, Exception) and first[1]:
            rt.scripts.adopt_parent(parent, child, first[1], now, policy, halves)
            shared.append(i)
    seconds = await rt.scripts.execute(halves, raise_on_error=False) if shared else []
    replies: list[Any] = []
    for first in firsts:
        replies.append(first if isinstance(first, Exception) else [first[0], 0, 0, first[2]])
    for i, second in zip(shared, seconds, strict=True):
        if isinstance(second, Exception):
            replies[i] = second
        else:
            outcome = second[0] if second[0] != b"done" else replies[i][0]
            replies[i] = [outcome, second[1], second[2], replies[i][3]]
    return replies
