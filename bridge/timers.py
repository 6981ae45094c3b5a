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
            retention = self.rt.tuning.retention_ms + self._reopen_ms(base)
            decision, outbox_len = await self.rt.scripts.fire_timer(base, kind, due, now, retention)
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                if outbox_len:
                    pipe.zadd(keys.READY, {base: now}, nx=True)
                if decision:
                    pipe.zadd(keys.INCIDENTS, {base: now})
                pipe.zrem(keys.TIMERS, member)
                await pipe.execute()
            if decision:
                fired += 1
                log.info("timer_fired", kind=kind, base=base, decision=decision)
                self.ready.set()
        return fired

    def _reopen_ms(self, base: str) -> int:
        route_name = base.split(":", 1)[0]
        for route in self.rt.config.routes:
            if route.name == route_name:
                return int(route.lifecycle.reopen_within * 1000)
        return 0
