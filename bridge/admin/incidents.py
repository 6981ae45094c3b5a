"""Reading incidents back (the list, one with its members, outbox and audit trail) and resolving
one by hand. The CLI and the admin API both answer with these functions, so they say the same."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.core import keys
from bridge.runtime import outbox
from bridge.runtime.bad_records import Reporter
from bridge.runtime.scripts import Redis, Scripts

MEMBER_FIELDS = ("occurrence", "status", "severity", "seen", "resource")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def list_incidents(
    redis: Redis,
    *,
    state: str | None = None,
    route: str | None = None,
    limit: int = 100,
    bad_record: Reporter | None = None,
) -> list[dict[str, Any]]:
    """Newest change first; `state` filters on open, resolving, resolved (...), `route` on the route.
    An incident whose state cannot be read is left out, and reported to `bad_record`."""
    report = bad_record or Reporter()
    out: list[dict[str, Any]] = []
    start, page = 0, max(limit * 4, 100)
    while len(out) < limit:
        bases = await redis.zrevrange(keys.INCIDENTS, start, start + page - 1)
        if not bases:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.hgetall(keys.IncidentKeys(_s(base)).state)
            rows = await pipe.execute()
        for base, row in zip(bases, rows, strict=True):
            if not row:
                continue  # expired
            try:
                summary = _summary(_s(base), {_s(k): _s(v) for k, v in row.items()})
            except _UNREADABLE as exc:
                report("incident", _s(base), exc, tuple(sorted(row.items())))
                continue
            if (state is None or summary["state"] == state) and (route is None or summary["route"] == route):
                out.append(summary)
            if len(out) >= limit:
                break
        start += page
    return out


def base_and_epoch(incident: str) -> tuple[str, str]:
    """An incident id `route:hash:epoch` or a base `route:hash` (epoch ""): the base and the epoch."""
    if incident.count(":") < 2:
        return incident, ""  # a base, or no incident at all (then nothing is found under it)
    return keys.base_of(incident), incident.rsplit(":", 1)[1]


async def show_incident(redis: Redis, incident: str, bad_record: Reporter | None = None) -> dict[str, Any] | None:
    """By incident id (`route:hash:epoch`) or base (`route:hash`). What cannot be read of it (its state,
    an outbox or audit entry) is shown as `{"unreadable": <the stored text>}`, and reported."""
    report = bad_record or Reporter()
    base, _ = base_and_epoch(incident)
    ik = keys.IncidentKeys(base)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(ik.state)
        pipe.hgetall(ik.members)
        pipe.lrange(ik.outbox, 0, -1)
        pipe.lrange(ik.audit, 0, -1)
        pipe.lrange(ik.changes, 0, -1)
        pipe.lrange(ik.upstream, 0, -1)
        state, members, outbox, audit, changes, upstream = await pipe.execute()
    if not state:
        return None
    row = {_s(k): _s(v) for k, v in state.items()}
    try:
        summary = _summary(base, row)
    except _UNREADABLE as exc:
        report("incident", base, exc, tuple(sorted(state.items())))
        summary = {"id": base, "unreadable": row}
    summary["members"] = {_s(identity): _member(_s(v)) for identity, v in members.items()}
    summary["outbox"] = [_entry(e, base, "outbox_entry", report) for e in outbox]
    summary["audit"] = _story(row.get("first"), audit, changes, lambda e: _entry(e, base, "incident", report))
    summary["repeats"] = {k.removeprefix("repeats:"): int(v) for k, v in row.items() if k.startswith("repeats:")}
    summary["changes_dropped"] = int(row.get("changes_dropped", "0") or 0)
    # The loop back: what people did at the desk (with who), and what is still to tell the tools.
    desk_fields = ("at", "desk_at", "desk", "kind", "author", "ticket", "text", "outcome")
    summary["desk_events"] = [
        {k: e.get(k) for k in desk_fields}
        for e in summary["audit"]
        if isinstance(e, dict) and e.get("decision") == "DESK_EVENT"
    ]
    summary["upstream"] = [_entry(e, base, "upstream_action", report) for e in upstream]
    summary["muted"] = row.get("muted") == "1"
    return summary


def _story(first: str | None, audit: list[Any], changes: list[Any], load: Callable[[Any], Any]) -> list[Any]:
    """The audit trail, newest first: the milestones (opens, resolves, what the desk did, the first alert)
    and the other decisions kept, merged by time; repeats are counted apart (`repeats`), and the changes
    that made room for newer ones in `changes_dropped` (apply_alert.lua)."""
    raw = [*audit, *changes]
    if first and first.encode() not in {_b(e) for e in raw}:  # the first alert, unless still listed
        raw.append(first.encode())
    entries = [load(e) for e in raw]
    order = sorted(range(len(entries)), key=lambda i: -_at(entries[i]))  # stable: ties keep list order
    return [entries[i] for i in order]


def _at(entry: Any) -> int:
    at = entry.get("at") if isinstance(entry, dict) else None
    return at if isinstance(at, int) else 0


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


_UNREADABLE = (ValueError, TypeError, IndexError, KeyError)  # of a stored record: orjson's errors are ValueErrors


def _entry(raw: Any, base: str, kind: str, report: Reporter) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        report(kind, base, exc, raw)
        return {"unreadable": _s(raw)[:1000]}


@dataclass(frozen=True, slots=True)
class Resolved:
    outcome: str  # RESOLVE, not_found, stale_epoch, already_resolved, pending
    incident: str
    outbox_len: int

    @property
    def ok(self) -> bool:
        return self.outcome == "RESOLVE"


async def resolve_incident(
    redis: Redis,
    scripts: Scripts,
    incident: str,
    *,
    now_ms: int,
    retention_ms: int,
    note: str,
    who: str,
    shards: keys.Shards,
) -> Resolved:
    """Resolve by hand through resolve_incident.lua, then queue the desk call for delivery."""
    base, epoch = base_and_epoch(incident)
    outcome, incident_id, outbox_len = await scripts.resolve_incident(
        base, epoch, now_ms, note=note, who=who, retention_ms=retention_ms
    )
    async with redis.pipeline(transaction=False) as pipe:
        if outbox_len:  # also when an earlier call appended and ended before it could say so
            outbox.signal(pipe, {base: now_ms}, shards)
        if outcome == "RESOLVE":
            pipe.zadd(keys.INCIDENTS, {base: now_ms})
        await pipe.execute()
    return Resolved(outcome, incident_id or incident, outbox_len)


def _member(value: str) -> dict[str, Any]:
    """A member record, `occurrence|status|severity|seen|resource` with `~marks|` (the follow-ups seen,
    apply_alert.lua) before the resource once there are any."""
    parts = value.split("|", len(MEMBER_FIELDS) - 1)
    member: dict[str, Any] = dict(zip(MEMBER_FIELDS, parts, strict=False))
    marks, bar, resource = member.get("resource", "").partition("|")
    if bar and marks.startswith("~") and all(c in "0123456789abcdef," for c in marks[1:]):
        member["resource"], member["marks"] = resource, [m for m in marks[1:].split(",") if m]
    for name in ("occurrence", "seen"):
        if name in member and member[name].lstrip("-").isdigit():
            member[name] = int(member[name])
    return member


def _summary(base: str, row: dict[str, str]) -> dict[str, Any]:
    epoch = row.get("epoch", "")
    ticket = row.get(f"ticket:{epoch}")
    ref = orjson.loads(ticket) if ticket else None
    return {
        "id": f"{base}:{epoch}",
        "route": row.get("route", base.split(":", 1)[0]),
        "state": row.get("state", ""),
        "firing": int(row.get("firing", "0") or 0),
        "opened_at": int(row.get("opened_at", "0") or 0),
        "resolved_at": int(row.get("resolved_at", "0") or 0),
        "reopened": int(row.get("reopened", "0") or 0),
        "resolved_by": row.get("resolved_by", ""),
        "ticket": {"id": ref[0], "display": ref[1], "url": ref[2]} if ref else None,
    }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the incidents index (the status page's list): the rows found, where to go on from (the
    index position after the last one looked at; None at its end), how many were looked at, and the size."""

    rows: list[dict[str, Any]]
    next: int | None
    looked_at: int
    total: int


