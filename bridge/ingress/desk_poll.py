"""Ingress of the loop back, polled: for desks with `sync: {poll: 60s}` (teams that cannot add a webhook),
one replica at a time asks the desk for the changes since its cursor (`changes_since`, page by page) and
adds them to the same `deskevents` stream a push feeds (bridge/ingress/desk_events.py).

One poller per desk across all replicas: a lease in Redis (`sync:<desk>:lease`, SET NX PX, renewed while
held). The cursor (`sync:<desk>:cursor`: the desk time of the last change seen and the ids seen at that
time) is in Redis too, so the replica that takes over goes on where the last one stopped; a change seen
twice (the poll asks from the cursor's own ms, inclusive) is dropped here, and in any case applied once by
the engine's step.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import replace
from typing import Any

import redis.exceptions
import structlog

from bridge.core import keys
from bridge.core.errors import DeskError
from bridge.core.sync import DeskEvent
from bridge.runtime import sync
from bridge.runtime.context import Runtime, wait_for_event

log = structlog.get_logger("bridge.ingress.desk_poll")
MAX_PAGES = 50  # pages read per poll at most; the rest the next poll reads
IDS_KEPT = 200  # ids kept at the cursor's ms
FIRST_LOOK_BACK_MS = 3_600_000  # a desk polled for the first time: changes of the last hour


class DeskPoller:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.token = uuid.uuid4().hex
        self._next: dict[str, float] = {}  # desk -> loop time of its next poll here

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for name, settings in list(self.rt.config.sync.items()):
                if settings.poll is None or loop.time() < self._next.get(name, 0.0):
                    continue
                self._next[name] = loop.time() + settings.poll
                try:
                    await self.poll(name, lease_ms=int(settings.poll * 2000) + 5_000)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    log.warning("desk_poll_redis_unavailable", desk=name, error=str(exc))
                except DeskError as exc:
                    log.warning("desk_poll_failed", desk=name, error=str(exc))
                except Exception:
                    log.exception("desk_poll_failed", desk=name)
            await wait_for_event(stop, 1.0)

    async def poll(self, desk: str, *, lease_ms: int = 120_000) -> int | None:
        """One poll of `desk` if this replica holds (or takes) its lease: the events added, None if another
        replica polls it."""
        client = self.rt.desks.get(desk)
        changes_since = getattr(client, "changes_since", None)
        if client is None or not callable(changes_since):
            return None
        lease = keys.sync_lease(desk)
        held = await self.rt.redis.set(lease, self.token, nx=True, px=lease_ms)
        if not held and not await self.rt.scripts.lease(lease, self.token, "renew", lease_ms):
            return None
        cursor_key = keys.sync_cursor(desk)
        stored: Any = await self.rt.redis.hmget(cursor_key, "at", "ids")
        since = int(stored[0]) if stored[0] else self.rt.clock() - FIRST_LOOK_BACK_MS
        seen = set(_s(stored[1]).split(",")) if stored[1] else set()
        added = 0
        page_token: str | None = None
        for _ in range(MAX_PAGES):
            page = await changes_since(since, page_token)
            fresh: list[DeskEvent] = []
            for event in page.events:
                event = event if event.desk == desk else _with_desk(event, desk)
                if event.at_ms < since or (event.at_ms == since and event.event_id in seen):
                    continue
                fresh.append(event)
            newest = max((e.at_ms for e in fresh), default=since)
            if newest > since:
                seen = {e.event_id for e in fresh if e.at_ms == newest}
                since = newest
            else:
                seen |= {e.event_id for e in fresh}
            pipe = self.rt.redis.pipeline(transaction=False)
            sync.queue_events(pipe, fresh)
            ids = ",".join(sorted(seen)[-IDS_KEPT:])
            pipe.hset(cursor_key, mapping={"at": since, "ids": ids})  # the events and the cursor, one round trip
            await self.rt.scripts.execute(pipe)
            for event in fresh:
                self.rt.metrics.sync_received.labels(desk, event.kind.value, "poll").inc()
            added += len(fresh)
            page_token = page.cursor
            if page_token is None:
                break
        self.rt.metrics.sync_cursor_age.labels(desk).set(max(0.0, (self.rt.clock() - since) / 1000))
        if added:
            log.info("desk_polled", desk=desk, events=added, cursor_ms=since)
        return added

    async def release(self) -> None:
        """Let go of the leases this replica holds (on stop), so another takes over at once."""
        for desk in self.rt.config.sync:
            with contextlib.suppress(redis.exceptions.RedisError):
                await self.rt.scripts.lease(keys.sync_lease(desk), self.token, "release")


def _with_desk(event: DeskEvent, desk: str) -> DeskEvent:
    return replace(event, desk=desk)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
