"""The BMC Remedy / Helix ITSM desk: incidents through the AR System REST API, signed in with a JWT.

Wire format: BMC's AR System REST API docs, "Login information"
(https://docs.bmc.com/docs/ars91/en/login-information-609071516.html) and "/entry/{formName}"
(https://docs.bmc.com/docs/ars91/en/entry-formname-609071438.html); the HPD forms are BMC Helix
ITSM's (Remedy ITSM). Sign-in is `POST /api/jwt/login` (form-encoded; the answer is the raw
token), then `Authorization: AR-JWT <token>` on every call. A 401 on a token that worked drops
it and is DeskAuthExpired, so the delivery's one retry logs in again; a refused login is
DeskRejected. `aclose` logs out (`POST /api/jwt/logout`), releasing the server-side session.

- open: `POST /entry/HPD:IncidentInterface_Create` with `z1D_Action: CREATE`, the route's fields
  (create-form names: First_Name, Last_Name, Description, Detailed_Decription, Impact, Urgency,
  Status, Reported Source, Service_Type, ...; `defaults` fill what a route leaves out) and the
  correlation id in `correlation_field`. The answer's `Incident_Entry_ID` is the ticket id for
  later calls, `Incident Number` its display.
- find: `GET /entry/HPD:IncidentInterface?q='<correlation_field>'="<id>"`, newest first (by Submit
  Date, then Incident Number, as Submit Date counts whole seconds).
- note: a `HPD:WorkLog` entry (`Work Log Type`, `View Access` from the config).
- update: `PUT /entry/HPD:IncidentInterface/{id}` with the fields (204).
- resolve: the same PUT with Status Resolved, `Status_Reason` and `Resolution` (the note).
- reopen: Status `reopen_status` (Status_Reason cleared), then the note as a work log entry.

The loop back (bridge.core.sync): AR System has no outgoing webhook, so Remedy is poll-only:
`parse_events` refuses every body (PayloadError). `changes_since` reads `HPD:IncidentInterface` with
the qualification `'Last Modified Date' >= <epoch seconds> AND '<correlation_field>' != $NULL$`,
sorted by Last Modified Date, and `HPD:WorkLog` by Submit Date, merged in time order, each paged by
`offset`/`limit`. The poll sees each incident as it is now: Resolved or Closed -> RESOLVED,
Cancelled -> CANCELLED, Re-Opened Date equal to the last change -> REOPENED, In Progress or an
Assignee -> ASSIGNED, else UPDATED, by `Last Modified By`; each work log entry -> COMMENTED by its
Submitter. Work log entries the bridge writes end with `MARKER`.

Errors are AR error lists (`[{"messageType", "messageText", "messageAppendedText", "messageNumber"}]`).
429 and 5xx are transient, except a 500 whose AR error is a workflow or validation error (a
numbered ERROR outside the server-side failures 90-94 and 552): that one is DeskRejected, because
sending it again cannot succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
import orjson
import structlog
from pydantic import ConfigDict, SecretStr, field_validator

from adapters.desks.events import Identity, KnowsItself, marked, merge_pages, offsets, parse_time
from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskError, DeskRejected, PayloadError
from bridge.core.sync import ChangePage, DeskEvent, DeskEventKind

log = structlog.get_logger("adapters.desks.remedy")

INTERFACE = "HPD:IncidentInterface"
CREATE = "HPD:IncidentInterface_Create"
WORKLOG = "HPD:WorkLog"
REQUIRED = ("First_Name", "Last_Name", "Description", "Impact", "Urgency", "Status", "Reported Source", "Service_Type")
# AR System server-side failures: the call may succeed later (ARERR 90-94 network, RPC and
# timeouts, 93 even "accepted, will usually complete"; 552 a database failure).
_SERVER_SIDE = frozenset({90, 91, 92, 93, 94, 552})
_PHASES = {"Resolved": TicketPhase.RESOLVED, "Closed": TicketPhase.CLOSED, "Cancelled": TicketPhase.CLOSED}
_KINDS = {
    "Resolved": DeskEventKind.RESOLVED,
    "Closed": DeskEventKind.RESOLVED,
    "Cancelled": DeskEventKind.CANCELLED,
    "In Progress": DeskEventKind.ASSIGNED,
}
_DATES = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")
# Display names (as GET shows them) of fields whose create-form names differ (as routes write them).
_CREATE_NAMES = {
    "First Name": "First_Name",
    "Last Name": "Last_Name",
    "Service Type": "Service_Type",
    "Detailed Decription": "Detailed_Decription",
}


class RemedyConfig(DeskAddress):
    """One AR System server (on premises or Helix), as an ops team writes it in the mappings."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["remedy"]
    url: str  # https://remedy.example.com:8443 or https://tenant-restapi.onbmc.com
    user: str
    password: SecretStr
    auth_string: str | None = None  # the login's authString, for sites that use an authenticator
    correlation_field: str = "Vendor Ticket Number"  # a field on the incident that holds the id
    defaults: dict[str, str] = {
        "Status": "Assigned",
        "Reported Source": "Systems Management",
        "Service_Type": "Infrastructure Event",
    }
    status_reason: str = "Automated Resolution Reported"
    reopen_status: str = "In Progress"
    work_log_type: str = "General Information"
    view_access: Literal["Internal", "Public"] = "Internal"
    timeout: Seconds = 10.0
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        return https_url(value, "https://remedy.example.com:8443")

    def build(self, name: str, session: aiohttp.ClientSession) -> RemedyDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return RemedyDesk(name, self, transport)


