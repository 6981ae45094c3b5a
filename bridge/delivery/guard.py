"""Guards in front of each desk, shared by every replica through Redis: the rate limit (a token
bucket, mapping `limits:`) and a circuit breaker that keeps incidents from piling onto a desk that
is failing. Delivery makes every desk call through `DeskGuard.call`, within `retrying`: the one
place where desk calls are retried."""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from bridge.core import keys
from bridge.core.desk import Desk
from bridge.core.errors import DeskAuthExpired, DeskError, DeskTransient
from bridge.runtime.context import Runtime

T = TypeVar("T")
BREAKER_FIRST_S = 2.0  # a first transient failure holds the other incidents back this long
IN_PASS_RETRY_AFTER_S = 5.0  # a longer Retry-After ends the pass; the incident waits in the ready queue
delivering: contextvars.ContextVar[str] = contextvars.ContextVar("delivering", default="")


class BreakerOpen(DeskTransient):
    """Not a desk answer: the call was not made because the desk's breaker is open."""


class DeskGuard:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._suspect: dict[str, int] = {}  # desk -> until when this process looks at its breaker

    async def call(self, desk: Desk, action: str, call: Coroutine[Any, Any, T]) -> T:
        """Make one desk call once the guards let it through; count it, time it, and trip the breaker
        on a transient failure."""
        try:
            await self.before(desk.name)
        except BaseException:
            call.close()  # never started: do not leave it unawaited
            raise
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except DeskTransient as exc:
            outcome = self.rt.metrics.transient(desk.name, exc)  # "rate_limited" for a 429
            await self.trip(desk.name, exc.retry_after or BREAKER_FIRST_S, nx=True)
            raise
        except DeskError:
            outcome = "rejected"
            raise
        finally:
            self.rt.metrics.desk_calls.labels(desk.name, action, outcome).inc()
            self.rt.metrics.desk_latency.labels(desk.name, action).observe(time.perf_counter() - started)

    async def once(self, desk: Desk, action: str, call: Coroutine[Any, Any, T]) -> T:
        """Make one optional desk call (a change lookup, a problem record) through the breaker and the rate
        limit, counted and timed, but never retried and never tripping the breaker: its caller fails
        open, and a desk that cannot answer it must not hold the tickets back."""
        try:
            await self.before(desk.name)
        except BaseException:
            call.close()
            raise
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except DeskTransient as exc:
            outcome = self.rt.metrics.transient(desk.name, exc)
            raise
        except DeskError:
            outcome = "rejected"
            raise
        finally:
            self.rt.metrics.desk_calls.labels(desk.name, action, outcome).inc()
            self.rt.metrics.desk_latency.labels(desk.name, action).observe(time.perf_counter() - started)

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


async def retrying(call: Callable[[], Awaitable[T]], attempts: int) -> T:
    """Run `call`, again after a transient failure (honouring a Retry-After up to
    IN_PASS_RETRY_AFTER_S, else with jittered backoff) and once after expired credentials, up to
    `attempts` times in all; an open breaker is not retried here (the incident waits instead).

    The first attempt runs before tenacity is set up: most calls succeed at once, and tenacity's
    retry state is a few dozen objects in reference cycles per call, which only the garbage
    collector frees. A failed first attempt is handed to tenacity as its own first attempt, so that
    the policy below decides on it, and waits after it, as on any other."""
    try:
        return await call()
    except Exception as exc:  # tenacity decides on it, just below
        first: list[Exception] = [exc]

    async def again() -> T:
        if first:
            raise first.pop()
        return await call()

    backoff = wait_random_exponential(multiplier=0.1, max=2.0)

    def retryable(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, BreakerOpen):
            return False
        if isinstance(exc, DeskTransient):
            return (exc.retry_after or 0) <= IN_PASS_RETRY_AFTER_S
        return isinstance(exc, DeskAuthExpired) and state.attempt_number == 1  # re-authenticate once

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DeskTransient) and exc.retry_after is not None:
            return float(exc.retry_after)
        return backoff(state)

    async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), wait=wait, retry=retryable, reraise=True):
        with attempt:
            return await again()
    raise AssertionError("unreachable: tenacity reraises")
