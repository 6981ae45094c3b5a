"""The engine: reads the intake stream as a consumer group, routes each alert and runs the Lua step.

An intake entry is XACKed only after its decision is recorded (outbox, timers, index), all in the
round trip after the scripts. Entries a crashed replica read but never acknowledged are taken over
with XAUTOCLAIM once idle; replaying them is safe because the Lua step is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis.exceptions
import structlog
from pydantic import ValidationError

from bridge.core import keys
from bridge.core.errors import ConfigError
from bridge.core.models import Alert, DecisionKind, Status
from bridge.core.routing import Routed, Router, follow_up
from bridge.engine import adoption
from bridge.engine.placement import place
from bridge.engine.silences import Silence, Silences, silenced
from bridge.runtime import dead_letters, noise, outbox, routebook, shards
from bridge.runtime.connect import is_cluster
from bridge.runtime.context import Runtime, wait_for_event
from bridge.runtime.scripts import AlertStep, Applied

log = structlog.get_logger("bridge.engine.consumer")
Entry = tuple[bytes, dict[bytes, bytes]]
# Above this bound on a batch's matching work (characters of its entries x RE2 instructions of the
# regexes they may meet; ~7 ns each at worst), the batch is matched on a thread: ~5 ms at worst here.
INLINE_MATCHING = 700_000


@dataclass(slots=True)
class _Work:
    raw: bytes  # the alert's JSON as the intake stream holds it
    alert: Alert
    routed: Routed
    base: str  # the incident it joins: its own, or a topology parent's or the storm's


@dataclass(slots=True)
class _Records:
    """What one batch's decisions leave to record, gathered so each key costs one command."""

    ready: dict[str, int] = field(default_factory=dict)  # incident base -> since when its outbox has work
    timers: dict[str, int] = field(default_factory=dict)  # timer member -> due
    changed: dict[str, int] = field(default_factory=dict)  # incident base -> last change
    children: dict[str, dict[str, int]] = field(default_factory=dict)  # topology parent -> child base -> when live
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (route, decision) -> count
    released: list[str] = field(default_factory=list)  # incidents resolved: their upstream acknowledgements go


class Handoff(Protocol):
    """Delivery in the engine's process (bridge.delivery.worker.Delivery): takes incidents with new work
    straight from the engine, as far as it has room, with their lease and first read queued after
    the markers the engine writes, and starts on them once those are written."""

    def offer(self, bases: list[str]) -> set[str]: ...
    def queue_take(self, pipe: Any, base: str) -> list[str]: ...
    def begin(self, taken: Mapping[str, tuple[list[str], list[Any]] | None]) -> None: ...