class RemedyDesk(KnowsItself):
    """Incidents on one AR System server, found again by `correlation_field`."""

    def __init__(self, name: str, config: RemedyConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        self._token = ""
        self._lock = asyncio.Lock()
        self._entry = f"{config.url}/api/arsys/v1/entry"
        self._identity = Identity(config.user)
        self.page_size = 100  # entries per request of the poll

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]:
        """Nothing: AR System has no outgoing webhook; set `sync: {poll: ...}` for a Remedy desk."""
        raise PayloadError(f"{self.name}: Remedy pushes no desk events; this desk is polled (sync: {{poll: 60s}})")

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage:
        """Incidents carrying a correlation id changed at or after `since_ms` (AR counts seconds), and
        the work log entries written since, merged in time order; cursor "<incident offset>,<log offset>"."""
        at_i, at_w = offsets(cursor)
        since = since_ms // 1000
        field = self._config.correlation_field.replace("'", "''")
        size = self.page_size
        incident_fields = ["Request ID", "Incident Number", "Status", "Assignee", "Last Modified Date"]
        incident_fields += ["Last Modified By", "Re-Opened Date", self._config.correlation_field]
        incidents = await self._entries(
            INTERFACE,
            {
                "q": f"'Last Modified Date' >= {since} AND '{field}' != $NULL$",
                "sort": "Last Modified Date.asc,Request ID.asc",
                "offset": str(at_i),
                "limit": str(size),
                "fields": f"values({','.join(incident_fields)})",
            },
        )
        logs = await self._entries(
            WORKLOG,
            {
                "q": f"'Submit Date' >= {since}",
                "sort": "Submit Date.asc,Work Log ID.asc",
                "offset": str(at_w),
                "limit": str(size),
                "fields": "values(Work Log ID,Incident Number,Description,Detailed Description,Submitter,Submit Date)",
            },
        )
        times_i = [_ms(row.get("Last Modified Date")) for row in incidents]
        times_w = [_ms(row.get("Submit Date")) for row in logs]
        take_i, take_w = merge_pages(times_i, len(incidents) >= size, times_w, len(logs) >= size)
        events = [self._incident_event(incidents[n], times_i[n]) for n in range(take_i)]
        tickets = await self._tickets({str(logs[n].get("Incident Number") or "") for n in range(take_w)})
        for n in range(take_w):
            found = tickets.get(str(logs[n].get("Incident Number") or ""))
            if found is not None:
                events.append(self._log_event(logs[n], times_w[n], *found))
        events.sort(key=lambda e: e.at_ms)
        left = len(incidents) >= size or len(logs) >= size or take_i < len(incidents) or take_w < len(logs)
        return ChangePage(events=events, cursor=f"{at_i + take_i},{at_w + take_w}" if left else None)

    def _incident_event(self, row: Mapping[str, Any], at_ms: int) -> DeskEvent:
        status = str(row.get("Status") or "")
        kind = _KINDS.get(status, DeskEventKind.UPDATED)
        if kind is DeskEventKind.UPDATED and row.get("Assignee"):
            kind = DeskEventKind.ASSIGNED
        reopened = row.get("Re-Opened Date")
        if reopened and reopened == row.get("Last Modified Date") and status not in ("Resolved", "Closed", "Cancelled"):
            kind = DeskEventKind.REOPENED
        author = str(row.get("Last Modified By") or "")
        entry = str(row.get("Request ID") or "")
        return DeskEvent(
            desk=self.name,
            ticket=self._ref(entry, str(row.get("Incident Number") or "")),
            kind=kind,
            at_ms=at_ms,
            event_id=f"{entry.split('|', 1)[0]}:{row.get('Last Modified Date')}",
            author=author,
            text=status,
            correlation_id=str(row.get(self._config.correlation_field) or ""),
            ours=self._identity.ours([author]),
        )

    def _log_event(self, row: Mapping[str, Any], at_ms: int, ref: TicketRef, correlation: str) -> DeskEvent:
        author = str(row.get("Submitter") or "")
        text = str(row.get("Detailed Description") or row.get("Description") or "")[:10_000]
        return DeskEvent(
            desk=self.name,
            ticket=ref,
            kind=DeskEventKind.COMMENTED,
            at_ms=at_ms,
            event_id=f"worklog:{row.get('Work Log ID')}",
            author=author,
            text=text,
            correlation_id=correlation,
            ours=self._identity.ours([author], text),
        )

    async def _tickets(self, numbers: set[str]) -> dict[str, tuple[TicketRef, str]]:
        """Which of these incidents the bridge opened: Incident Number -> (ref, correlation id)."""
        wanted = sorted(n for n in numbers if n)
        if not wanted:
            return {}
        field = self._config.correlation_field
        either = " OR ".join(f"'Incident Number' = {_ar_string(n)}" for n in wanted)
        quoted = field.replace("'", "''")
        rows = await self._entries(
            INTERFACE,
            {
                "q": f"({either}) AND '{quoted}' != $NULL$",
                "limit": str(len(wanted)),
                "fields": f"values(Request ID,Incident Number,{field})",
            },
        )
        return {
            str(r.get("Incident Number")): (
                self._ref(str(r.get("Request ID") or ""), str(r.get("Incident Number") or "")),
                str(r.get(field) or ""),
            )
            for r in rows
        }

    async def _entries(self, form: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        body = await self._json("changes", "GET", f"{self._entry}/{form}", params=params)
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise DeskRejected(f"{self.name} changes: answer has no entries", desk=self.name, action="changes")
        return [e["values"] for e in entries if isinstance(e, dict) and isinstance(e.get("values"), dict)]

    async def find(self, correlation_id: str) -> TicketRef | None:
        field = self._config.correlation_field.replace("'", "''")
        value = correlation_id.replace('"', '""')
        params = {
            "q": f"'{field}'=\"{value}\"",
            "sort": "Submit Date.desc,Incident Number.desc",  # Submit Date counts seconds only
            "limit": "1",
            "fields": "values(Request ID,Incident Number,Status)",
        }
        body = await self._json("find", "GET", f"{self._entry}/{INTERFACE}", params=params)
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise DeskRejected(f"{self.name} find: answer has no entries", desk=self.name, action="find")
        if not entries:
            return None
        values = entries[0].get("values") or {}
        return self._ref(str(values.get("Request ID", "")), str(values.get("Incident Number", "")))

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        values: dict[str, Any] = {**self._config.defaults, **fields}
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            raise DeskRejected(
                f"{self.name} open: the route gives no {', '.join(missing)} (required by {CREATE})",
                desk=self.name,
                action="open",
            )
        values |= {self._config.correlation_field: correlation_id, "z1D_Action": "CREATE"}
        params = {"fields": "values(Incident_Entry_ID,Incident Number)"}
        answer = await self._send("open", "POST", f"{self._entry}/{CREATE}", params=params, json={"values": values})
        created = self._http.json("open", answer)
        shown = created.get("values") if isinstance(created, dict) else None
        number = shown.get("Incident Number") if isinstance(shown, dict) else None
        if not isinstance(number, str) or not number:
            raise self._http.unexpected("open", answer, "answer has no Incident Number")
        entry = shown.get("Incident_Entry_ID") if isinstance(shown, dict) else None
        if isinstance(entry, str) and entry:
            return self._ref(entry, number)
        found = await self.find(correlation_id)  # a site whose create form lacks Incident_Entry_ID
        if found is None:
            raise self._http.unexpected("open", answer, f"{number} is not found by its correlation id")
        return found

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._work_log("note", ref, text)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        if fields:
            await self._put("update", ref, dict(fields))

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        values: dict[str, Any] = {"Status_Reason": self._config.status_reason, **fields}
        values |= {"Status": "Resolved", "Resolution": note or "Resolved automatically"}
        await self._put("resolve", ref, values)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._put("reopen", ref, {"Status": self._config.reopen_status, "Status_Reason": None})
        await self._work_log("reopen", ref, note)

    async def state(self, ref: TicketRef) -> TicketState:
        """Status decides the phase; fields under their display names and their create-form names."""
        body = await self._json("state", "GET", f"{self._entry}/{INTERFACE}/{ref.id}")
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, dict):
            raise DeskRejected(f"{self.name} state: answer has no values", desk=self.name, action="state")
        shown = {k: str(v) for k, v in values.items() if v is not None}
        shown |= {create: shown[display] for display, create in _CREATE_NAMES.items() if display in shown}
        raw = shown.get("Status", "")
        return TicketState(phase=_PHASES.get(raw, TicketPhase.OPEN), raw_state=raw, fields=shown)

    async def aclose(self) -> None:
        """Log out, so that the server releases the session; a failure is logged, not raised."""
        token, self._token = self._token, ""
        if not token:
            return
        try:
            answer = await self._http.send(
                "logout", "POST", f"{self._config.url}/api/jwt/logout", headers={"Authorization": f"AR-JWT {token}"}
            )
        except DeskError as exc:
            log.warning("desk_logout_failed", desk=self.name, error=str(exc))
            return
        if not answer.ok:
            log.warning("desk_logout_failed", desk=self.name, status=answer.status)

    # -- requests ------------------------------------------------------------------------------

    def _ref(self, entry: str, number: str) -> TicketRef:
        entry = entry.split("|", 1)[0]  # the interface form shows "id|id"
        return TicketRef(id=entry, display=number, url=f"{self._entry}/{INTERFACE}/{entry}")

    async def _work_log(self, action: str, ref: TicketRef, text: str) -> None:
        if not text:
            return
        values = {
            "Incident Number": ref.display,
            "Work Log Type": self._config.work_log_type,
            "Description": text.splitlines()[0][:100] if text.strip() else "Note",
            "Detailed Description": marked(text),
            "View Access": self._config.view_access,
            "Secure Work Log": "No",
        }
        await self._send(action, "POST", f"{self._entry}/{WORKLOG}", json={"values": values})

    async def _put(self, action: str, ref: TicketRef, values: dict[str, Any]) -> None:
        await self._send(action, "PUT", f"{self._entry}/{INTERFACE}/{ref.id}", json={"values": values})

    async def _login(self) -> str:
        form = {"username": self._config.user, "password": self._config.password.get_secret_value()}
        if self._config.auth_string is not None:
            form["authString"] = self._config.auth_string
        url = f"{self._config.url}/api/jwt/login"
        answer = await self._http.send("login", "POST", url, headers={}, form=form, secret_form_keys=("password",))
        if answer.status in (400, 401, 403):
            raise DeskRejected(
                f"{self.name}: login refused: {_reason(answer.text)}", **self._http.context("login", answer)
            )
        if not answer.ok:
            raise self._http.error("login", answer, _reason(answer.text))
        token = answer.text.strip().strip('"')  # some proxies quote the raw token
        if not token:
            raise self._http.unexpected("login", answer, "login answered no token")
        return token

    async def _header(self) -> str:
        async with self._lock:
            if not self._token:
                self._token = await self._login()
            return f"AR-JWT {self._token}"

    async def _json(self, action: str, method: str, url: str, *, params: Mapping[str, str] | None = None) -> Any:
        return self._http.json(action, await self._send(action, method, url, params=params))

    async def _send(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Answer:
        header = await self._header()
        answer = await self._http.send(
            action,
            method,
            url,
            headers={"Accept": "application/json", "Authorization": header},
            params=params,
            json=json,
        )
        if answer.ok:
            return answer
        if answer.status == 401 and header == f"AR-JWT {self._token}":
            self._token = ""  # expired or revoked: the delivery's one retry logs in again
        reason = _reason(answer.text)
        if answer.status == 500 and _workflow_error(answer.text):
            raise DeskRejected(f"{self.name} {action}: HTTP 500: {reason}", **self._http.context(action, answer))
        raise self._http.error(action, answer, reason)


def _ar_string(value: str) -> str:
    """An AR qualification string literal: double quotes, doubled inside."""
    return '"' + value.replace('"', '""') + '"'


def _ms(value: Any) -> int:
    return parse_time(str(value or ""), _DATES) or 0


def _errors(text: str) -> list[dict[str, Any]]:
    """The AR error list of an answer (a list, or a single object on some versions), else []."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    items = data if isinstance(data, list) else [data]
    return [item for item in items if isinstance(item, dict) and "messageText" in item]


def _reason(text: str) -> str:
    parts = []
    for error in _errors(text):
        appended = error.get("messageAppendedText") or error.get("appendedText")
        part = f"ARERR {error.get('messageNumber')} {error.get('messageText')}"
        parts.append(part + (f": {appended}" if appended else ""))
    return "; ".join(parts)


def _workflow_error(text: str) -> bool:
    """A 500 that carries a numbered AR ERROR other than a server-side failure: sending again will not help."""
    numbers = [e.get("messageNumber") for e in _errors(text) if e.get("messageType", "ERROR") == "ERROR"]
    return bool(numbers) and all(isinstance(n, int) and n not in _SERVER_SIDE for n in numbers)
