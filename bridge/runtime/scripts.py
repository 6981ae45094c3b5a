"""Typed wrappers over the Lua scripts in `bridge/runtime/lua/`, registered once at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from bridge.core import keys
from bridge.core.models import DecisionKind
from bridge.core.sync import DeskEvent
from bridge.runtime.batch import Batcher, ClusterBatcher
from bridge.runtime.connect import connect, is_cluster

Redis = aioredis.Redis
Pipeline = aioredis.client.Pipeline


def _source(name: str) -> str:
    return resources.files("bridge.runtime").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class Applied:
    """What apply_alert.lua answered."""

    decision: DecisionKind
    incident_id: str
    outbox_len: int
    reason: str
    timers: list[tuple[str, int]]  # (kind, due ms) to add to the timers set

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Applied:
        decision, incident_id, outbox_len, reason, timers = reply
        return cls(DecisionKind(_s(decision)), _s(incident_id), int(outbox_len), _s(reason), _pairs(timers))


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a setattr call per field
class AlertStep:
    """The arguments of one apply_alert.lua call."""

    base: str
    identity: str
    status: str
    severity: str
    occurrence: int
    loose: bool  # the source gave no start time: `occurrence` is the arrival time
    alert_json: bytes
    route: str
    resource: str
    policy: bytes  # the route's policy JSON (bridge.core.routing.policy_json)
    suppressed: bool = False
    mark: str = ""  # the follow-up's mark, kind and note text (bridge.core.routing.follow_up)
    followup: str = ""
    note: str = ""
    event: bool = False  # the alert is a follow-up, noted by the route or not
    name: str = ""  # the alert's name, for the notes timers write about it
    auto_ms: int = 0  # the member's auto-resolve window (ms), 0 for none
    child: bool = False  # a topology child on its own incident (`topology.hold` applies)
    live: bool = False  # placed on its own incident because placement found it live (see MOVED)
    key: str = ""  # the rendered correlation key, kept with a new incident for humans (adoption notes)
    source: str = ""  # the alert's source: a member joining keeps it with its labels, for the loop back ("": not)

    def flags(self) -> str:
        """ARGV[10] of apply_alert.lua: suppressed, child, live, comma-separated."""
        flags = (("suppressed", self.suppressed), ("child", self.child), ("live", self.live))
        return ",".join(name for name, on in flags if on)


def open_scripts(url: str, *, timeout: float) -> Scripts:
    """The scripts on the bridge's two clients for `url`: one for single calls, each reply timed by
    redis-py, and one for the shared round trips, each timed as a whole (bridge/runtime/batch.py)."""
    redis = connect(url, socket_timeout=timeout, health_check_interval=30)
    batched = connect(url, socket_timeout=None, socket_connect_timeout=timeout, health_check_interval=30)
    return Scripts(redis, batched=batched, timeout=timeout)


class Scripts:
    """The registered scripts. Calls take a client or a pipeline, so a batch is one round trip.

    On a pipeline a call is queued as a bare EVALSHA and the pipeline is run by `execute`, which
    recovers from NOSCRIPT: redis-py's own script calls on a pipeline would first ask SCRIPT EXISTS,
    one more round trip for every pipeline.
    """

    def __init__(
        self, redis: Redis, *, audit_cap: int = 200, batched: Redis | None = None, timeout: float | None = None
    ) -> None:
        """`batched` is the client of the shared round trips, each timed as a whole by `timeout`
        (bridge/runtime/batch.py); without it they go through `redis`."""
        self.redis = redis
        self.audit_cap = audit_cap
        self._apply: AsyncScript = redis.register_script(_source("apply_alert.lua"))
        self._fire: AsyncScript = redis.register_script(_source("fire_timer.lua"))
        self._claim: AsyncScript = redis.register_script(_source("claim_timers.lua"))
        self._lease: AsyncScript = redis.register_script(_source("lease.lua"))
        self._resolve: AsyncScript = redis.register_script(_source("resolve_incident.lua"))
        self._rotate: AsyncScript = redis.register_script(_source("rotate_epoch.lua"))
        self._token: AsyncScript = redis.register_script(_source("take_token.lua"))
        self._settle: AsyncScript = redis.register_script(_source("settle.lua"))
        self._adopt: AsyncScript = redis.register_script(_source("adopt.lua"))
        self._adopt_child: AsyncScript = redis.register_script(_source("adopt_child.lua"))  # Redis Cluster's
        self._adopt_parent: AsyncScript = redis.register_script(_source("adopt_parent.lua"))  # two halves
        self._storm: AsyncScript = redis.register_script(_source("storm_admit.lua"))
        self._beat: AsyncScript = redis.register_script(_source("heartbeat_ping.lua"))
        self._lapse: AsyncScript = redis.register_script(_source("heartbeat_expire.lua"))
        # Redis Cluster's heartbeats: the parts of the two above on one slot each (bridge/runtime/heartbeats.py)
        self._beat_admit: AsyncScript = redis.register_script(_source("heartbeat_admit.lua"))
        self._beat_state: AsyncScript = redis.register_script(_source("heartbeat_ping_state.lua"))
        self._lapse_state: AsyncScript = redis.register_script(_source("heartbeat_expire_state.lua"))
        self._problem: AsyncScript = redis.register_script(_source("problem_count.lua"))
        self._desk_event: AsyncScript = redis.register_script(_source("apply_desk_event.lua"))
        self._all = (
            self._apply,
            self._fire,
            self._claim,
            self._lease,
            self._resolve,
            self._rotate,
            self._token,
            self._settle,
            self._adopt,
            self._adopt_child,
            self._adopt_parent,
            self._storm,
            self._beat,
            self._lapse,
            self._beat_admit,
            self._beat_state,
            self._lapse_state,
            self._problem,
            self._desk_event,
        )
        on = batched or redis
        self._turn = 0  # where claim_sharded starts its round of the shards
        self._batch: Batcher | ClusterBatcher = (ClusterBatcher if is_cluster(on) else Batcher)(
            on, self.load, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the shared round trips' connections, and their own client if they have one."""
        await self._batch.aclose()
        if self._batch.redis is not self.redis:
            await self._batch.redis.aclose()

    async def load(self) -> None:
        for script in self._all:
            script.sha = await self.redis.script_load(script.script)

    async def execute(self, pipe: Pipeline, *, raise_on_error: bool = True) -> list[Any]:
        """Run a pipeline's commands, queued script calls included, in a round trip shared with the
        other pipelines run this event-loop turn (bridge/runtime/batch.py); `pipe` itself is not executed."""
        return await self._batch.execute(pipe, raise_on_error=raise_on_error)

    @staticmethod
    def _queue(pipe: Pipeline, script: AsyncScript, keys: Sequence[str], args: list[Any]) -> Pipeline:
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return pipe

    async def loaded(self) -> bool:
        found = await self.redis.script_exists(*[s.sha for s in self._all])
        return all(found)

    async def apply_alert(self, step: AlertStep, now_ms: int, pipe: Pipeline | None = None) -> Any:
        """Queue on `pipe` (decode the reply with `Applied.from_reply`), or call and decode now."""
        args: list[str | int | bytes] = [
            now_ms,
            step.base,
            step.identity,
            step.status,
            step.severity,
            step.occurrence,
            "1" if step.loose else "",
            step.alert_json,
            step.route,
            step.flags(),
            step.resource,
            step.policy,
            step.mark,
            step.followup,
            step.note,
            "1" if step.event else "",
            step.name,
            step.auto_ms,
            step.key[:200],
            step.source,
        ]
        names = keys.script_keys(step.base)
        if pipe is not None:
            return self._queue(pipe, self._apply, names, args)
        return Applied.from_reply(await self._apply(keys=list(names), args=args))

    def fire_timer(self, base: str, kind: str, due_ms: int, now_ms: int, policy: bytes, pipe: Pipeline) -> None:
        """Queue applying a due timer; decode its reply with `fired`."""
        self._queue(pipe, self._fire, keys.script_keys(base), [now_ms, kind, due_ms, policy])

    @staticmethod
    def fired(reply: list[Any]) -> tuple[str, int, list[tuple[str, int]]]:
        """A fire_timer.lua reply: (decision or '', outbox length, timers to add); for MOVED, the timer is
        to fire on the incident `timer_moved_to` names instead."""
        return _s(reply[0]), int(reply[2]), _pairs(reply[3])

    @staticmethod
    def timer_moved_to(reply: list[Any]) -> str:
        """The base a fire_timer.lua MOVED reply sends the timer to (the incident's topology parent)."""
        return _s(reply[4])

    def adopt(self, parent: str, child: str, now_ms: int, policy: bytes, pipe: Pipeline) -> None:
        """Queue a topology parent's adoption of one child incident (adopt.lua); decode with `adopted`."""
        pk, ck = keys.IncidentKeys(parent), keys.IncidentKeys(child)
        own = pk.script_keys()
        keys_ = [*own, *ck.script_keys(), ck.lease]
        self._queue(pipe, self._adopt, keys_, [now_ms, policy, parent, child, len(own)])

    def adopt_child(
        self, parent: str, parent_state: list[Any], child: str, now_ms: int, policy: bytes, pipe: Pipeline
    ) -> None:
        """Queue the child's half of an adoption on Redis Cluster (adopt_child.lua); `parent_state` is the
        parent's state, epoch and route as read just before. The reply is [outcome, share, child outbox length]."""
        ck = keys.IncidentKeys(child)
        epoch, route = (_s(v) if v is not None else "" for v in parent_state[1:3])
        self._queue(pipe, self._adopt_child, [*ck.script_keys(), ck.lease], [now_ms, policy, parent, child,
                    f"{parent}:{epoch}", route])  # fmt: skip

    def adopt_parent(self, parent: str, child: str, share: bytes, now_ms: int, policy: bytes, pipe: Pipeline) -> None:
        """Queue the parent's half (adopt_parent.lua), with the share the child's half returned. The reply is
        [outcome, alerts moved, parent outbox length]."""
        self._queue(pipe, self._adopt_parent, keys.IncidentKeys(parent).script_keys(),
                    [now_ms, policy, parent, child, share])  # fmt: skip

    @staticmethod
    def adopted(reply: list[Any]) -> tuple[str, int, int, int]:
        """An adopt.lua reply: (outcome, alerts moved, parent's outbox length, child's outbox length)."""
        return _s(reply[0]), int(reply[1]), int(reply[2]), int(reply[3])

    def storm_admit(
        self, count_key: str, flag_key: str, now_ms: int, window_ms: int, limit: int, bases: list[str], pipe: Pipeline
    ) -> None:
        """Queue admitting new incidents under a storm guard (storm_admit.lua); the reply is a flag per base
        of `bases`: 1 it may open its own incident, 0 it joins the storm's major incident."""
        self._queue(pipe, self._storm, [count_key, flag_key], [now_ms, window_ms, limit, *bases])

    def heartbeat_ping(self, keys_: list[str], args: list[str | int | bytes], pipe: Pipeline) -> None:
        """Queue one ping (heartbeat_ping.lua); its reply is [outcome, due]."""
        self._queue(pipe, self._beat, keys_, args)

    def heartbeat_expire(self, keys_: list[str], args: list[str | int | bytes], pipe: Pipeline) -> None:
        """Queue one heartbeat's expiry (heartbeat_expire.lua); its reply is 1 if it expired now."""
        self._queue(pipe, self._lapse, keys_, args)

    def heartbeat_admit(self, ids_key: str, bid: str, max_keys: int, pipe: Pipeline) -> None:
        """Queue heartbeat_admit.lua (Redis Cluster): its reply is 1 if the id may be watched."""
        self._queue(pipe, self._beat_admit, [ids_key], [bid, max_keys])

    def heartbeat_ping_state(self, state_key: str, args: list[str | int | bytes], pipe: Pipeline) -> None:
        """Queue heartbeat_ping_state.lua (Redis Cluster): its reply is [outcome, due, previous due]."""
        self._queue(pipe, self._beat_state, [state_key], args)

    def heartbeat_expire_state(self, state_key: str, args: list[str | int], pipe: Pipeline) -> None:
        """Queue heartbeat_expire_state.lua (Redis Cluster): its reply is 1 if the opening alert is to be added."""
        self._queue(pipe, self._lapse_state, [state_key], args)

    async def claim_timers(self, now_ms: int, lease_ms: int, limit: int, shards: keys.Shards) -> list[str]:
        return await self.claim_sharded(shards.timers, now_ms, lease_ms, limit)

    async def claim(self, zset: str, now_ms: int, lease_ms: int, limit: int) -> list[str]:
        """Up to `limit` members of `zset` due by now, re-scored to now + lease (see claim_timers.lua)."""
        pipe = self._queue(self.redis.pipeline(transaction=False), self._claim, [zset], [now_ms, lease_ms, limit])
        (reply,) = await self.execute(pipe)
        return [_s(m) for m in reply]

    async def claim_sharded(self, zsets: Sequence[str], now_ms: int, lease_ms: int, limit: int) -> list[str]:
        """`claim` over the shards of one sorted set (the ready queue's, the timers'): how many are due
        in each is counted first, in one round trip, and the `limit` shared among those that have some,
        starting from a different shard each time; their claims go in one more round trip. Nothing is
        claimed that is not taken: a member claimed and left would wait a whole lease."""
        if len(zsets) == 1:
            return await self.claim(zsets[0], now_ms, lease_ms, limit)
        pipe = self.redis.pipeline(transaction=False)
        for zset in zsets:
            pipe.zcount(zset, "-inf", now_ms)
        counts = await self.execute(pipe)
        self._turn = (self._turn + 1) % len(zsets)
        shares: list[tuple[str, int]] = []
        left = limit
        for i in range(len(zsets)):
            at = (self._turn + i) % len(zsets)
            share = min(int(counts[at]), left)
            if share > 0:
                shares.append((zsets[at], share))
                left -= share
        if not shares:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for zset, share in shares:
            self._queue(pipe, self._claim, [zset], [now_ms, lease_ms, share])
        return [_s(m) for reply in await self.execute(pipe) for m in reply]

    async def take_token(self, desk: str, now_ms: int, per_second: float, burst: int, key: str | None = None) -> int:
        """0 when the desk's shared bucket (or the bucket `key`) gave a token, else the ms to wait for one."""
        bucket = key or keys.desk_bucket(desk)
        return int(await self._token(keys=[bucket], args=[now_ms, per_second / 1000, burst]))

    async def rotate_epoch(self, base: str, old: str, new: str, now_ms: int, reason: str) -> bool:
        ik = keys.IncidentKeys(base)
        reply = await self._rotate(
            keys=[ik.state, ik.outbox, ik.audit], args=[old, new, now_ms, self.audit_cap, reason]
        )
        return bool(reply)

    async def lease(self, lease_key: str, token: str, op: str, lease_ms: int = 0, pipe: Pipeline | None = None) -> Any:
        """True if the lease was ours; on a pipeline, queued (the reply is 1 or 0)."""
        if pipe is not None:
            return self._queue(pipe, self._lease, [lease_key], [token, op, lease_ms])
        return bool(await self._lease(keys=[lease_key], args=[token, op, lease_ms]))

    def take(self, ik: keys.IncidentKeys, token: str, lease_ms: int, head: int, pipe: Pipeline) -> None:
        """Queue taking the lease with the first read of the outbox (its first `head` entries) and of
        the state (see lease.lua, "take")."""
        self._queue(pipe, self._lease, [ik.lease, ik.outbox, ik.state], [token, "take", lease_ms, head])

    def advance(self, ik: keys.IncidentKeys, token: str, lease_ms: int, entries: list[bytes], pipe: Pipeline) -> None:
        """Queue the end of one delivered action, made of `entries` (the head of the outbox): they are
        taken off it, once however often this runs; the reply is -1 if the lease was lost, 0 if the
        outbox is empty (lease released), else the outbox length (lease renewed)."""
        self._queue(pipe, self._lease, [ik.lease, ik.outbox], [token, "advance", lease_ms, len(entries), entries[0]])

    def pop(self, ik: keys.IncidentKeys, token: str, entries: list[bytes], pipe: Pipeline) -> None:
        """Queue taking an action's `entries` off the head of the outbox (once, however often this
        runs) without ending the action's drain: for one that was dead-lettered."""
        self._queue(pipe, self._lease, [ik.lease, ik.outbox], [token, "pop", 0, len(entries), entries[0]])

    def settle(self, ready: str, base: str, seen: float | None, pipe: Pipeline) -> None:
        """Queue letting go of an incident's ready marker (in its shard `ready`); `seen` is its score as
        read just before the drain's last read of the outbox. The reply is 1 if the marker moved since
        and was kept (see settle.lua)."""
        self._queue(pipe, self._settle, [ready], [base, "" if seen is None else int(seen)])

    async def problem_count(
        self, ik: keys.IncidentKeys, now_ms: int, window_ms: int, after: int, member: str, token: str, hold_ms: int
    ) -> list[str]:
        """Count a ticket the incident key opened towards its problem record (problem_count.lua, "count"):
        ["LINK", record], ["CLAIMED", member, ...], ["WAIT"] or ["COUNT", n]."""
        args: list[str | int] = [now_ms, window_ms, "count", after, member, token, hold_ms]
        return [_s(v) for v in await self._problem(keys=[ik.opened, ik.problem], args=args)]

    async def problem_set(self, ik: keys.IncidentKeys, now_ms: int, window_ms: int, token: str, record: str) -> bool:
        """Record the problem record a claim opened; True if the claim was still this caller's."""
        args: list[str | int] = [now_ms, window_ms, "set", token, record]
        return bool(await self._problem(keys=[ik.opened, ik.problem], args=args))

    async def problem_release(self, ik: keys.IncidentKeys, now_ms: int, token: str) -> bool:
        """Give up a claim whose problem record could not be opened (a later ticket may try again)."""
        return bool(await self._problem(keys=[ik.opened, ik.problem], args=[now_ms, 0, "release", token]))

    async def resolve_incident(
        self, base: str, epoch: str, now_ms: int, *, note: str, who: str, retention_ms: int
    ) -> tuple[str, str, int]:
        """Resolve by hand; returns (outcome, incident id, outbox length). See resolve_incident.lua."""
        reply = await self._resolve(
            keys=keys.IncidentKeys(base).script_keys(),
            args=[now_ms, epoch, note, who, retention_ms, self.audit_cap],
        )
        return _s(reply[0]), _s(reply[1]), int(reply[2])


