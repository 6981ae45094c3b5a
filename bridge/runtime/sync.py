"""The loop back's shared records in Redis: desk events in their stream, the ticket -> incident index, and the
upstream actions' work queue. The ingress (push and poll) writes events, the engine applies them, delivery
records tickets and makes the upstream calls; they meet here and in Redis only."""

from __future__ import annotations

import re
from typing import Any

import orjson

from bridge.core import keys
from bridge.core.desk import TicketRef
from bridge.core.sync import DeskEvent, DeskEventKind

STREAM_MAXLEN = 100_000  # desk events kept in the stream (approximately): a bound, far above any backlog
BASE = re.compile(r"^([A-Za-z0-9_.-]+:[^\s{}]{1,200}):([0-9a-z]{1,16})$")  # `<route id>:<key hash>:<epoch>`


def event_fields(event: DeskEvent) -> dict[str, bytes]:
    """A desk event as its stream entry."""
    ticket = event.ticket
    record = {
        "desk": event.desk,
        "ticket": [ticket.id, ticket.display, ticket.url],
        "kind": event.kind.value,
        "at": event.at_ms,
        "id": event.event_id,
        "author": event.author,
        "text": event.text,
        "cid": event.correlation_id,
        "ours": event.ours,
    }
    return {"e": orjson.dumps(record)}


def event_of(fields: dict[bytes, bytes]) -> DeskEvent:
    """A stream entry back as a desk event; ValueError (or KeyError, TypeError) if it cannot be read."""
    record: dict[str, Any] = orjson.loads(fields[b"e"])
    tid, display, url = record["ticket"]
    return DeskEvent(
        desk=str(record["desk"]),
        ticket=TicketRef(str(tid), str(display), str(url)),
        kind=DeskEventKind(record["kind"]),
        at_ms=int(record["at"]),
        event_id=str(record["id"]),
        author=str(record.get("author", "")),
        text=str(record.get("text", "")),
        correlation_id=str(record.get("cid", "")),
        ours=bool(record.get("ours", False)),
    )


def queue_events(pipe: Any, events: list[DeskEvent]) -> None:
    """Queue adding desk events to their stream (bounded, approximately: STREAM_MAXLEN)."""
    for event in events:
        pipe.xadd(keys.DESK_EVENTS, event_fields(event), maxlen=STREAM_MAXLEN, approximate=True)


def record_ticket(pipe: Any, desk: str, ticket_id: str, incident_id: str) -> None:
    """Queue recording which incident (`<base>:<epoch>`) a desk's ticket belongs to (delivery, at open)."""
    pipe.hset(keys.desk_tickets(desk), ticket_id, incident_id)


def incident_of(indexed: bytes | str | None, correlation_id: str) -> tuple[str, str] | None:
    """(base, epoch) of a desk event's incident: from the ticket index, else from the correlation id the
    ticket carries (the incident id itself); None when neither names one."""
    for candidate in (indexed.decode() if isinstance(indexed, bytes) else indexed, correlation_id.strip()):
        if candidate:
            found = BASE.match(candidate)
            if found:
                return found.group(1), found.group(2)
    return None