async def page_incidents(
    redis: Redis,
    *,
    start: int = 0,
    limit: int = 50,
    state: str | None = None,
    routes: Collection[str] | None = None,
    look_at: int = 1000,
    bad_record: Reporter | None = None,
) -> Page:
    """Newest change first from index position `start`: at most `limit` rows (`list_incidents`' summaries
    and each one's `members` count) of `state` and of `routes` (ids), looking at no more than `look_at`
    entries of the index, so that a page costs the same with 10,000 incidents as with 100. An entry of
    another route is passed over by its name alone, one of another state by one HGET; a row shown costs one
    HGETALL and one HLEN."""
    report = bad_record or Reporter()
    rows: list[dict[str, Any]] = []
    position, looked, total = max(0, start), 0, -1
    while len(rows) < limit and looked < look_at:
        chunk = min(200, look_at - looked)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.INCIDENTS, position, position + chunk - 1)
            if total < 0:
                pipe.zcard(keys.INCIDENTS)  # the index's size, in the first round trip
            found, *size = await pipe.execute()
        total = int(size[0]) if size else total
        bases = [_s(b) for b in found]
        if not bases:
            return Page(rows, None, looked, total)
        wanted = [(i, b) for i, b in enumerate(bases) if routes is None or b.split(":", 1)[0] in routes]
        if state is not None and wanted:  # the state alone first: a filter that matches little reads little
            async with redis.pipeline(transaction=False) as pipe:
                for _, base in wanted:
                    pipe.hget(keys.IncidentKeys(base).state, "state")
                states = await pipe.execute()
            wanted = [w for w, s in zip(wanted, states, strict=True) if s is not None and _s(s) == state]
        async with redis.pipeline(transaction=False) as pipe:
            for _, base in wanted:
                ik = keys.IncidentKeys(base)
                pipe.hgetall(ik.state)
                pipe.hlen(ik.members)
            replies = await pipe.execute()
        taken = len(bases)
        for n, (i, base) in enumerate(wanted):
            row, members = replies[2 * n], replies[2 * n + 1]
            if not row:
                continue  # expired
            fields = {_s(k): _s(v) for k, v in row.items()}
            try:
                summary = _summary(base, fields)
                changed = int(fields.get("changed_at", "0") or 0)
            except _UNREADABLE as exc:
                report("incident", base, exc, tuple(sorted(row.items())))
                continue
            if state is not None and summary["state"] != state:
                continue
            summary["members"] = int(members)
            summary["changed_at"] = changed
            rows.append(summary)
            if len(rows) >= limit:
                taken = i + 1
                break
        position += taken
        looked += taken
        if len(bases) < chunk and taken == len(bases):
            return Page(rows, None, looked, total)
    return Page(rows, position if position < total else None, looked, max(total, 0))
