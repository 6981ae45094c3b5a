"""How each simulator's records read back as `Ticket`s: the same shape for every desk, for the shared suites."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from adapters.simulators import jira, jsm_ops, remedy, webhook
from adapters.simulators.jira_adf import adf_to_text
from adapters.simulators.servicenow import EVENTS, STORE
from bridge.core.sync import MARKER

_CORRELATION = re.compile(r"^[^:\s]+:[^:\s]+:[^:\s]+$")


def unmarked(text: str) -> str:
    """A note as the route wrote it: without the marker line the desks add (adapters.desks.events.marked)."""
    return text.removesuffix(f"\n\n{MARKER}")


def _notes(texts: list[str]) -> list[str]:
    return [unmarked(t) for t in texts]


@dataclass
class Ticket:
    """A ticket as the simulator holds it, in the same shape for every desk."""

    id: str  # what the desk puts in TicketRef.id
    display: str
    correlation: str
    phase: str  # open, resolved or closed
    title: str
    notes: list[str] = field(default_factory=list)  # notes, comments, work logs; oldest first
    resolution: str = ""  # the resolve note where the desk keeps it apart from notes
    fields: dict[str, Any] = field(default_factory=dict)


def servicenow_tickets(app: web.Application) -> list[Ticket]:
    store = app[STORE]
    phases = {"6": "resolved", "7": "closed", "8": "closed"}
    return [
        Ticket(
            id=r["sys_id"],
            display=r["number"],
            correlation=r["correlation_id"],
            phase=phases.get(r["state"], "open"),
            title=r["short_description"],
            notes=_notes(store.notes(r["sys_id"])),
            resolution=r["close_notes"],
            fields=dict(r),
        )
        for r in store.incidents.values()
    ]


def event_tickets(app: web.Application) -> list[Ticket]:
    events = app[EVENTS]
    keys = list(dict.fromkeys(e["message_key"] for e in events.events))
    tickets = []
    for key in keys:
        mine = [e for e in events.events if e["message_key"] == key]
        alert = events.alert(key)
        notes = [orjson.loads(e["additional_info"]).get("bridge_note", "") for e in mine if e["additional_info"]]
        clears = [e for e in mine if e["severity"] == "0"]
        tickets.append(
            Ticket(
                id=key,
                display=key,
                correlation=key,
                phase="resolved" if alert is None or alert["state"] == "Closed" else "open",
                title=f"{mine[0]['type']} on {mine[0]['node']}: {mine[0]['description']}",
                notes=[n for n in notes if n],
                resolution=orjson.loads(clears[-1]["additional_info"]).get("bridge_note", "") if clears else "",
                fields={"events": mine, "alert": alert},
            )
        )
    return tickets


def jira_tickets(app: web.Application) -> list[Ticket]:
    store = app[jira.STORE]
    tickets = []
    for issue in store.issues.values():
        labels = issue.fields.get("labels", [])
        correlation = next((label for label in labels if _CORRELATION.match(label)), "")
        category = issue.category
        phase = "closed" if issue.status in ("Closed", "Canceled") else "resolved" if category == "done" else "open"
        tickets.append(
            Ticket(
                id=issue.key,
                display=issue.key,
                correlation=correlation,
                phase=phase,
                title=str(issue.fields.get("summary", "")),
                notes=_notes([adf_to_text(c["body"]) for c in issue.comments]),
                fields={"issue": issue},
            )
        )
    return tickets


def remedy_tickets(app: web.Application) -> list[Ticket]:
    store = app[remedy.STORE]
    phases = {"Resolved": "resolved", "Closed": "closed", "Cancelled": "closed"}
    return [
        Ticket(
            id=r["Request ID"],
            display=r["Incident Number"],
            correlation=r["Vendor Ticket Number"] or "",
            phase=phases.get(r["Status"], "open"),
            title=r["Description"],
            notes=_notes(store.notes(r["Incident Number"])),
            resolution=r["Resolution"] or "",
            fields=dict(r),
        )
        for r in store.incidents.values()
    ]


def webhook_tickets(app: web.Application) -> list[Ticket]:
    return [
        Ticket(
            id=str(t["id"]),
            display=t["number"],
            correlation=t["correlation_id"],
            phase=t["status"],
            title=t["title"],
            notes=_notes([c["body"] for c in t["comments"]]),
            resolution=unmarked(t["resolution"]),
            fields=dict(t),
        )
        for t in app[webhook.STORE].tickets.values()
    ]


def jsm_ops_tickets(app: web.Application) -> list[Ticket]:
    """One ticket per alias (the correlation id): its alerts (a reopening creates one more), oldest first."""
    alerts = list(app[jsm_ops.STORE].alerts.values())
    tickets = []
    for alias in dict.fromkeys(a["alias"] for a in alerts):
        mine = [a for a in alerts if a["alias"] == alias]
        closes = [unmarked(n["note"]) for a in mine for n in a["notes"] if n.get("close")]
        tickets.append(
            Ticket(
                id=alias,
                display=alias,
                correlation=alias,
                phase="resolved" if mine[-1]["status"] == "closed" else "open",
                title=mine[0]["message"],
                notes=_notes([n["note"] for a in mine for n in a["notes"] if not n.get("close")]),
                resolution=closes[-1] if closes else "",
                fields={"alerts": mine},
            )
        )
    return tickets
