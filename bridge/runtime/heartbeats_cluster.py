"""Redis Cluster's heartbeat pings and expiries (bridge.runtime.heartbeats): on one Redis each is one script
(heartbeat_ping.lua, heartbeat_expire.lua) over the heartbeat's hash and the global index, timers and
intake; on a cluster those keys are in different slots, so each is a script on the heartbeat's hash alone
with the global keys written around it, in an order a crash anywhere cannot make lose an alert."""

from __future__ import annotations

from typing import Any

from bridge.core import keys
from bridge.runtime.context import Runtime


async def ping(rt: Runtime, now: int, queued: Any) -> list[Any]:
    """Redis Cluster: the pings queued on `queued` (heartbeat_ping.lua's keys and arguments) made in the
    slots they touch. First the new expiry timers, and each id's admission under its name's bound
    (heartbeat_admit.lua); then each heartbeat's own hash (heartbeat_ping_state.lua); then the old timers'
    removal, the index and the resolving alerts; last the resolving alerts' debts cleared. Cut anywhere
    (a crash), a timer too many fires to no effect (its due is not the state's), a missing index entry
    waits for the next ping, and an owed resolving alert is added by the next ping. heartbeat_ping.lua's
    replies: [outcome, due]."""
    calls = [c.args[3:] for c in queued._execution_strategy._command_queue]  # EVALSHA sha 5 KEYS... ARGV...
    first = rt.redis.pipeline(transaction=False)
    for _, _, ids, timers, _, bid, _, window, _, _, max_keys, _ in calls:
        due = now + int(window)
        first.zadd(timers, {keys.timer_member(bid, keys.HEARTBEAT_TIMER_KIND, due): due})
        rt.scripts.heartbeat_admit(ids, bid, int(max_keys), first)
    admitted = (await rt.scripts.execute(first))[1::2]
    states = rt.redis.pipeline(transaction=False)
    for (state, _, _, _, _, bid, _, window, name, labels, _, _), ok in zip(calls, admitted, strict=True):
        rt.scripts.heartbeat_ping_state(state, [bid, now, window, name, labels, "1" if ok else ""], states)
    replies = await rt.scripts.execute(states)
    after = rt.redis.pipeline(transaction=False)
    owed: list[str] = []
    for (state, index, _, timers, intake, bid, *_, healed), (outcome, due, before) in zip(calls, replies, strict=True):
        if _s(outcome) == "full":
            continue
        if int(before) and int(before) != int(due):
            after.zrem(timers, keys.timer_member(bid, keys.HEARTBEAT_TIMER_KIND, int(before)))
        after.zadd(index, {bid: now})
        if _s(outcome) == "recovered":
            after.xadd(intake, {"a": healed})
            owed.append(state)
    await rt.scripts.execute(after)
    if owed:
        cleared = rt.redis.pipeline(transaction=False)
        for state in owed:
            cleared.hdel(state, "resolve_pending")
        await rt.scripts.execute(cleared)
    return [reply[:2] for reply in replies]


async def expire(rt: Runtime, queued: Any) -> list[Any]:
    """Redis Cluster: the expiries queued on `queued` (heartbeat_expire.lua's keys and arguments) made in
    the slots they touch: each heartbeat's own hash (heartbeat_expire_state.lua), then the opening alerts
    of those that expired, then their debts cleared. The caller removes a timer only after this: cut
    anywhere (a crash), the timer comes due again and the owed alert is added then. heartbeat_expire.lua's
    replies: 1 if it expired now (or its owed alert was added now), else 0; an error in place."""
    calls = [c.args[3:] for c in queued._execution_strategy._command_queue]  # EVALSHA sha 2 KEYS... ARGV...
    states = rt.redis.pipeline(transaction=False)
    for state, _, due, now, last, _ in calls:
        rt.scripts.heartbeat_expire_state(state, [due, now, last], states)
    replies = await rt.scripts.execute(states, raise_on_error=False)
    alerts = rt.redis.pipeline(transaction=False)
    owed = [(call, reply) for call, reply in zip(calls, replies, strict=True) if reply == 1]
    for (_, intake, *_, alert), _ in owed:
        alerts.xadd(intake, {"a": alert})
    if owed:
        await rt.scripts.execute(alerts)
        cleared = rt.redis.pipeline(transaction=False)
        for (state, *_), _ in owed:
            cleared.hdel(state, "open_pending")
        await rt.scripts.execute(cleared)
    return list(replies)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
