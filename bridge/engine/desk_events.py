"""The loop back, applied: desk-side changes from the `deskevents` stream (pushed or polled: bridge/ingress)
to their incidents, through one atomic step (apply_desk_event.lua), in a consumer group like the intake's.

Each change finds its incident by the desk's ticket index (delivery records it when a ticket opens), else
by the correlation id the ticket carries. The step applies it once and in desk order, whatever replica
reads it and however often it comes; what it decides goes on in Redis: desk actions to the incident's
outbox (a REOPEN, a new ticket's OPEN), upstream actions to its upstream list (bridge/delivery/upstreams.py),
and, for a cancelled ticket, a silence of the members that still fired (bridge/engine/silences.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from typing import Any

import orjson
import redis.exceptions
import structlog

from bridge.core import keys
from bridge.core.sync import DeskEvent
from bridge.engine.silences import Silences, new_silence
from bridge.runtime import outbox, sync
from bridge.runtime.context import Runtime, wait_for_event
from bridge.runtime.scripts import apply_desk_event, desk_event_applied

log = structlog.get_logger("bridge.engine.desk_events")
BATCH = 100
CLAIM_IDLE_MS = 30_000  # an entry another replica read but did not acknowledge this long is taken over
MAX_SILENCES = 50  # silences a cancelled ticket makes at most (one per member that still fired)
APPLIED = {"MUTED", "REOPEN", "OPEN", "RESOLVED", "CANCELLED", "ACKNOWLEDGE", "COMMENT", "RECORDED"}


class DeskEventApplier:
    def __init__(self, runtime: Runtime, ready: asyncio.Event | None = None) -> None:
        self.rt = runtime
        self.ready = ready or asyncio.Event()  # delivery's wake-up in this process
        self.upstream_ready = asyncio.Event()  # the upstream worker's

    async def ensure_group(self) -> None:
        try:
            await self.rt.redis.xgroup_create(keys.DESK_EVENTS, keys.SYNC_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_claim, regroup = 0.0, True
        while not stop.is_set():
            try:
                if regroup:  # first, and after a Redis that lost the group: inside the retrying loop
                    await self.ensure_group()
                    regroup = False
                if loop.time() >= next_claim:
                    await self.claim_idle()
                    next_claim = loop.time() + 10.0
                await self.step(block_ms=1000)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("sync_redis_unavailable", error=str(exc))
                await wait_for_event(stop, 1.0)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    regroup = True
                    continue
                log.exception("sync_step_failed")
                await wait_for_event(stop, 1.0)
            except Exception:  # the entries stay pending: claimed and applied again (once: the step dedupes)
                log.exception("sync_step_failed")
                await wait_for_event(stop, 1.0)

    async def step(self, block_ms: int | None = None) -> int:
        reply: Any = await self.rt.redis.xreadgroup(
            keys.SYNC_GROUP, self.rt.consumer, {keys.DESK_EVENTS: ">"}, count=BATCH, block=block_ms
        )
        entries = reply[0][1] if reply else []
        if entries:
            await self.process(entries)
        return len(entries)

    async def claim_idle(self) -> int:
        reply: Any = await self.rt.redis.xautoclaim(
            keys.DESK_EVENTS, keys.SYNC_GROUP, self.rt.consumer, min_idle_time=CLAIM_IDLE_MS, count=BATCH
        )
        live = [e for e in reply[1] if e[1]]
        if live:
            await self.process(live)
        return len(live)

    async def process(self, entries: list[Any]) -> None:
        """Apply a batch: one round trip looks the tickets up, one runs the steps, one records the rest."""
        events: list[tuple[Any, DeskEvent]] = []
        bad: list[Any] = []
        for entry_id, fields in entries:
            try:
                events.append((entry_id, sync.event_of(fields)))
            except (ValueError, KeyError, TypeError) as exc:
                self.rt.bad_record("desk_event", _s(entry_id), exc, fields.get(b"e", b""))
                bad.append(entry_id)
        pipe = self.rt.redis.pipeline(transaction=False)
        for _, event in events:
            pipe.hget(keys.desk_tickets(event.desk), event.ticket.id)
        indexed = await self.rt.scripts.execute(pipe) if events else []
        now = self.rt.clock()
        pipe = self.rt.redis.pipeline(transaction=False)
        work: list[tuple[DeskEvent, str]] = []
        for (_, event), found in zip(events, indexed, strict=True):
            where = sync.incident_of(found, event.correlation_id)
            policy = self._policy(where[0]) if where else None
            if where is None or policy is None:
                self._count(event, "UNKNOWN")
                continue
            base, epoch = where
            sync_of = self.rt.config.sync.get(event.desk)
            user = sync_of.integration_user.casefold() if sync_of else ""
            if user and event.author.casefold() == user and not event.ours:
                event = replace(event, ours=True)
            ticket = event.ticket.display or event.ticket.id
            apply_desk_event(self.rt.scripts, base, epoch, event, ticket=ticket, policy=policy, now_ms=now, pipe=pipe)
            work.append((event, base))
        replies = await self.rt.scripts.execute(pipe) if work else []
        after = self.rt.redis.pipeline(transaction=False)
        ready: dict[str, int] = {}
        silences: list[tuple[DeskEvent, str, list[str], bytes]] = []
        for (event, base), raw in zip(work, replies, strict=True):
            applied = desk_event_applied(raw)
            self._count(event, applied.outcome)
            if applied.outcome not in APPLIED:
                continue
            self.rt.metrics.sync_lag.labels(event.desk).observe(max(0.0, (now - event.at_ms) / 1000))
            log.info(
                "desk_event_applied", desk=event.desk, kind=event.kind.value, author=event.author,
                ticket=event.ticket.display or event.ticket.id, incident=applied.incident_id, outcome=applied.outcome,
            )  # fmt: skip
            after.zadd(keys.INCIDENTS, {base: now})
            if applied.outcome in ("REOPEN", "OPEN") and applied.outbox_len:
                ready[base] = now
            if applied.upstream_len:
                after.zadd(keys.UPSTREAM_READY, {base: now}, lt=True)  # sooner than an extension due later
                self.upstream_ready.set()
            if applied.outcome == "CANCELLED" and applied.silence_labels:
                silences.append((event, applied.incident_id, applied.silence_labels, self._policy(base) or b"{}"))
        if ready:
            outbox.signal(after, ready, self.rt.shards)
        ids = [entry_id for entry_id, _ in events] + bad
        if ids:
            after.xack(keys.DESK_EVENTS, keys.SYNC_GROUP, *ids)
            after.xdel(keys.DESK_EVENTS, *ids)  # applied: the stream holds only what is still to apply
        for event, incident_id, labels, policy in silences:
            await self._silence(event, incident_id, labels, policy)
        await self.rt.scripts.execute(after)
        if ready:
            self.ready.set()

    def _policy(self, base: str) -> bytes | None:
        route_id = base.split(":", 1)[0]
        policy = self.rt.router.policies.get(route_id)
        if policy is None and route_id in self.rt.retired:
            policy = self.rt.retired[route_id].policy
        return policy

    def _count(self, event: DeskEvent, outcome: str) -> None:
        self.rt.metrics.sync_events.labels(event.desk, event.kind.value, outcome).inc()

    async def _silence(self, event: DeskEvent, incident_id: str, labels: list[str], policy: bytes) -> None:
        """A cancelled ticket silences its members that still fired, for the route's `on_desk_cancel_silence`.
        Its id is the change's: applied twice (a crash before the acknowledgement), it is the same silence."""
        seconds = int(orjson.loads(policy).get("sync", {}).get("cancel_silence", 0)) / 1000
        if seconds <= 0:
            return
        ticket = event.ticket.display or event.ticket.id
        digest = hashlib.sha256(f"{event.desk}|{event.ticket.id}|{event.event_id}".encode()).hexdigest()
        store = Silences(self.rt.redis, self.rt.bad_record)
        for index, raw in enumerate(list(dict.fromkeys(labels))[:MAX_SILENCES]):
            try:
                member: dict[str, Any] = orjson.loads(raw)
                matchers = [f"{name}={orjson.dumps(str(value)).decode()}" for name, value in sorted(member.items())]
                silence = new_silence(
                    matchers, now_ms=self.rt.clock(), duration_s=seconds, created_by=event.author or event.desk,
                    comment=f"ticket {ticket} was cancelled at {event.desk} (incident {incident_id})",
                )  # fmt: skip
            except ValueError as exc:  # no labels kept, too many, or unreadable: nothing to silence by
                log.warning("desk_cancel_not_silenced", incident=incident_id, error=str(exc))
                continue
            await store.add(silence.model_copy(update={"id": f"{digest[:10]}{index:02d}"}))
        log.info("desk_cancel_silenced", incident=incident_id, members=len(labels), seconds=seconds)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
