"""Delivery: applies each incident's outbox to its service desk, in order, from any replica.

One replica at a time holds an incident's lease (`SET NX PX`, renewed per action), reads its outbox,
coalesces consecutive notes into one, and calls the desk. Retries live here and nowhere else (the
policy itself is `guard.retrying`): transient failures (connect, timeout, 429, 5xx) are retried
with backoff honouring `Retry-After`, then the incident is put back in the ready queue for later,
its actions still durable in Redis;
rejected calls go to the dead-letter stream with the request and the desk's answer. What each
action does at the desk is `bridge/delivery/actions.py`: there, an open is idempotent (the epoch is
marked `opening` first, and an open whose outcome is unknown is first looked up in the desk by
correlation id, the incident id, and adopted).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions
import structlog

from bridge.core import keys, logs
from bridge.core.errors import Cause, DeskError, DeskTransient
from bridge.delivery.actions import ROTATED, DeskActions
from bridge.delivery.automation import Automations
from bridge.delivery.guard import BreakerOpen, DeskGuard, breaker_until, delivering, jitter, retrying
from bridge.runtime import noise, outbox
from bridge.runtime.context import Runtime, wait_for_event
from bridge.runtime.outbox import Action

log = structlog.get_logger("bridge.delivery.worker")
ENDED = -2  # _drain's answer when the last action's bookkeeping also ended the drain (no `_finish`)
Taken = tuple[list[str], list[Any]]  # the desks whose breakers were read, and the take's replies


class Delivery:
    def __init__(self, runtime: Runtime, ready: asyncio.Event | None = None) -> None:
        self.rt = runtime
        self.ready = ready or asyncio.Event()
        self.token = uuid.uuid4().hex
        self._inflight: set[str] = set()
        self._again: set[str] = set()  # claimed while in flight here: drain again once the drain ends
        self._seen: dict[str, float | None] = {}  # a drain's ready marker as read before its outbox (settle.lua)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None  # set by `run`: offers are taken only while it runs
        self.guard = DeskGuard(runtime)
        self.actions = DeskActions(runtime, self.guard)
        self.automations = Automations(runtime)  # jobs beside delivery (bridge/delivery/automation.py)

    async def run(self, stop: asyncio.Event) -> None:
        """Pick up incidents with due work until `stop`, then let in-flight ones finish."""
        tuning = self.rt.tuning
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    started = await self.pass_once()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    log.warning("delivery_redis_unavailable", error=str(exc))
                    started = 0
                    await asyncio.sleep(1.0)
                except Exception:  # the work stays in Redis: the loop must not die
                    log.exception("delivery_pass_failed")
                    started = 0
                    await asyncio.sleep(1.0)
                if not started:
                    self.ready.clear()
                    await wait_for_event(self.ready, tuning.delivery_poll_s)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.automations.aclose()

    async def pass_once(self) -> int:
        """Start delivery for due incidents not already in flight here; returns how many started.

        Claiming re-scores each incident to now + lease, so the other replicas do not race for it;
        should this one die, the incident is due again once the lease has expired.
        """
        room = self.rt.tuning.delivery_concurrency - len(self._inflight)
        if room <= 0:
            return 0
        readies, lease_ms = self.rt.shards.readies, self.rt.tuning.lease_ms
        due = await self.rt.scripts.claim_sharded(readies, self.rt.clock(), lease_ms, room)
        started = 0
        for base in due:
            if base in self._inflight:
                # Its drain here is ending just as new work came: the claim moved its marker past the
                # lease, so drain it again as soon as this one is over rather than leave it waiting.
                self._again.add(base)
                continue
            self._start(base)
            started += 1
        return started

    def offer(self, bases: list[str]) -> set[str]:
        """Take incidents the engine here just gave work, as far as there is room, without a claim;
        returns those taken. The engine scores their markers a lease ahead, as a claim would, and
        calls `begin` once that is written: asking for the lease only then, a drain elsewhere that
        holds it still removes the marker as it ends. One draining here already is left to that drain."""
        if self._stop is None or self._stop.is_set():
            return set()
        room = self.rt.tuning.delivery_concurrency - len(self._inflight)
        taken = [base for base in bases if base not in self._inflight][: max(0, room)]
        self._inflight.update(taken)
        return set(taken)

    def queue_take(self, pipe: Any, base: str) -> list[str]:
        """Queue taking `base`'s lease with the first read of its outbox, as a drain starts: the ready
        marker's score, lease.lua "take" and the desks' breakers; returns the desks whose breakers
        are read, in order. The engine queues it after the marker it writes."""
        desks = list(self.rt.desks)
        pipe.zscore(self.rt.shards.ready_for(base), base)
        self.rt.scripts.take(keys.IncidentKeys(base), self.token, self.rt.tuning.lease_ms, outbox.HEAD, pipe)
        pipe.execute_command("MGET", *[keys.desk_breaker(d) for d in desks])  # one slot: {desks}
        return desks

    def begin(self, taken: Mapping[str, Taken | None]) -> None:
        """Start draining what `offer` took, each with its take's replies where the engine made it
        (else the drain takes for itself), or let them go, should this replica be stopping."""
        for base, replies in taken.items():
            if self._stop is not None and self._stop.is_set():
                self._inflight.discard(base)  # its marker is a lease ahead: due again after that
            else:
                self._spawn(base, replies)

    def _start(self, base: str) -> None:
        self._inflight.add(base)
        self._spawn(base)

    def _spawn(self, base: str, taken: Taken | None = None) -> None:
        task = asyncio.create_task(self._deliver_guarded(base, taken))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_guarded(self, base: str, taken: Taken | None) -> None:
        try:
            await self.deliver(base, taken)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("delivery_interrupted", base=base, error=str(exc))
        except Exception:
            log.exception("delivery_failed", base=base)
        finally:
            self._ended(base)

    def _ended(self, base: str) -> None:
        self._inflight.discard(base)
        if base in self._again:
            self._again.discard(base)
            self._start(base)

    async def deliver(self, base: str, taken: Taken | None = None) -> None:
        """Drain one incident's outbox under its lease.

        The lease and the first read of the outbox are one round trip (the engine's, when it hands
        the incident over: `taken`), and so are each delivered action's bookkeeping and the lease's
        renewal, or its release once the outbox is empty, with letting go of the ready marker (a
        global key, so not in the incident's script). The marker is read just before each read of
        the outbox: a drain removes it only if it has not moved since.
        """
        ik = keys.IncidentKeys(base)
        delivering.set(base)
        if taken is None:
            pipe = self.rt.redis.pipeline(transaction=False)
            desks = self.queue_take(pipe, base)
            replies = await self.rt.scripts.execute(pipe)
        else:
            desks, replies = taken
        seen, took, breakers = replies
        if not took[0]:
            return  # another replica is on it; it re-queues the incident if work remains
        self._seen[base] = seen
        raw, flat, marked = took[1], took[2], took[3]
        head = outbox.Head(raw, dict(zip(flat[::2], flat[1::2], strict=True)), breakers, bool(marked))
        # The ready marker stays, scored past the lease by the claim: should this replica die
        # mid-drain, another finds the incident due again once the lease has expired.
        retry_at: int | None = self.rt.clock() + int(self.rt.tuning.backoff_max_s * 1000)
        heartbeat = asyncio.create_task(self._keep_lease(ik))
        try:
            retry_at = await self._drain(ik, desks, head)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            try:
                if retry_at != ENDED:
                    await self._finish(ik, retry_at)
            finally:
                self._seen.pop(base, None)

    async def _finish(self, ik: keys.IncidentKeys, retry_at: int | None) -> None:
        """Release the lease (if still held); re-queue the incident for `retry_at`, or let go of its
        marker if no work is left."""
        pipe = self.rt.redis.pipeline(transaction=False)
        await self.rt.scripts.lease(ik.lease, self.token, "release", pipe=pipe)
        if retry_at is not None:
            pipe.zadd(self.rt.shards.ready_for(ik.base), {ik.base: retry_at})
        else:
            self.rt.scripts.settle(self.rt.shards.ready_for(ik.base), ik.base, self._seen.get(ik.base), pipe)
        replies = await self.rt.scripts.execute(pipe)
        if retry_at is None and replies[-1]:
            await self._make_due(ik.base)

    async def _make_due(self, base: str) -> None:
        """The drain has ended but its marker moved since its last read: work may have come after it."""
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.zadd(self.rt.shards.ready_for(base), {base: self.rt.clock()}, lt=True)
        await self.rt.scripts.execute(pipe)
        self.ready.set()  # for whichever replica claims it first, this one included

    async def _keep_lease(self, ik: keys.IncidentKeys) -> None:
        """Renew the lease every third of its life while a drain runs, however long one desk call
        (with its retries) takes, so that no other replica starts on the incident meanwhile."""
        period = self.rt.tuning.lease_ms / 3000
        while True:
            await asyncio.sleep(period)
            if not await self.rt.scripts.lease(ik.lease, self.token, "renew", self.rt.tuning.lease_ms):
                log.warning("lease_lost", base=ik.base)
                return

    async def _drain(self, ik: keys.IncidentKeys, desks: list[str], head: outbox.Head | None) -> int | None:
        """Apply actions until the outbox is empty; returns when to try again after a transient failure,
        None when no work is left (the lease released, or lost, or to be released), or ENDED.

        `head` is what was read with the lease; later rounds read the outbox again.
        """
        redis = self.rt.redis
        while True:
            if head is None:
                pipe = redis.pipeline(transaction=False)
                pipe.zscore(self.rt.shards.ready_for(ik.base), ik.base)
                outbox.read_head(pipe, ik, desks)
                self._seen[ik.base], *read = await self.rt.scripts.execute(pipe)
                head = outbox.Head(*read)
            (raw, view, breakers, marked), head = head, None
            if not raw:
                return None
            open_until = {d: breaker_until(raw_b, ik.base) for d, raw_b in zip(desks, breakers, strict=True) if raw_b}
            left = len(raw)
            actions = outbox.coalesce(raw)
            if actions and marked:
                actions[0].marked = True
            for action in actions:
                if action.kind == outbox.UNREADABLE:  # dead-lettered and skipped: the rest goes on
                    await self._unreadable(ik, action)
                    continue
                try:  # its route and desk: as in the mapping, else as its incident opened (a retired route)
                    await self.actions.bind(action, view)
                except DeskError as exc:
                    await self._dead_letter(ik, action, exc)
                    continue
                flush_ms, now = self._flush_ms(action), self.rt.clock()
                flush_at = outbox.flush_at(action, flush_ms, now)
                if flush_at is not None:
                    return flush_at  # let more changes gather into this note
                deferred = outbox.defer_changes(action, flush_ms, now)
                until = open_until.get(self._desk_of(action), 0)
                if until > self.rt.clock():
                    return jitter(until)  # another incident is probing the failing desk: wait for it
                identity = (action.alert or {}).get("identity", "")  # for the log: which alert this is about
                with logs.bound(incident=action.incident, identity=identity):
                    try:
                        outcome = await retrying(
                            functools.partial(self.actions.apply, ik, action, view), self.rt.tuning.attempts
                        )
                    except DeskTransient as exc:
                        return await self._back_off(ik, action, exc)
                    except DeskError as exc:
                        await self._dead_letter(ik, action, exc)
                        continue
                    if outcome is ROTATED:
                        break  # the outbox was rewritten for a new epoch: read it again
                    last = not deferred and action is actions[-1] and len(raw) < outbox.HEAD  # nothing more read
                    left = await self._delivered(ik, action, outcome, last=last)
                    self.automations.after(ik, action, view)  # a job of the route's, beside this drain
                    if left == ENDED:
                        return ENDED
                    if left <= 0:
                        return None  # released (or lost): `_finish` lets go of the ready marker
                    if deferred:
                        break  # its changes are at the head now, as notes: read them again
            if not left:
                return None

    async def _delivered(self, ik: keys.IncidentKeys, action: Action, outcome: str, *, last: bool) -> int:
        """Record a delivered action and renew the lease, or release it once the outbox is empty;
        returns the outbox's length, -1 if the lease was lost, or ENDED.

        When `last` (the outbox as read holds nothing more) the drain most likely ends here, so its end
        goes in the same round trip: the ready marker is let go of unless it moved since the last read.
        Should work have come meanwhile, whatever appended it moves or adds the marker after the append,
        so a replica that dies here leaves the incident due for another once its lease has expired.
        """
        lease_ms = self.rt.tuning.lease_ms
        pipe = self.rt.redis.pipeline(transaction=False)
        if action.writes:
            pipe.hset(ik.state, mapping=action.writes)
            pipe.hdel(ik.state, "failures", *action.clears)
        else:
            pipe.hdel(ik.state, "failures")
        outbox.audit(pipe, ik, self.rt, action, "delivered", outcome)
        route = ik.base.split(":", 1)[0]
        noise.count(
            pipe, self.rt.clock(), {(route, noise.DESK_CALLS): 1, (route, noise.TICKETS): int(action.kind == "OPEN")}
        )
        advanced = len(pipe)
        self.rt.scripts.advance(ik, self.token, lease_ms, action.entries, pipe)
        if last:
            self.rt.scripts.settle(self.rt.shards.ready_for(ik.base), ik.base, self._seen.get(ik.base), pipe)
        replies = await self.rt.scripts.execute(pipe)
        left: int = replies[advanced]
        if left < 0:
            log.warning("lease_lost", incident=action.incident)
        if not last or left > 0:  # work left, or appended before the lease's release: drain on
            return left
        if replies[-1]:  # the marker moved since the last read: appended after the release, maybe
            await self._make_due(ik.base)
        return ENDED

    def _flush_ms(self, action: Action) -> int:
        route = action.settings
        return int((route.ticket.flush_interval if route else 0.0) * 1000)

    def _desk_of(self, action: Action) -> str:
        return action.desk

    async def _back_off(self, ik: keys.IncidentKeys, action: Action, exc: DeskTransient) -> int:
        if isinstance(exc, BreakerOpen):
            return jitter(self.rt.clock() + int((exc.retry_after or 1.0) * 1000))
        failures = await self.rt.redis.hincrby(ik.state, "failures", 1)
        delay = exc.retry_after or min(self.rt.tuning.backoff_max_s, 2.0**failures)
        # One line per retry round of the incident (its in-pass retries are not logged; the incidents
        # that wait on the desk's breaker meanwhile log nothing).
        log.warning("desk_unavailable", **self._unavailable(exc), action=exc.action, retry_in_s=delay)
        # Keep the desk's breaker open while this incident waits: the others wait with it.
        until = await self.guard.trip(exc.desk or self._desk_of(action), delay, nx=False)
        if failures & (failures - 1) == 0:  # rounds 1, 2, 4, 8...: a long outage is a few audit entries
            pipe = self.rt.redis.pipeline(transaction=False)
            outbox.audit(pipe, ik, self.rt, action, "retrying", f"{exc} (round {failures}, retry in {delay:.1f}s)")
            await self.rt.scripts.execute(pipe)
        return until

    def _unavailable(self, exc: DeskTransient) -> dict[str, Any]:
        """What a transient failure's log line says: desk, URL, cause, the error and, where one helps, a hint."""
        fields: dict[str, Any] = {"desk": exc.desk, "url": exc.url, "cause": exc.cause}
        if exc.status is not None:
            fields["status"] = exc.status
        fields["error"] = str(exc)
        desk = self.rt.config.desks.get(exc.desk)
        hint = desk_hint(exc.desk, getattr(desk, "kind", ""), exc.url, exc.cause)
        if hint:
            fields["hint"] = hint
        return fields

    async def _unreadable(self, ik: keys.IncidentKeys, action: Action) -> None:
        pipe = self.rt.redis.pipeline(transaction=False)
        outbox.unreadable(pipe, ik, self.rt, action)
        self.rt.scripts.pop(ik, self.token, action.entries, pipe)
        outbox.dead_lettered(self.rt, await self.rt.scripts.execute(pipe))

    async def _dead_letter(self, ik: keys.IncidentKeys, action: Action, exc: DeskError) -> None:
        log.error("desk_rejected", desk=exc.desk, action=exc.action, status=exc.status, error=str(exc))
        pipe = self.rt.redis.pipeline(transaction=False)
        outbox.dead_letter(pipe, ik, self.rt, action, exc)
        self.rt.scripts.pop(ik, self.token, action.entries, pipe)
        outbox.dead_lettered(self.rt, await self.rt.scripts.execute(pipe))


# Desk kind -> its simulator (`bridge simulate <name>`).
SIMULATORS = {"servicenow": "servicenow", "servicenow_em": "servicenow", "jira": "jira", "remedy": "remedy",
              "webhook": "webhook"}  # fmt: skip
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def desk_hint(desk: str, kind: str, url: str, cause: str) -> str:
    """What to do about a desk that gave no answer, where the cause says it; '' otherwise.

    A refused connection to a local address is most often the simulator not started (the example
    mapping's default desk is http://127.0.0.1:8081): the hint is the command that starts it.
    """
    parts = urlsplit(url)
    if cause == Cause.REFUSED:
        if parts.hostname in LOCAL_HOSTS and kind in SIMULATORS and parts.port:
            return f"start the simulator: bridge simulate {SIMULATORS[kind]} --port {parts.port}"
        return f"nothing accepts connections at {url}: is the desk up, and is desks.{desk}.url right?"
    if cause == Cause.DNS:
        return f"the host {parts.hostname} is not known to DNS: check desks.{desk}.url"
    if cause == Cause.TLS:
        return f"the desk's certificate is not trusted: set desks.{desk}.ca_file to the CA bundle that signed it"
    if cause == Cause.TIMEOUT:
        return f"no answer within desks.{desk}.timeout: check the network path to {url}, or raise the timeout"
    return ""
