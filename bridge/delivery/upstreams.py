"""Upstream actions of the loop back: acknowledge, extend, release and comment in the monitoring tools,
through the `Upstream` plugins (bridge.core.sync), never in the way of the tickets.

Each incident's upstream actions wait in their own list (`inc:{…}:upstream`, apply_desk_event.lua appends),
not in the desk outbox: a tool that is down never holds a ticket back. The incidents with work are in the
`upready` sorted set, by when to try; a worker claims them (re-scored a lease ahead, as timers are, so only
one replica works on an incident at a time and one that dies leaves it to another), makes the head action's
call, and takes it off the list once done. A transient failure opens the upstream's breaker (shared through
Redis) and tries again later with back-off; a rejected call is a dead letter.

An acknowledgement that expires (an Alertmanager silence) is kept alive: the handle the plugin returned is
kept on the incident (`ack:<source>`, until `ack_until:<source>`) and extended before it ends while the
incident is live and its ticket open; once the incident is resolved (its alerts cleared) or the ticket was
resolved or cancelled at the desk, it is released.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import redis.exceptions
import structlog

from bridge.core import keys
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskError, DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement, Upstream
from bridge.runtime import dead_letters
from bridge.runtime.context import Runtime, wait_for_event

log = structlog.get_logger("bridge.delivery.upstreams")
LEASE_MS = 60_000  # an incident claimed is this replica's for this long (upstream calls time out sooner)
ACK_WINDOW_MS = 3_600_000  # an expiring acknowledgement lasts this long ...
EXTEND_BEFORE_MS = 900_000  # ... and is extended this long before it ends
FIRST_BACKOFF_MS, MAX_BACKOFF_MS = 2_000, 300_000
MEMBERS_READ = 1_000  # members' labels read per acknowledgement at most


class UpstreamWorker:
    def __init__(self, runtime: Runtime, wake: asyncio.Event | None = None) -> None:
        self.rt = runtime
        self.wake = wake or asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.tick():
                    continue
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("upstreams_redis_unavailable", error=str(exc))
            except Exception:  # a claimed incident is tried again once its claim ends: the loop must not die
                log.exception("upstreams_tick_failed")
            self.wake.clear()
            await wait_for_event(stop, 1.0)
            if self.wake.is_set():
                self.wake.clear()

    async def tick(self) -> int:
        """Work on every incident due; returns how many were claimed."""
        claimed = await self.rt.scripts.claim(keys.UPSTREAM_READY, self.rt.clock(), LEASE_MS, 50)
        for base in claimed:
            await self.work(base)
        return len(claimed)

    async def work(self, base: str) -> None:
        """The incident's actions, in order, until one must wait; then when to come back (or not)."""
        ik = keys.IncidentKeys(base)
        redis = self.rt.redis
        while True:
            raw: Any = await redis.lindex(ik.upstream, 0)
            if raw is None:
                break
            try:
                entry: dict[str, Any] = orjson.loads(raw)
                action, source = str(entry["kind"]), str(entry["source"])
            except (ValueError, KeyError, TypeError) as exc:
                self.rt.bad_record("upstream_action", base, exc, raw)
                await redis.lrem(ik.upstream, 1, raw)
                continue
            retry_at = await self._one(ik, action, source, entry)
            if retry_at is not None:
                await redis.zadd(keys.UPSTREAM_READY, {base: retry_at})
                return
            await redis.lrem(ik.upstream, 1, raw)
            await redis.hdel(ik.state, "up_attempts")
        due = await self._keep_alive(ik)
        if due is None:
            await redis.zrem(keys.UPSTREAM_READY, base)
        else:
            await redis.zadd(keys.UPSTREAM_READY, {base: due})

    async def _one(self, ik: keys.IncidentKeys, action: str, source: str, entry: dict[str, Any]) -> int | None:
        """Make one action's call; None when it is done with (made, rejected, or nothing to do), else when
        to try again."""
        upstream = self.rt.upstreams.get(source)
        if upstream is None:  # the source has no `upstream:` (any more): nothing to tell
            self.rt.metrics.upstream_actions.labels(source, action.lower(), "no_upstream").inc()
            return None
        breaker: Any = await self.rt.redis.get(keys.upstream_breaker(source))
        now = self.rt.clock()
        if breaker is not None and int(breaker) > now:
            return int(breaker) + 50
        ack = await self._acknowledgement(ik, source, entry, firing_only=action == "ACK")
        started = time.perf_counter()
        try:
            handle = await self._call(upstream, action, ack, entry)
        except DeskTransient as exc:
            self.rt.metrics.upstream_actions.labels(source, action.lower(), "transient").inc()
            attempts = int(await self.rt.redis.hincrby(ik.state, "up_attempts", 1))
            wait = (
                int(exc.retry_after * 1000)
                if exc.retry_after
                else min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS << min(attempts - 1, 10))
            )
            until = self.rt.clock() + wait
            await self.rt.redis.set(keys.upstream_breaker(source), until, px=wait)
            log.warning("upstream_transient", source=source, action=action, error=str(exc), retry_in_ms=wait)
            return until
        except DeskError as exc:  # rejected: as a desk's, a dead letter
            self.rt.metrics.upstream_actions.labels(source, action.lower(), "rejected").inc()
            await self._dead_letter(ik, entry, exc)
            return None
        self.rt.metrics.upstream_actions.labels(source, action.lower(), "ok").inc()
        log.info(
            "upstream_acted", source=source, action=action, incident=entry.get("incident"),
            ms=int((time.perf_counter() - started) * 1000),
        )  # fmt: skip
        audit = {"at": self.rt.clock(), "decision": "UPSTREAM", "action": action, "source": source, "outcome": "ok",
                 "author": ack.author, "incident": entry.get("incident", "")}  # fmt: skip
        await self.rt.redis.lpush(ik.audit, orjson.dumps(audit))
        await self.rt.redis.ltrim(ik.audit, 0, self.rt.scripts.audit_cap - 1)
        if action in ("ACK", "EXTEND"):
            await self.rt.redis.hset(ik.state, mapping={f"ack:{source}": handle, f"ack_until:{source}": ack.until_ms})
        elif action == "RELEASE":
            await self.rt.redis.hdel(ik.state, f"ack:{source}", f"ack_until:{source}")
        return None

    @staticmethod
    async def _call(upstream: Upstream, action: str, ack: Acknowledgement, entry: dict[str, Any]) -> str:
        match action:
            case "ACK":
                return await upstream.acknowledge(ack)
            case "EXTEND":
                return await upstream.extend(ack)
            case "RELEASE":
                await upstream.release(ack)
            case "COMMENT":
                await upstream.comment(ack, f"{entry.get('text', '')}\n{MARKER}")
            case _:
                raise DeskRejected(f"unknown upstream action {action}", action=action)
        return ""

    async def _acknowledgement(
        self, ik: keys.IncidentKeys, source: str, entry: dict[str, Any], *, firing_only: bool
    ) -> Acknowledgement:
        """What the plugin is told: the incident's members of that source (their labels), the ticket, who."""
        state: Any = await self.rt.redis.hmget(ik.state, "epoch", f"ack:{source}")
        epoch = _s(state[0]) if state[0] is not None else str(entry.get("epoch", ""))
        ticket_raw: Any = await self.rt.redis.hget(ik.state, f"ticket:{entry.get('epoch') or epoch}")
        ref = TicketRef(*orjson.loads(ticket_raw)) if ticket_raw else TicketRef(str(entry.get("ticket", "")))
        statuses: Any = await self.rt.redis.hgetall(ik.members) if firing_only else {}
        members: list[dict[str, str]] = []
        cursor = 0
        while len(members) < MEMBERS_READ:
            scanned: Any = await self.rt.redis.hscan(ik.details, cursor, match="s:*", count=200)
            cursor, page = scanned
            for field, value in page.items():
                kind, _, labels = _s(value).partition("|")
                if kind != source or not labels:
                    continue
                if firing_only and "|resolved|" in _s(statuses.get(field[2:], b"|resolved|")):
                    continue
                members.append({str(k): str(v) for k, v in orjson.loads(labels).items()})
            if not cursor:
                break
        ticket = ref.display or ref.id
        author = str(entry.get("author", ""))
        comment = f"Acknowledged from ticket {ticket}" + (f" by {author}" if author else "") + f" {ref.url} {MARKER}"
        return Acknowledgement(
            incident=ik.base,
            source=source,
            ticket=ref,
            author=author,
            comment=" ".join(comment.split()),
            members=members,
            until_ms=self.rt.clock() + ACK_WINDOW_MS,
            handle=_s(state[1]) if state[1] is not None else "",
        )

    async def _keep_alive(self, ik: keys.IncidentKeys) -> int | None:
        """Expiring acknowledgements of a live incident whose ticket is open: when to extend the first
        (queued now if due). Of one resolved, or whose ticket is not open: released now. None: nothing held."""
        state: Any = await self.rt.redis.hgetall(ik.state)
        held = {_s(k)[4:]: _s(v) for k, v in state.items() if _s(k).startswith("ack:") and v}
        if not held:
            return None
        live = _s(state.get(b"state", b"")) in ("open", "resolving") and _s(state.get(b"desk_open", b"1")) != "0"
        now = self.rt.clock()
        due: list[int] = []
        for source in held:
            until = int(state.get(f"ack_until:{source}".encode(), b"0") or 0)
            if not live:
                await self._queue(ik, "RELEASE", source, state)
                due.append(now)
            elif until - EXTEND_BEFORE_MS <= now:
                await self._queue(ik, "EXTEND", source, state)
                due.append(now)
            else:
                due.append(until - EXTEND_BEFORE_MS)
        return min(due)

    async def _queue(self, ik: keys.IncidentKeys, action: str, source: str, state: dict[bytes, bytes]) -> None:
        epoch = _s(state.get(b"epoch", b""))
        entry = {"kind": action, "source": source, "incident": f"{ik.base}:{epoch}", "epoch": epoch,
                 "at": self.rt.clock(), "author": "", "text": ""}  # fmt: skip
        await self.rt.redis.rpush(ik.upstream, orjson.dumps(entry))

    async def _dead_letter(self, ik: keys.IncidentKeys, entry: dict[str, Any], exc: DeskError) -> None:
        now = self.rt.clock()
        letter = {
            "kind": "upstream_rejected",
            "incident": str(entry.get("incident") or f"{ik.base}:{entry.get('epoch', '')}"),  # `<base>:<epoch>`
            "entries": orjson.dumps([self.rt.masker.value(entry)]),
            "error": orjson.dumps(self.rt.masker.value(exc.record()), default=str),
            "at": now,
        }
        pipe = self.rt.redis.pipeline(transaction=False)
        dead_letters.add(pipe, self.rt.tuning, [letter], now)
        pipe.lpush(ik.audit, orjson.dumps({"at": now, "decision": "UPSTREAM", "action": entry.get("kind"),
                                           "source": entry.get("source"), "outcome": "dead-lettered",
                                           "answer": self.rt.masker.text(str(exc))}))  # fmt: skip
        replies = await self.rt.scripts.execute(pipe)
        dead_letters.dropped(self.rt.metrics, replies[:-1])
        log.warning("upstream_rejected", source=entry.get("source"), action=entry.get("kind"), error=str(exc))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
