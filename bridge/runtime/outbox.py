"""An incident's outbox as delivery sees it: its entries folded into desk actions, the reads a drain
starts from, the signal that it has work, the ticket recorded for an epoch, the audit entry of what
the desk answered, and the dead letter of what it rejected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from redis.typing import EncodableT

from bridge.core import keys
from bridge.core.config import Route
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskError
from bridge.runtime import dead_letters
from bridge.runtime.context import Runtime

DEAD_LETTER_REPLIES = 3  # `dead_letter` queues the letter and the stream's two trims first
HEAD = 100  # outbox entries a drain reads at once (with the lease, and after)


@dataclass
class Action:
    """One desk call, made from one or more consecutive outbox entries."""

    kind: str  # OPEN, NOTE, REOPEN, RESOLVE, MERGE
    incident: str
    epoch: str
    route: str
    alert: dict[str, Any] | None
    entries: list[bytes] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # coalesced NOTE entries
    writes: dict[EncodableT, EncodableT] = field(default_factory=dict)  # state-hash entries to record once done
    clears: list[str] = field(default_factory=list)  # state-hash fields to remove once done
    marked: bool = False  # an OPEN whose `opening:` marker this drain set: no earlier attempt to look up
    settings: Route | None = None  # its route and desk, once bound (bridge.delivery.actions.DeskActions.bind)
    desk: str = ""
    into: str = ""  # MERGE: the incident (id) of the topology parent whose ticket this one duplicates


UNREADABLE = "UNREADABLE"  # the kind of an action made of an outbox entry that cannot be read


def coalesce(raw: list[bytes]) -> list[Action]:
    """Fold notes into the action before them when it is of the same epoch and can carry them.

    An entry that cannot be read (not JSON, or without its kind, incident, epoch and route) is an
    action of its own, of kind UNREADABLE, with the reason as its `alert`: delivery takes it off the
    outbox into the dead letters and goes on with the entries after it."""
    actions: list[Action] = []
    for item in raw:
        try:
            entry = orjson.loads(item)
            kind, epoch = entry["kind"], entry["epoch"]
            if not all(isinstance(entry[k], str) for k in ("kind", "incident", "epoch", "route")):
                raise TypeError("kind, incident, epoch and route must be strings")
            if not isinstance(entry.get("alert"), dict | None):
                raise TypeError("alert must be an object")
        except (ValueError, TypeError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            actions.append(Action(UNREADABLE, "", "", "", {"reason": reason}, [item]))
            continue
        last = actions[-1] if actions else None
        if kind == "NOTE" and last is not None and last.epoch == epoch and last.kind in ("OPEN", "NOTE", "REOPEN"):
            last.changes.append(entry)
            last.entries.append(item)
            continue
        action = Action(kind, entry["incident"], epoch, entry["route"], entry.get("alert"), [item])
        if kind == "MERGE":
            action.into = str(entry.get("into") or "")
        if kind == "NOTE":
            action.changes.append(entry)
        actions.append(action)
    return actions


def flush_at(action: Action, flush_ms: int, now: int) -> int | None:
    """When a note-only action is to go, if the flush interval since its first change is not over."""
    if action.kind != "NOTE":
        return None
    due = int(action.changes[0]["at"]) + flush_ms
    return due if due > now else None


def defer_changes(action: Action, flush_ms: int, now: int) -> bool:
    """Leave an open's changes in the outbox while their flush interval is not over: the open goes
    alone, and its changes, now notes at the head, make one work note with those still coming once
    the interval is over (not one now and another after). Returns whether it did."""
    if action.kind != "OPEN" or not action.changes or not flush_ms or int(action.changes[0]["at"]) + flush_ms <= now:
        return False
    action.changes, action.entries = [], action.entries[:1]
    return True


class Head(NamedTuple):
    """What a drain starts from: the outbox's first entries, the incident's state hash, the desks'
    breakers, and whether the read itself set the head OPEN's marker (so no earlier attempt was made)."""

    entries: list[bytes]
    view: dict[bytes, bytes]
    breakers: list[Any]
    marked: bool = False


