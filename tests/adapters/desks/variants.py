"""Every desk flavour the contract suite runs: its simulator, desk config, fields, and a uniform view of tickets.

A `Variant` knows how to start its simulator, configure the desk against it, which fields to
open, update and route with, how to make the simulator refuse (403), expire or revoke the desk's
credentials, and how to read the simulator's records back as `Ticket`s, the same shape for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.simulators import jira, jsm_ops, remedy, servicenow, webhook
from adapters.simulators.faults import FAULTS
from adapters.simulators.pusher import Pusher
from adapters.simulators.servicenow import EVENTS, OAUTH, STORE
from adapters.simulators.servicenow_oauth import DEFAULT_CLIENT
from tests.adapters.desks import views
from tests.adapters.desks.views import Ticket

SN_USER, SN_PASSWORD = "bridge", "s3cret"
MAX_PAYLOAD = 64 * 1024  # the ServiceNow simulators' request size limit in these tests


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
    rejected_status: int = 400  # what the desk answers that bad update or note (Opsgenie's APIs: 422)
    # The loop back: a person's change on a ticket in the simulator (app, ticket id, user, "comment" or
    # "resolve"), and the simulator's pusher when the desk pushes (None: poll-only, or no loop back at all).
    act: Callable[[web.Application, str, str, str], object] | None = None
    push: Callable[[web.Application], Pusher] | None = None

    def requests(self, app: web.Application) -> list[dict[str, Any]]:
        for key in (STORE, jira.STORE, remedy.STORE, webhook.STORE, jsm_ops.STORE):
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


def _sn_forbid(app: web.Application) -> None:
    app[STORE].acl_denied = True


def _oauth_expire(app: web.Application) -> None:
    app[OAUTH].expire_tokens()


def _oauth_revoke(app: web.Application) -> None:
    oauth = app[OAUTH]
    oauth.revoke()
    oauth.password = "rotated"
    oauth.clients = {client: "rotated" for client in oauth.clients}


def _sn_act(app: web.Application, ticket: str, user: str, what: str) -> None:
    change = {"comments": "seen, on it"} if what == "comment" else {}
    if what == "resolve":
        change = {"state": "6", "close_code": "Solution provided", "close_notes": "fixed by hand"}
    app[STORE].act_as_human(ticket, user, **change)


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
    "view": views.servicenow_tickets,
    "forbid": _sn_forbid,
    "missing_id": "0" * 32,
    "act": _sn_act,
    "push": lambda app: app[servicenow.PUSH],
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
    view=views.event_tickets,
    forbid=_em_forbid,
    missing_id="no:such:key",
    missing_status=None,
    expire=_oauth_expire,
    revoke=_oauth_revoke,
    sign_ins=lambda app: len(app[OAUTH].grants),
)


# -- Jira ----------------------------------------------------------------------------------------


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


def _jira_act(app: web.Application, ticket: str, user: str, what: str) -> None:
    if what == "comment":
        app[jira.STORE].act_as_human(ticket, user, comment="seen, on it")
    else:
        app[jira.STORE].act_as_human(ticket, user, to="Resolved", resolution="Fixed")


_JIRA_COMMON: dict[str, Any] = {
    "act": _jira_act,
    "push": lambda app: app[jira.PUSH],
    "update": {"priority": "Highest"},
    "bad_update": {"priority": "Urgent!"},
    "view": views.jira_tickets,
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
    config=lambda url: {
        "kind": "jira",
        "url": url,
        "token": "pat-token",
        "project": "OPS",
        "json_fields": ["customfield_10030"],
    },
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
    view=views.remedy_tickets,
    forbid=_remedy_forbid,
    missing_id="INC000000999999",
    expire=lambda app: app[remedy.TOKENS].expire_all(),
    revoke=_remedy_revoke,
    sign_ins=lambda app: app[remedy.TOKENS].logins,
    act=lambda app, ticket, user, what: app[remedy.STORE].act_as_human(
        ticket,
        user,
        **(
            {"work_log": "seen, on it"}
            if what == "comment"
            else {"Status": "Resolved", "Status_Reason": "No Further Action Required", "Resolution": "fixed by hand"}
        ),
    ),
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
    "changes": {
        "method": "GET",
        "path": "/api/tickets/changes",
        "params": {"since": "{{ since }}", "cursor": "{{ cursor }}"},
        "events": "events",
        "cursor": "next",
    },
}


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
    view=views.webhook_tickets,
    forbid=_webhook_forbid,
    missing_id="999",
    expire=_static_expire,
    revoke=_static_revoke,
    act=lambda app, ticket, user, what: app[webhook.STORE].act_as_human(
        ticket,
        user,
        **({"comment": "seen, on it"} if what == "comment" else {"status": "resolved", "resolution": "by hand"}),
    ),
    push=lambda app: app[webhook.PUSH],
)

# -- JSM Operations ------------------------------------------------------------------------------


def _jsm_ops_forbid(app: web.Application) -> None:
    app[jsm_ops.STORE].read_only = True


JSM_OPS = Variant(
    name="jsm-ops",
    app=lambda: jsm_ops.make_app(api_key="genie-key", email="bridge@example.com", api_token="api-token"),
    config=lambda url: {
        "kind": "jsm_ops",
        "url": url,
        "api_key": "genie-key",
        "cloud_id": jsm_ops.CLOUD_ID,
        "email": "bridge@example.com",
        "api_token": "api-token",
    },
    fields={"message": "HighCPU on web-01", "description": "CPU > 95%", "priority": "P2", "tags": "cpu,web"},
    update={"acknowledged": "true"},  # the one field the alert API changes (acknowledge_fields)
    bad_update={},
    bad_note=True,  # a note past Opsgenie's 25,000 characters
    rejected_status=422,
    route_fields={
        "message": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
        "description": "{{ summary }}",
        "priority": "{{ {'critical': 'P1', 'major': 'P2'}.get(severity, 'P3') }}",
    },
    view=views.jsm_ops_tickets,
    forbid=_jsm_ops_forbid,
    missing_id="no:such:alias",
    missing_status=None,  # the desk reads the alias back first: no alert, no call
    expire=_static_expire,
    revoke=_static_revoke,
    act=lambda app, ticket, user, what: app[jsm_ops.STORE].act_as_human(
        ticket, user, *(("notes", "seen, on it") if what == "comment" else ("close",))
    ),
    push=lambda app: app[jsm_ops.PUSH],
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
    JSM_OPS,
)
