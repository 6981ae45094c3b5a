"""Every desk flavour the contract suite runs: its simulator, desk config, fields, and a uniform view of tickets.

A `Variant` knows how to start its simulator, configure the desk against it, which fields to
open, update and route with, how to make the simulator refuse (403), expire or revoke the desk's
credentials, and how to read the simulator's records back as `Ticket`s, the same shape for all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from adapters.simulators import jira, remedy, servicenow, webhook
from adapters.simulators.faults import FAULTS
from adapters.simulators.jira_adf import adf_to_text
from adapters.simulators.servicenow import EVENTS, OAUTH, STORE
from adapters.simulators.servicenow_oauth import DEFAULT_CLIENT

SN_USER, SN_PASSWORD = "bridge", "s3cret"
MAX_PAYLOAD = 64 * 1024  # the ServiceNow simulators' request size limit in these tests
_CORRELATION = re.compile(r"^[^:\s]+:[^:\s]+:[^:\s]+$")


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


@dataclass(frozen=True)
class Variant:
    name: str
    app: Callable[[], web.Application]
    config: Callable[[str], dict[str, Any]]  # the desk config for the simulator at this URL
    fields: dict[str, str]  # open fields, as a route renders them
    update: dict[str, str]  # update fields; `state().fields` shows them afterwards
    bad_update: dict[str, str]  # update fields the desk refuses with 400 (None: see bad_note)
    route_fields: dict[str, str]  # ticket.fields templates for the end-to-end scenarios
    view: Callable[[web.Application], list[Ticket]]
    forbid: Callable[[web.Application], None]  # from now on, writes answer 403
    expire: Callable[[web.Application], None]  # the session or token the desk holds stops working
    revoke: Callable[[web.Application], None]  # ... and signing in again is refused
    missing_id: str  # a ticket id the desk does not have
    missing_status: int | None = 404  # None: the desk notices without asking (EM has no ticket to GET)
    sign_ins: Callable[[web.Application], int] | None = None  # token desks: logins so far
    bad_note: bool = False  # the 400 comes from a note over the size limit instead of bad_update

    def requests(self, app: web.Application) -> list[dict[str, Any]]:
        for key in (STORE, jira.STORE, remedy.STORE, webhook.STORE):
            if key in app:
                return list(app[key].requests)
        raise AssertionError("no request log")


def _static_expire(app: web.Application) -> None:
    app[FAULTS].set(expire_auth=1)


def _static_revoke(app: web.Application) -> None:
    app[FAULTS].set(expire_auth=2)


# -- ServiceNow ----------------------------------------------------------------------------------


def _sn_app() -> web.Application:
    return servicenow.make_app(user=SN_USER, password=SN_PASSWORD, max_payload=MAX_PAYLOAD)


def _sn_view(app: web.Application) -> list[Ticket]:
    store = app[STORE]
    phases = {"6": "resolved", "7": "closed", "8": "closed"}
    return [
        Ticket(
            id=r["sys_id"],
            display=r["number"],
            correlation=r["correlation_id"],
            phase=phases.get(r["state"], "open"),
            title=r["short_description"],
            notes=store.notes(r["sys_id"]),
            resolution=r["close_notes"],
            fields=dict(r),
        )
        for r in store.incidents.values()
    ]


def _sn_forbid(app: web.Application) -> None:
    app[STORE].acl_denied = True


def _oauth_expire(app: web.Application) -> None:
    app[OAUTH].expire_tokens()


def _oauth_revoke(app: web.Application) -> None:
    oauth = app[OAUTH]
    oauth.revoke()
    oauth.password = "rotated"
    oauth.clients = {client: "rotated" for client in oauth.clients}


def _sn_config(auth: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    return lambda url: {"kind": "servicenow", "url": url} | auth


_SN_FIELDS = {"short_description": "HighCPU on web-01", "description": "CPU > 95%", "impact": "2", "urgency": "2"}
_SN_ROUTE = {
    "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
    "description": "{{ summary }}",
    "impact": "{{ {'critical': '1', 'major': '2'}.get(severity, '3') }}",
    "urgency": "{{ {'critical': '1'}.get(severity, '2') }}",
}
_OAUTH_PASSWORD = {
    "auth": "oauth",
    "user": SN_USER,
    "password": SN_PASSWORD,
    "client_id": DEFAULT_CLIENT[0],
    "client_secret": DEFAULT_CLIENT[1],
}
_SN_COMMON: dict[str, Any] = {
    "app": _sn_app,
    "fields": _SN_FIELDS,
    "update": {"urgency": "1"},
    "bad_update": {},
    "bad_note": True,
    "route_fields": _SN_ROUTE,
    "view": _sn_view,
    "forbid": _sn_forbid,
    "missing_id": "0" * 32,
}
SERVICENOW_BASIC = Variant(
    name="servicenow-basic",
    config=_sn_config({"user": SN_USER, "password": SN_PASSWORD}),
    expire=_static_expire,
    revoke=_static_revoke,
    **_SN_COMMON,
)
SERVICENOW_OAUTH = Variant(
    name="servicenow-oauth",
    config=_sn_config(_OAUTH_PASSWORD),
    expire=_oauth_expire,
    revoke=_oauth_revoke,
    sign_ins=lambda app: len(app[OAUTH].grants),
    **_SN_COMMON,
)


# -- ServiceNow Event Management -----------------------------------------------------------------


def _em_view(app: web.Application) -> list[Ticket]:
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


def _em_forbid(app: web.Application) -> None:
    app[EVENTS].authorized = False


SERVICENOW_EM = Variant(
    name="servicenow-em",
    app=_sn_app,
    config=lambda url: {
        "kind": "servicenow_em",
        "url": url,
        "auth": "oauth",
        "grant": "client_credentials",
        "client_id": DEFAULT_CLIENT[0],
        "client_secret": DEFAULT_CLIENT[1],
        "event_class": "Prometheus on prom-01",
    },
    fields={
        "node": "web-01",
        "type": "HighCPU",
        "resource": "cpu0",
        "severity": "critical",
        "description": "CPU > 95%",
    },
    update={"severity": "2"},
    bad_update={},
    bad_note=True,
    route_fields={
        "node": "{{ resource }}",
        "type": "{{ name }}",
        "resource": "{{ labels.device | default('') }}",
        "severity": "{{ severity }}",
        "description": "[{{ severity | upper }}] {{ name }} on {{ resource }}: {{ summary }}",
        "additional_info": '{"alertname": "{{ name }}"}',
    },
    view=_em_view,
    forbid=_em_forbid,
    missing_id="no:such:key",
    missing_status=None,
    expire=_oauth_expire,
    revoke=_oauth_revoke,
    sign_ins=lambda app: len(app[OAUTH].grants),
)


# -- Jira ----------------------------------------------------------------------------------------


def _jira_view(app: web.Application) -> list[Ticket]:
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
                notes=[adf_to_text(c["body"]) for c in issue.comments],
                fields={"issue": issue},
            )
        )
    return tickets


def _jira_forbid(app: web.Application) -> None:
    app[jira.STORE].read_only.update({"OPS", "HELP"})


_JIRA_FIELDS = {
    "summary": "HighCPU on web-01",
    "description": "CPU > 95%\n\nsee https://grafana/d/1",
    "priority": "High",
}
_JIRA_ROUTE = {
    "summary": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
    "description": "{{ summary }}\n\nLabels: {% for k, v in labels | dictsort %}{{ k }}={{ v }} {% endfor %}",
    "priority": "{{ {'critical': 'Highest', 'major': 'High'}.get(severity, 'Medium') }}",
    "labels": "alertmanager",
}
_JIRA_COMMON: dict[str, Any] = {
    "update": {"priority": "Highest"},
    "bad_update": {"priority": "Urgent!"},
    "view": _jira_view,
    "forbid": _jira_forbid,
    "expire": _static_expire,
    "revoke": _static_revoke,
}
JIRA_CLOUD = Variant(
    name="jira-cloud",
    app=lambda: jira.make_app(mode="cloud"),
    config=lambda url: {
        "kind": "jira",
        "url": url,
        "email": "bridge@example.com",
        "api_token": "api-token",
        "project": "OPS",
    },
    fields=_JIRA_FIELDS | {"labels": "alertmanager", "components": "Web"},
    missing_id="OPS-999",
    route_fields=_JIRA_ROUTE,
    **_JIRA_COMMON,
)
JIRA_DATACENTER = Variant(
    name="jira-datacenter",
    app=lambda: jira.make_app(mode="datacenter"),
    config=lambda url: {"kind": "jira", "url": url, "token": "pat-token", "project": "OPS"},
    fields=_JIRA_FIELDS | {"customfield_10030": '{"value": "Sev 2"}'},
    missing_id="OPS-999",
    route_fields=_JIRA_ROUTE,
    **_JIRA_COMMON,
)
JSM = Variant(
    name="jsm",
    app=lambda: jira.make_app(mode="cloud"),
    config=lambda url: {
        "kind": "jira",
        "url": url,
        "email": "bridge@example.com",
        "api_token": "api-token",
        "project": "HELP",
        "service_desk": "10",
        "request_type": "26",
        "request_labels": ["26"],
        "resolve_transition": "Resolve this issue",
        "reopen_transition": "Back to in progress",
    },
    fields=_JIRA_FIELDS,
    missing_id="HELP-999",
    route_fields={k: v for k, v in _JIRA_ROUTE.items() if k != "labels"},
    **_JIRA_COMMON,
)


# -- Remedy --------------------------------------------------------------------------------------


def _remedy_view(app: web.Application) -> list[Ticket]:
    store = app[remedy.STORE]
    phases = {"Resolved": "resolved", "Closed": "closed", "Cancelled": "closed"}
    return [
        Ticket(
            id=r["Request ID"],
            display=r["Incident Number"],
            correlation=r["Vendor Ticket Number"] or "",
            phase=phases.get(r["Status"], "open"),
            title=r["Description"],
            notes=store.notes(r["Incident Number"]),
            resolution=r["Resolution"] or "",
            fields=dict(r),
        )
        for r in store.incidents.values()
    ]


def _remedy_forbid(app: web.Application) -> None:
    app[remedy.STORE].read_only = True


def _remedy_revoke(app: web.Application) -> None:
    tokens = app[remedy.TOKENS]
    tokens.expire_all()
    tokens.password = "rotated"


REMEDY = Variant(
    name="remedy",
    app=lambda: remedy.make_app(user="Bridge", password="bridge-pw"),
    config=lambda url: {"kind": "remedy", "url": url, "user": "Bridge", "password": "bridge-pw"},
    fields={
        "First_Name": "Bridge",
        "Last_Name": "Integration",
        "Description": "HighCPU on web-01",
        "Detailed_Decription": "CPU > 95% for 10m",
        "Impact": "2-Significant/Large",
        "Urgency": "2-High",
    },
    update={"Urgency": "1-Critical"},
    bad_update={"Impact": "9-Everything"},
    route_fields={
        "First_Name": "Bridge",
        "Last_Name": "Integration",
        "Description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
        "Detailed_Decription": "{{ summary }}",
        "Impact": "{{ {'critical': '1-Extensive/Widespread'}.get(severity, '3-Moderate/Limited') }}",
        "Urgency": "{{ {'critical': '1-Critical'}.get(severity, '3-Medium') }}",
    },
    view=_remedy_view,
    forbid=_remedy_forbid,
    missing_id="INC000000999999",
    expire=lambda app: app[remedy.TOKENS].expire_all(),
    revoke=_remedy_revoke,
    sign_ins=lambda app: app[remedy.TOKENS].logins,
)


# -- generic webhook -----------------------------------------------------------------------------

WEBHOOK_DESK: dict[str, Any] = {
    "kind": "webhook",
    "token": "ticket-token",
    "ticket_url": "https://tickets.example.com/t/{{ ticket.id }}",
    "open": {
        "method": "POST",
        "path": "/api/tickets",
        "body": {
            "title": "{{ fields.title }}",
            "description": "{{ fields.description }}",
            "priority": "{{ fields.priority | default('P3') }}",
            "correlation_id": "{{ correlation_id }}",
        },
        "id": "$.ticket.id",
        "display": "ticket.number",
    },
    "find": {
        "method": "GET",
        "path": "/api/tickets",
        "params": {"correlation_id": "{{ correlation_id }}"},
        "id": "tickets[0].id",
        "display": "tickets[0].number",
    },
    "note": {"method": "POST", "path": "/api/tickets/{{ ticket.id }}/comments", "body": {"body": "{{ note }}"}},
    "update": {
        "method": "PATCH",
        "path": "/api/tickets/{{ ticket.id }}",
        "body": {"priority": "{{ fields.priority }}"},
    },
    "resolve": {
        "method": "PATCH",
        "path": "/api/tickets/{{ ticket.id }}",
        "body": {"status": "resolved", "resolution": "{{ note }}"},
    },
    "reopen": {
        "method": "PATCH",
        "path": "/api/tickets/{{ ticket.id }}",
        "body": {"status": "open", "comment": "{{ note }}"},
    },
    "state": {"method": "GET", "path": "/api/tickets/{{ ticket.id }}", "state": "ticket.status", "fields": "ticket"},
}


def _webhook_view(app: web.Application) -> list[Ticket]:
    return [
        Ticket(
            id=str(t["id"]),
            display=t["number"],
            correlation=t["correlation_id"],
            phase=t["status"],
            title=t["title"],
            notes=[c["body"] for c in t["comments"]],
            resolution=t["resolution"],
            fields=dict(t),
        )
        for t in app[webhook.STORE].tickets.values()
    ]


def _webhook_forbid(app: web.Application) -> None:
    app[webhook.STORE].read_only = True


WEBHOOK = Variant(
    name="webhook",
    app=lambda: webhook.make_app(token="ticket-token"),
    config=lambda url: WEBHOOK_DESK | {"url": url},
    fields={"title": "HighCPU on web-01", "description": "CPU > 95%", "priority": "P2"},
    update={"priority": "P1"},
    bad_update={"priority": "P9"},
    route_fields={
        "title": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
        "description": "{{ summary }}",
        "priority": "{{ {'critical': 'P1', 'major': 'P2'}.get(severity, 'P3') }}",
    },
    view=_webhook_view,
    forbid=_webhook_forbid,
    missing_id="999",
    expire=_static_expire,
    revoke=_static_revoke,
)

VARIANTS = (
    SERVICENOW_BASIC,
    SERVICENOW_OAUTH,
    SERVICENOW_EM,
    JIRA_CLOUD,
    JIRA_DATACENTER,
    JSM,
    REMEDY,
    WEBHOOK,
)
