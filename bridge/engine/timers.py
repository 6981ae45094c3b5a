"""Timers in a Redis sorted set (one per shard: keys.Shards), ticked by every replica: the resolve
hold-down (and, per route policy, auto-resolve and the end of a flap's quiet period), and heartbeats' expiries
(bridge/runtime/heartbeats.py). Claiming re-scores an entry instead of
removing it, so a replica that dies mid-tick leaves its timers to fire again; firing twice is a
no-op."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions
import structlog

from bridge.core import keys
from bridge.engine import adoption
from bridge.runtime import heartbeats, outbox, routebook
from bridge.runtime.context import Runtime, wait_for_event
from bridge.runtime.scripts import Scripts

log = structlog.get_logger("bridge.engine.timers")


class Ticker:
    def __init__(self, runtime: Runtime, ready: asyncio.Event | None = None) -> None:
        self.rt = runtime
        self.ready = ready or asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("timers_redis_unavailable", error=str(exc))
            except Exception:  # claimed timers fire again once their claim expires: the loop must not die
                log.exception("timers_tick_failed")
            await wait_for_event(stop, self.rt.tuning.timer_tick_s)

    async def tick(self) -> int:
        """Fire every due timer; returns how many changed an incident.

        The claimed timers' scripts go in one round trip, and what they leave to record in one more:
        a resolve storm's thousand hold-downs are not two thousand round trips one after another.
        """
        now = self.rt.clock()
        claimed = await self.rt.scripts.claim_timers(now, self.rt.tuning.timer_lease_ms, 500, self.rt.shards)
        done: list[str] = []  # members to drop: fired, or of a route that left the mapping
        fired: list[tuple[str, str, str]] = []  # (member, base, kind)
        beats: list[tuple[str, str, int]] = []  # heartbeats' expiries: (member, heartbeat id, due)
        adoptions: list[tuple[str, str, int]] = []  # topology parents adopting: (member, parent, when it opened)
        pipe = self.rt.redis.pipeline(transaction=False)
        for member in claimed:
            base, kind, due = keys.parse_timer_member(member)
            if kind == heartbeats.TIMER_KIND:
                beats.append((member, base, due))
                continue
            if kind == adoption.TIMER_KIND:
                adoptions.append((member, base, due))
                continue
            route_id = base.split(":", 1)[0]
            policy = self.rt.router.policies.get(route_id)
            if policy is None:  # the route left the mapping: its incidents' timers still fire, with its last policy
                retired = await routebook.lookup(self.rt, route_id)
                if retired is None:  # not even Redis remembers the route: nothing to fire them with
                    done.append(member)
                    continue
                policy = retired.policy
            self.rt.scripts.fire_timer(base, kind, due, now, policy, pipe)
            fired.append((member, base, kind))
        if beats:
            done.extend(await heartbeats.fire(self.rt, beats))
        replies = await self.rt.scripts.execute(pipe, raise_on_error=False)
        await self._moved(fired, replies, now)
        records = self.rt.redis.pipeline(transaction=False)
        ready: dict[str, int] = {}
        changed: dict[str, int] = {}
        later: dict[str, int] = {}
        decided = 0
        for member, parent, opened in adoptions:
            if await adoption.adopt_round(self.rt, parent, opened, now):
                done.append(member)
            else:
                later[member] = now  # more children: the next tick goes on
            decided += 1
        for (member, base, kind), reply in zip(fired, replies, strict=True):
            if isinstance(reply, Exception):  # left claimed: it fires again once its claim expires
                log.error("timer_failed", base=base, kind=kind, error=str(reply))
                continue
            decision, outbox_len, timers = Scripts.fired(reply)
            done.append(member)
            if outbox_len:
                ready[base] = now
            later.update({keys.timer_member(base, k, d): d for k, d in timers})
            if decision == "RESOLVE":  # acknowledgements upstream it holds are released now (the loop back)
                records.zadd(keys.UPSTREAM_READY, {base: now}, xx=True, lt=True)
            if decision:
                changed[base] = now
                decided += 1
                self.rt.metrics.decisions.labels(base.split(":", 1)[0], decision).inc()
                log.info("timer_fired", kind=kind.split(":", 1)[0], base=base, decision=decision)
        if ready:
            outbox.signal(records, ready, self.rt.shards)
        if changed:
            records.zadd(keys.INCIDENTS, changed)
        for zset, rescored in self.rt.shards.by_timers(later).items():
            records.zadd(zset, rescored)
        for zset, members in self.rt.shards.by_timers(dict.fromkeys(done, 0)).items():
            records.zrem(zset, *members)
        await self.rt.scripts.execute(records)
        if decided:
            self.ready.set()
        return decided

    async def _moved(self, fired: list[tuple[str, str, str]], replies: list[Any], now: int) -> None:
        """Timers of an incident its topology parent adopted (a member's auto-resolve) fire on the parent,
        where the member is now; in place in `replies`."""
        moved = [i for i, r in enumerate(replies) if not isinstance(r, Exception) and Scripts.fired(r)[0] == "MOVED"]
        if not moved:
            return
        pipe = self.rt.redis.pipeline(transaction=False)
        targets: list[tuple[int, str]] = []
        for i in moved:
            member, _, kind = fired[i]
            target = Scripts.timer_moved_to(replies[i])
            policy = self.rt.router.policies.get(target.split(":", 1)[0])
            if not target or policy is None:
                replies[i] = ["", "", 0, []]
                continue
            self.rt.scripts.fire_timer(target, kind, keys.parse_timer_member(member)[2], now, policy, pipe)
            targets.append((i, target))
        for (i, target), reply in zip(targets, await self.rt.scripts.execute(pipe, raise_on_error=False), strict=True):
            replies[i] = reply
            fired[i] = (fired[i][0], target, fired[i][2])