def read_head(pipe: Any, ik: keys.IncidentKeys, desks: list[str]) -> None:
    """Queue the reads a drain starts from: the outbox's head, the incident's state, the breakers."""
    pipe.lrange(ik.outbox, 0, HEAD - 1)
    pipe.hgetall(ik.state)
    pipe.execute_command("MGET", *[keys.desk_breaker(d) for d in desks])  # one slot: {desks}


def signal(pipe: Any, ready: Mapping[str, int], shards: keys.Shards) -> None:
    """Queue marking incidents whose outboxes just got work (`ready`: base → when to deliver) in their
    ready shards: a marker is added where none is, and one already there moved by 1 ms, so that a
    drain ending meanwhile sees that work came after its last read (settle.lua). Whatever appends to
    an outbox calls this after the append (or, as the dead-letter retry and the engine's handoff do,
    sets a new score)."""
    for zset, marks in shards.by_ready(dict(ready)).items():
        pipe.zadd(zset, marks, nx=True)
        for base in marks:
            pipe.zincrby(zset, 1, base)


def ticket_ref(view: dict[bytes, bytes], epoch: str) -> TicketRef | None:
    """The ticket an epoch has, from the incident's state hash as read (`ticket:<epoch>`)."""
    raw = view.get(f"ticket:{epoch}".encode())
    if raw is None:
        return None
    ticket_id, display, url = orjson.loads(raw)
    return TicketRef(ticket_id, display, url)


def audit(pipe: Any, ik: keys.IncidentKeys, rt: Runtime, action: Action, outcome: str, answer: str) -> None:
    """Queue the audit entry of what the desk did with `action`."""
    entry = {
        "at": rt.clock(),
        "decision": "DESK",
        "action": action.kind,
        "outcome": outcome,
        "answer": rt.masker.text(answer),  # a desk's words may repeat what it was sent
        "incident": action.incident,
    }
    pipe.lpush(ik.audit, orjson.dumps(entry))
    pipe.ltrim(ik.audit, 0, rt.scripts.audit_cap - 1)


def dead_lettered(rt: Runtime, replies: list[Any]) -> None:
    """Count and log what the dead-letter stream's trims dropped, from the replies of a pipeline that
    `dead_letter` queued on first."""
    dead_letters.dropped(rt.metrics, replies[:DEAD_LETTER_REPLIES])


def dead_letter(pipe: Any, ik: keys.IncidentKeys, rt: Runtime, action: Action, exc: DeskError) -> None:
    """Queue a rejected action's dead letter, with the desk's answer, and its audit entry (the caller
    takes it off the outbox: `Scripts.pop`). Hand the pipeline's replies to `dead_lettered`."""
    # The request as sent and the desk's answer, without the mapping's secrets (bridge.core.secrets).
    entries = orjson.dumps([rt.masker.value(orjson.loads(e)) for e in action.entries])
    error = orjson.dumps(rt.masker.value(exc.record()), default=str)
    now = rt.clock()
    letter = {"kind": "desk_rejected", "incident": action.incident, "entries": entries, "error": error, "at": now}
    dead_letters.add(pipe, rt.tuning, [letter], now)
    audit(pipe, ik, rt, action, "dead-lettered", str(exc))


def unreadable(pipe: Any, ik: keys.IncidentKeys, rt: Runtime, action: Action) -> None:
    """Queue the dead letter of an outbox entry that cannot be read (kind `bad_record`), and report it
    (log, `bridge_bad_records_total`); the caller takes it off the outbox (`Scripts.pop`) and hands the
    pipeline's replies to `dead_lettered`."""
    reason = str((action.alert or {}).get("reason", ""))
    rt.bad_record("outbox_entry", ik.base, reason, action.entries[0])
    now = rt.clock()
    raw = rt.masker.value(action.entries[0])
    letter = {"kind": "bad_record", "incident": ik.base, "reason": reason, "raw": raw, "at": now}
    dead_letters.add(pipe, rt.tuning, [letter], now)