@dataclass(frozen=True, slots=True)
class DeskEventApplied:
    """What apply_desk_event.lua answered."""

    outcome: str  # MUTED, REOPEN, OPEN, RESOLVED, CANCELLED, ACKNOWLEDGE, COMMENT, RECORDED, or why not applied
    incident_id: str
    outbox_len: int
    upstream_len: int
    silence_labels: list[str]  # CANCELLED: the labels (JSON) of each member that still fired


def apply_desk_event(
    scripts: Scripts,
    base: str,
    epoch: str,
    event: DeskEvent,
    *,
    ticket: str,
    policy: bytes,
    now_ms: int,
    pipe: Pipeline,
) -> None:
    """Queue applying one desk-side change to its incident (apply_desk_event.lua); decode the reply with
    `desk_event_applied`."""
    ik = keys.IncidentKeys(base)
    args: list[str | int | bytes] = [
        now_ms,
        epoch,
        event.kind.value,
        event.at_ms,
        event.event_id.replace(",", ";")[:200],
        event.author[:200],
        event.text[:1000],
        ticket[:200],
        policy,
        "1" if event.ours else "",
        event.desk,
    ]
    scripts._queue(
        pipe, scripts._desk_event, [ik.state, ik.members, ik.outbox, ik.audit, ik.details, ik.upstream], args
    )


def desk_event_applied(reply: list[Any]) -> DeskEventApplied:
    return DeskEventApplied(_s(reply[0]), _s(reply[1]), int(reply[2]), int(reply[3]), [_s(item) for item in reply[4]])


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(_s(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
