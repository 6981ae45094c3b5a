"""Guards in front of each desk, shared by every replica through Redis: the rate limit (a token
bucket, mapping `limits:`) and a circuit breaker that keeps incidents from piling onto a desk that
is failing. Delivery passes every desk call through `DeskGuard.before`, and tells it of failures."""

from __future__ import annotations

import asyncio
import contextvars
import random
from typing import Any

from bridge import keys
from bridge.errors import DeskTransient
from bridge.runtime import Runtime

BREAKER_FIRST_S = 2.0  # a first transient failure holds the other incidents back this long
delivering: contextvars.ContextVar[str] = contextvars.ContextVar("delivering", default="")


class BreakerOpen(DeskTransient):
    """Not a desk answer: the call was not made because the desk's breaker is open."""


class DeskGuard:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._suspect: dict[str, int] = {}  # desk -> until when this process looks at its breaker

    async def before(self, desk: str) -> None:
        """Raise BreakerOpen, or wait for the rate limit, before a call to `desk`."""
        await self._breaker_check(desk)
        await self._throttle(desk)

    async def _breaker_check(self, desk: str) -> None:
        """Refuse the call (without making it) while another incident probes a desk that failed.

        The desk's breaker key holds "<until ms>|<incident base>": the incident whose call failed
        keeps retrying it; every other incident, on any replica, waits until `until`. Only looked
        up while this process has seen the desk fail lately, so a healthy desk costs no round trip.
        """
        if self._suspect.get(desk, 0) < self.rt.clock():
            return
        until = breaker_until(await self.rt.redis.get(keys.desk_breaker(desk)), delivering.get())
        if until > self.rt.clock():
            raise BreakerOpen(f"{desk}: circuit open while another incident probes it", desk=desk,
                              action="breaker", retry_after=(until - self.rt.clock()) / 1000)  # fmt: skip

    async def trip(self, desk: str, seconds: float, *, nx: bool) -> int:
        """Open the desk's breaker for `seconds`, owned by the incident being delivered."""
        until = self.rt.clock() + int(seconds * 1000)
        self._suspect[desk] = until + 60_000
        value = f"{until}|{delivering.get()}"
        await self.rt.redis.set(keys.desk_breaker(desk), value, px=max(1, int(seconds * 1000)), nx=nx)
        return until

    async def _throttle(self, desk: str) -> None:
        """Wait for a token of the desk's shared rate limit, if the mapping sets one."""
        limit = self.rt.config.limits.get(desk)
        while limit is not None:
            wait_ms = await self.rt.scripts.take_token(desk, self.rt.clock(), limit.per_second, limit.burst)
            if not wait_ms:
                return
            self.rt.metrics.rate_limit_waited(desk, wait_ms / 1000)
            await asyncio.sleep(min(wait_ms, 5_000) / 1000)


def breaker_until(raw: Any, base: str) -> int:
    """When the breaker lets `base` call again: now for the incident that owns it (it is the probe)."""
    until, _, owner = (raw.decode() if isinstance(raw, bytes) else str(raw or "")).partition("|")
    return 0 if not until or owner == base else int(until)


def jitter(at_ms: int) -> int:
    """Spread waiting incidents over a second, so a desk that comes back is not hit by all at once."""
    return at_ms + random.randint(0, 1000)