class Engine:
    def __init__(self, runtime: Runtime, silences: Silences | None = None) -> None:
        self.rt = runtime
        self.silences = silences or Silences(runtime.redis, runtime.bad_record)
        self.ready = asyncio.Event()  # set when an outbox gains work, so local delivery wakes at once
        self.handoff: Handoff | None = None  # delivery in this process, if any
        self._backlog = asyncio.Event()  # set while reads come back full: more readers join in
        self._quiet = False  # the last batch held only repeats (DUPLICATE: nothing new for a desk): the next may wait

    async def ensure_group(self) -> None:
        """Check the shards this Redis was started with (see keys.Shards) and make each intake shard's group."""
        await shards.check(self.rt.redis, self.rt.shards)
        for stream in self.rt.shards.intakes:
            try:
                await self.rt.redis.xgroup_create(stream, keys.ENGINE_GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Read, decide, acknowledge, until `stop`, with `tuning.engine_readers` batches in flight: one
        is routed here while Redis runs another's Lua steps. Batches may overlap on one incident, as
        two replicas' do; the Lua step orders an alert's versions, so they converge all the same. Each
        reader makes the groups first (again after a Redis that lost them), inside its retrying loop."""
        try:  # record the mapping's routes; find those it retired (a reload does it again)
            await routebook.refresh(self.rt, reason="start")
        except Exception:  # their incidents' states find their way there anyway (placement misses them)
            log.exception("routebook_refresh_failed")
        intakes = self.rt.shards.intakes
        if len(intakes) == 1:
            readers = max(1, self.rt.tuning.engine_readers)
            await asyncio.gather(*(self._read(stop, intakes[0], primary=i == 0) for i in range(readers)))
        else:  # one reader per shard, each blocking on its own: no XREADGROUP spans two slots of a cluster
            await asyncio.gather(*(self._read(stop, stream, primary=True) for stream in intakes))

    async def _read(self, stop: asyncio.Event, stream: str, *, primary: bool) -> None:
        """One reader of the intake shard `stream`, batches until `stop`. The primary one also takes
        over idle entries now and then; the others join in only while batches come back full (a
        backlog), so that at low rates an alert is not split from its neighbours into batches of one."""
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        batch, linger = self.rt.tuning.batch, self.rt.tuning.engine_linger_ms / 1000
        regroup = True
        while not stop.is_set():
            try:
                if regroup:
                    await self.ensure_group()
                    regroup = False
                if primary and loop.time() >= next_claim:
                    await self.claim_idle(stream)
                    await self.trim(stream)
                    next_claim = loop.time() + self.rt.tuning.claim_every_s
                if primary:
                    got = await self.step(block_ms=self.rt.tuning.block_ms, stream=stream)
                    if 0 < got < batch and linger > 0 and self._quiet:  # gather what arrives meanwhile
                        await wait_for_event(stop, linger)
                elif self._backlog.is_set():
                    got = await self.step(block_ms=None, stream=stream)
                else:
                    await wait_for_event(self._backlog, self.rt.tuning.block_ms / 1000)
                    continue
                if got >= batch:
                    self._backlog.set()
                elif primary or not got:
                    self._backlog.clear()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("engine_redis_unavailable", error=str(exc))
                await wait_for_event(stop, 1.0)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.exception("engine_step_failed")
                    await wait_for_event(stop, 1.0)
                    continue
                # Redis came back without the stream (restarted empty, or a failover to a replica
                # that had not caught up): start the group again rather than fail every step.
                log.warning("intake_group_recreated", error=str(exc))
                regroup = True
            except ConfigError:  # another shard count recorded in this Redis: this process must not run
                raise
            except Exception:
                # The entries stay pending, so XAUTOCLAIM retries them; the loop must not die.
                log.exception("engine_step_failed")
                await wait_for_event(stop, 1.0)

    async def step(self, block_ms: int | None = None, stream: str | None = None) -> int:
        """Process one batch of new entries of the intake shard `stream` (None: one of each shard, and
        a block only if there is one); returns how many were read.

        The silences are read in the same round trip, right after the entries arrive.
        """
        if stream is None:
            intakes = self.rt.shards.intakes
            wait = block_ms if len(intakes) == 1 else None
            return sum([await self.step(wait, s) for s in intakes])
        async with self.rt.redis.pipeline(transaction=False) as pipe:
            batch = self.rt.tuning.batch
            pipe.xreadgroup(keys.ENGINE_GROUP, self.rt.consumer, {stream: ">"}, count=batch, block=block_ms)
            pipe.hgetall(keys.SILENCES)
            reply, silences = await pipe.execute()
        entries: list[Entry] = reply[0][1] if reply else []
        if entries:
            self.rt.metrics.engine_batch.observe(len(entries))
            # On Redis Cluster the two go to two masters at once: the silences were read as the block
            # began, not after the entries came, and are read again (a silence made meanwhile counts).
            await self.process(entries, None if is_cluster(self.rt.redis) else silences, stream=stream)
        return len(entries)

    async def claim_idle(self, stream: str | None = None) -> int:
        """Take over entries another consumer read but did not acknowledge in time (of one intake
        shard; None: of every one)."""
        if stream is None:
            return sum([await self.claim_idle(s) for s in self.rt.shards.intakes])
        total, start = 0, "0-0"
        while True:
            reply: Any = await self.rt.redis.xautoclaim(
                stream,
                keys.ENGINE_GROUP,
                self.rt.consumer,
                min_idle_time=self.rt.tuning.claim_idle_ms,
                start_id=start,
                count=self.rt.tuning.batch,
            )
            next_id, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []  # Redis 7 also names entries trimmed meanwhile
            if deleted:
                await self.rt.redis.xack(stream, keys.ENGINE_GROUP, *deleted)
            live = [e for e in entries if e[1]]
            if live:
                log.info("intake_claimed", entries=len(live))
                await self.process(live, stream=stream)
            total += len(live)
            if next_id in (b"0-0", "0-0") or not entries:
                return total
            start = next_id

    async def trim(self, stream: str | None = None) -> None:
        """Drop acknowledged entries: everything older than the oldest pending or undelivered one (of
        one intake shard; None: of every one)."""
        for each in self.rt.shards.intakes if stream is None else (stream,):
            pending = await self.rt.redis.xpending(each, keys.ENGINE_GROUP)
            groups = await self.rt.redis.xinfo_groups(each)
            last = next((g["last-delivered-id"] for g in groups if _s(g["name"]) == keys.ENGINE_GROUP), None)
            if last is None:
                continue
            floor = _s(pending["min"]) if pending and pending.get("pending") else _next_id(_s(last))
            await self.rt.redis.xtrim(each, minid=floor, approximate=True)

    async def process(
        self, entries: list[Entry], silences: dict[bytes, bytes] | None = None, *, stream: str | None = None
    ) -> None:
        """Decide a batch of the intake shard `stream` (None: the first); `silences` is the silences hash
        as read with it (else it is read now)."""
        now = self.rt.clock()
        stored: Any = await self.rt.redis.hgetall(keys.SILENCES) if silences is None else silences
        if self.silences.known(stored):
            active = self.silences.active(stored, now)
        else:  # new silences: their regexes compile off the event loop
            active = await asyncio.to_thread(self.silences.active, stored, now)
        # Matching is linear in the values' length times the regexes' size (bridge/core/matchers.py);
        # a batch whose worst case could hold the event loop is matched on a thread (RE2 lets go of
        # the GIL while it matches), a small one here.
        router = self.rt.router
        work_bound = sum(len(fields.get(b"a", b"")) for _, fields in entries) * (
            router.regex_size + sum(s.regex_size for s in active)
        )
        if work_bound > INLINE_MATCHING:
            routed, dead, silenced = await asyncio.to_thread(self._match, router, entries, active)
        else:
            routed, dead, silenced = self._match(router, entries, active)

        items = [(r, alert.status) for _, alert, r in routed]
        bases = await place(self.rt.scripts, items, list(self.rt.retired), now=now, silenced=silenced)
        work = [_Work(raw, alert, r, base) for (raw, alert, r), base in zip(routed, bases, strict=True)]
        pipe = self.rt.redis.pipeline(transaction=False)
        for index, w in enumerate(work):
            await self.rt.scripts.apply_alert(self._step(w, index in silenced), now, pipe)
        replies = await self.rt.scripts.execute(pipe, raise_on_error=False)
        await self._moved(work, replies, silenced, now)

        records = _Records()
        for w, reply in zip(work, replies, strict=True):
            if isinstance(reply, Exception):
                log.error("decision_failed", identity=w.alert.identity, error=str(reply))
                dead.append({"kind": "decision_failed", "reason": str(reply), "raw": w.raw})
                continue
            self._record(records, w, Applied.from_reply(reply), now)
        for (route, decision), count in records.decisions.items():
            self.rt.metrics.decisions.labels(route, decision).inc(count)
        self._quiet = all(decision == DecisionKind.DUPLICATE for _, decision in records.decisions)
        # Work delivery here takes at once needs no claim: its ready marker is scored a lease ahead, as
        # a claim would have, so other replicas leave it be unless this one dies.
        handoff = self.handoff
        taken = handoff.offer(list(records.ready)) if handoff and records.ready else set()
        # A few commands for the whole batch: the marks of the rest (outbox.signal), the timers, the
        # incident index.
        pipe = self.rt.redis.pipeline(transaction=False)
        noise.count(pipe, now, noise.from_decisions(records.decisions))  # the status page's noise per route
        sharded = self.rt.shards
        for ready, marks in sharded.by_ready(dict.fromkeys(taken, now + self.rt.tuning.lease_ms)).items():
            pipe.zadd(ready, marks)
        if len(records.ready) > len(taken):
            outbox.signal(pipe, {base: at for base, at in records.ready.items() if base not in taken}, sharded)
        for timers, due in sharded.by_timers(records.timers).items():
            pipe.zadd(timers, due)
        if records.changed:
            pipe.zadd(keys.INCIDENTS, records.changed)
        if records.released:  # only those holding upstream work (xx), due now (lt)
            pipe.zadd(keys.UPSTREAM_READY, dict.fromkeys(records.released, now), xx=True, lt=True)
        parents = adoption.index(pipe, records.children, self.rt.tuning.retention_ms)
        queued = len(pipe)
        dead = [self.rt.masker.value({**d, "at": now}) for d in dead]  # without the mapping's secrets
        letters = slice(queued, queued + dead_letters.add(pipe, self.rt.tuning, dead, now))
        pipe.xack(stream or sharded.intakes[0], keys.ENGINE_GROUP, *[e[0] for e in entries])
        # The incidents delivery took: their leases and first reads, after their markers, in this
        # same round trip. A take that failed is left to its drain to make again (it is re-entrant).
        recorded = len(pipe)
        takes: dict[str, tuple[list[str], slice]] = {}  # base -> the desks read, where its replies are
        for base in taken:
            first = len(pipe)
            desks = handoff.queue_take(pipe, base) if handoff else []
            takes[base] = (desks, slice(first, len(pipe)))
        started: dict[str, tuple[list[str], list[Any]] | None] = dict.fromkeys(taken)
        try:
            replies = await self.rt.scripts.execute(pipe, raise_on_error=False)
            for base, (desks, where) in takes.items():
                if not any(isinstance(reply, Exception) for reply in replies[where]):
                    started[base] = (desks, replies[where])
        finally:
            if handoff and taken:
                handoff.begin(started)
        for reply in replies[:recorded]:
            if isinstance(reply, Exception):
                raise reply
        if dead:
            dead_letters.dropped(self.rt.metrics, replies[letters])
        if parents:
            await adoption.late_children(self.rt, parents, replies[queued - len(parents) : queued], now)
        if len(records.ready) > len(taken):
            self.ready.set()

    @staticmethod
    def _match(
        router: Router, entries: list[Entry], active: Sequence[Silence]
    ) -> tuple[list[tuple[bytes, Alert, Routed]], list[dict[str, Any]], set[int]]:
        """Parse and route a batch, and which of the routed alerts an active silence covers (by index)."""
        routed: list[tuple[bytes, Alert, Routed]] = []
        dead: list[dict[str, Any]] = []
        for _, fields in entries:
            try:
                alert = Alert.model_validate_json(fields[b"a"])
                matches = router.route(alert, orjson.loads(fields[b"a"]))
            except (KeyError, ValidationError, ValueError) as exc:
                dead.append({"kind": "bad_entry", "reason": str(exc), "raw": fields.get(b"a", b"")})
                continue
            if not matches:
                dead.append({"kind": "unrouted", "reason": "no route matched", "raw": fields[b"a"]})
            routed.extend((fields[b"a"], alert, r) for r in matches)
        covered = silenced(active, [alert for _, alert, _ in routed]) if active else set()
        return routed, dead, covered

    async def _moved(self, work: list[_Work], replies: list[Any], silenced: set[int], now: int) -> None:
        """Alerts placed on an incident its topology parent adopted just before their step ran (MOVED):
        run again on the parent, in place in `replies`. An adoption is a one-way step, so one more round
        suffices; a second MOVED (the parent adopted meanwhile, by another parent) is run once more."""
        for _ in range(2):
            moved = [i for i, r in enumerate(replies) if not isinstance(r, Exception) and _s(r[0]) == "MOVED"]
            if not moved:
                return
            pipe = self.rt.redis.pipeline(transaction=False)
            for i in moved:
                work[i].base = _s(replies[i][3])
                work[i].routed.live = False
                await self.rt.scripts.apply_alert(self._step(work[i], i in silenced), now, pipe)
            for i, reply in zip(moved, await self.rt.scripts.execute(pipe, raise_on_error=False), strict=True):
                replies[i] = reply

    def _step(self, w: _Work, suppressed: bool) -> AlertStep:
        alert = w.alert
        mark = follow_up(w.routed.route, alert)
        # The incident's route: the alert's own, or a retired one whose live incident it is a member of.
        route_id = w.base.split(":", 1)[0]
        policy = self.rt.router.policies.get(route_id)
        if policy is None:
            policy = self.rt.retired[route_id].policy
        routed = w.routed
        own = w.base == routed.base  # on its own incident, not a parent's, a storm's or a retired route's
        in_storm = w.base == routed.storm
        child = (own and routed.parent is not None and not routed.is_parent) or (in_storm and routed.storm_child)
        return AlertStep(
            base=w.base,
            identity=w.routed.identity,
            status=alert.status.value,
            severity=alert.severity.value,
            occurrence=alert.occurrence(),
            loose=alert.starts_at is None,
            alert_json=w.raw,  # the intake entry's own JSON: no second serialisation
            route=route_id,
            resource=alert.resource,
            policy=policy,
            suppressed=suppressed and alert.status is not Status.RESOLVED,
            mark=mark.mark,
            followup=mark.kind,
            note=mark.text,
            event=mark.event,
            name=alert.name,
            # An absorbed copy (bridge/ingress/repeats.py) is seen up to a repeat window after the one written.
            auto_ms=w.routed.auto_ms + self.rt.tuning.repeat_window_ms if w.routed.auto_ms else 0,
            child=child,
            live=own and routed.live,
            key=f"the alert storm of {routed.key}" if in_storm else routed.key,
            **self._origin(alert, routed),
        )

    def _origin(self, alert: Alert, routed: Routed) -> dict[str, str]:
        """The member's source and labels, kept for the loop back: for acknowledgements upstream (a source
        whose tool the mapping lets the bridge acknowledge in, `sources.<name>.upstream`) and the silence
        of a cancelled ticket (the route's `sync.on_desk_cancel_silence`)."""
        source = self.rt.config.sources.get(alert.source)
        silence = routed.incidents.sync.on_desk_cancel_silence > 0
        if not silence and (source is None or source.upstream is None):
            return {}
        return {"source": alert.source}  # the step takes the labels from the alert's JSON, when a member joins

    def _record(self, records: _Records, w: _Work, applied: Applied, now: int) -> None:
        decision = applied.decision
        key = (w.base.split(":", 1)[0], decision.value)
        records.decisions[key] = records.decisions.get(key, 0) + 1
        log.debug("alert_decided", decision=decision, incident=applied.incident_id, identity=w.alert.identity)
        if applied.outbox_len > 0:
            records.ready[w.base] = now
        for kind, due in applied.timers:
            records.timers[keys.timer_member(w.base, kind, due)] = due
        if decision is not DecisionKind.DUPLICATE:
            records.changed[w.base] = now
        if decision is DecisionKind.RESOLVE:  # settled after a mute: acknowledgements upstream are released now
            records.released.append(w.base)
        routed = w.routed
        live = decision in (DecisionKind.OPEN, DecisionKind.REOPEN, DecisionKind.PENDING)
        if not live or not adoption.adopts(routed.incidents):
            return
        if w.base == routed.base and routed.is_parent and decision is not DecisionKind.PENDING:
            records.timers[keys.timer_member(w.base, adoption.TIMER_KIND, now)] = now  # its earlier children
        elif (
            routed.parent
            and not routed.is_parent
            and (w.base == routed.base or (w.base == routed.storm and routed.storm_child))
        ):
            records.children.setdefault(routed.parent, {})[w.base] = now  # for a parent that comes later


def _next_id(stream_id: str) -> str:
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
