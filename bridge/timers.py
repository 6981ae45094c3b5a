"""Timers in one Redis sorted set, ticked by every replica: the resolve hold-down (and, per route
policy, the others DESIGN §2 lists). Claiming re-scores an entry instead of removing it, so a
replica that dies mid-tick leaves its timers to fire again; firing twice is a no-op."""

from __future__ import annotations

import asyncio

import redis.exceptions
import structlog

from bridge import keys
from bridge.runtime import Runtime, wait_for_event

log = structlog.get_logger("bridge.timers")


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
            await wait_for_event(stop, self.rt.tuning.timer_tick_s)

    async def tick(self) -> int:
        """Fire every due timer; returns how many changed an incident."""
        now = self.rt.clock()
        claimed = await self.rt.scripts.claim_timers(now, self.rt.tuning.timer_lease_ms, 500)
        fired = 0
        for member in claimed:
            base, kind, due = keys.parse_timer_member(member)
            policy = self.rt.router.policies.get(base.split(":", 1)[0])
            if policy is None:  # the route left the mapping: its timers go with it
                await self.rt.redis.zrem(keys.TIMERS, member)
                continue
            decision, outbox_len, timers = await self.rt.scripts.fire_timer(base, kind, due, now, policy)
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                if outbox_len:
                    pipe.zadd(keys.READY, {base: now}, nx=True)
                if decision:
                    pipe.zadd(keys.INCIDENTS, {base: now})
                if timers:
                    pipe.zadd(keys.TIMERS, {keys.timer_member(base, k, d): d for k, d in timers})
                pipe.zrem(keys.TIMERS, member)
                await pipe.execute()
            if decision:
                fired += 1
                self.rt.metrics.decisions.labels(base.split(":", 1)[0], decision).inc()
                log.info("timer_fired", kind=kind.split(":", 1)[0], base=base, decision=decision)
                self.ready.set()
        return fired
