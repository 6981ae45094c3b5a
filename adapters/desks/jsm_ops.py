"""Jira Service Management Operations (JSM Ops) as a desk: incidents become JSM alerts, for teams that
move from Opsgenie to JSM and want the bridge's tickets there.

Two APIs of api.atlassian.com, as an Ops integration is set up:
- the integration events API (`/jsm/ops/integration/v2/alerts`, `Authorization: GenieKey <API key>` of an
  API integration): create, acknowledge, close and add note, each asynchronous (202 and a request id);
  https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v1/api-group-integration-events/
- the REST API (`/jsm/ops/api/{cloudId}/v1/alerts`, Basic `email:api_token` of an account with read
  access to alerts) to read alerts back: list with a search query (`alias:"<correlation id>"`);
  https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v2/api-group-alerts/

The ticket is the alias: the correlation id (`<route>:<key hash>:<epoch>`) is every alert's alias,
and every action names the alert by it (`identifierType=alias`). A create of an alias that is open is
deduplicated by JSM, so an open whose answer was lost cannot make a second alert; `find` reads the
newest alert of the alias. A closed alert cannot be reopened: `reopen` creates the alias's alert again
from the last one's fields, with the note. `resolve` closes with the note. `note` adds a note.
`update` acknowledges when given `acknowledged: "true"` (the route's `ticket.acknowledge_fields`);
other fields cannot be changed through these APIs, so a change of them becomes a note naming it.
`state` is the newest alert's: closed -> resolved (a firing again makes a new alert), else open;
its fields are message, description, priority, entity, source, tags, acknowledged and the details.

Field vocabulary (the route's `ticket.fields`): `message` (required, 130 characters), `description`,
`priority` (P1-P5; default the desk's `priority`), `entity`, `tags` (comma-separated), `actions`
(comma-separated), `note`, `responders` and `visibleTo` (JSON arrays, e.g. `[{"name": "ops", "type":
"team"}]`), `details` (a JSON object); any other field is one more detail (extra property).
Errors follow the common rule (429 and 5xx transient, 401 auth expired, other 4xx rejected, with
Opsgenie's `message` and `errors` as the reason). Every note the bridge writes (a note, the close's and
the reopen's, a field change's) ends with `MARKER`: JSM keeps each one as a note on the alert.

The loop back (bridge.core.sync). `parse_events` reads the body of JSM Ops' outgoing Webhook integration
(Opsgenie's: `{"action", "alert": {alertId, alias, username, note, createdAt (ms), updatedAt (ns)}, ...}`):
Acknowledge, AssignOwnership and TakeOwnership -> ASSIGNED, Close -> RESOLVED, AddNote -> COMMENTED, the
note given with any other action one more COMMENTED; UnAcknowledge and the rest -> UPDATED (the audit
trail); Create -> nothing. A closed JSM alert never reopens, so no REOPENED. `changes_since` lists the
alerts of the desk's `source` updated since (`query=updatedAt>=<ms> AND source:"<source>"`, by updatedAt,
`offset`/`size` paging, every page in one call: an alert's changes are older than its updatedAt, so a
page boundary could not be a time boundary), and for each one its `report` (acknowledgedBy and ackTime,
closedBy and closeTime: after createdAt) and its notes since (`/alerts/{id}/notes`, newest first).
Event ids, the same pushed or polled: `<alertId>:close`, `<alertId>:<action>:<ms>`,
`<alertId>:note:<ms>:<digest of its author and text>`.
The bridge's own: by `user` (who the integration's requests name) or `sync.integration_user`, or MARKER.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from pydantic import ConfigDict, Field, SecretStr, field_validator

from adapters.desks.events import Identity, KnowsItself, Reader, decode, marked
from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, json_reason, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected, PayloadError
from bridge.core.sync import ChangePage, DeskEvent, DeskEventKind

log = structlog.get_logger("adapters.desks.jsm_ops")

INTEGRATION = "/jsm/ops/integration/v2/alerts"
KNOWN = frozenset({"message", "description", "priority", "entity", "tags", "actions", "note", "responders",
                   "visibleTo", "details"})  # fmt: skip
SHOWN = ("message", "description", "priority", "entity", "source")  # the alert's fields `state` shows
TRUE = frozenset({"true", "yes", "1"})
# The Webhook integration's actions, as the loop back reads them (others are UPDATED; Create is none).
_ACTIONS = {
    "Acknowledge": DeskEventKind.ASSIGNED,
    "AssignOwnership": DeskEventKind.ASSIGNED,
    "TakeOwnership": DeskEventKind.ASSIGNED,
    "Close": DeskEventKind.RESOLVED,
    "AddNote": DeskEventKind.COMMENTED,
}
_TIMES = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


class JsmOpsConfig(DeskAddress):
    """A JSM Ops site: an API integration's key for writing alerts, an API token for reading them back."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsm_ops"]
    url: str = "https://api.atlassian.com"
    api_key: SecretStr  # the API integration's key (Operations > Integrations > API): GenieKey
    cloud_id: str = Field(min_length=1)  # the site's cloud id: https://<site>.atlassian.net/_edge/tenant_info
    email: str = Field(min_length=1)  # an account that may read alerts (read:ops-alert), with ...
    api_token: SecretStr  # ... its API token (https://id.atlassian.com/manage-profile/security/api-tokens)
    source: str = "alert-ticket-bridge"  # the alerts' `source`
    user: str = "alert-ticket-bridge"  # who the notes, acknowledgements and closes are by
    priority: Literal["P1", "P2", "P3", "P4", "P5"] = "P3"  # when the fields give none
    timeout: Seconds = 10.0
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return https_url(value, "https://api.atlassian.com")

    def build(self, name: str, session: aiohttp.ClientSession) -> JsmOpsDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return JsmOpsDesk(name, self, transport)


class JsmOpsDesk(KnowsItself):
    def __init__(self, name: str, config: JsmOpsConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        # Never logged nor kept with an error.
        self._writes = {"Accept": "application/json", "Authorization": "GenieKey " + config.api_key.get_secret_value()}
        pair = f"{config.email}:{config.api_token.get_secret_value()}".encode()
        self._reads = {"Accept": "application/json", "Authorization": "Basic " + base64.b64encode(pair).decode()}
        self._api = f"{config.url}/jsm/ops/api/{quote(config.cloud_id, safe='')}/v1/alerts"
        self._identity = Identity(config.user)
        self.page_size = 100  # alerts per list request of the poll (JSM's most)
        self.max_pages = 5  # list requests per poll at most

    async def find(self, correlation_id: str) -> TicketRef | None:
        return _ref(correlation_id) if await self._newest("find", correlation_id) else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        await self._write("open", INTEGRATION, self._alert(correlation_id, fields))
        return _ref(correlation_id)

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._act("note", ref, "notes", marked(text))

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        current = await self.state(ref)  # an alias JSM does not have is refused here, not lost later
        changed = {k: v for k, v in fields.items() if k != "acknowledged" and current.fields.get(k) != v}
        if fields.get("acknowledged", "").lower() in TRUE and current.fields.get("acknowledged") != "true":
            await self._act("update", ref, "acknowledge", "")
        if changed:
            listed = "; ".join(f"{k}: {v}" for k, v in changed.items())
            text = f"Fields changed (not editable through the alert API): {listed}"
            await self._act("update", ref, "notes", marked(text))

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        await self._act("resolve", ref, "close", marked(note))

    async def reopen(self, ref: TicketRef, note: str) -> None:
        last = await self._newest("reopen", ref.id)
        if last is None:
            raise DeskRejected(f"{self.name} reopen: no alert with alias {ref.id}", desk=self.name, action="reopen")
        if last.get("status") != "closed":
            await self._act("reopen", ref, "notes", marked(note))
            return
        details = last.get("extraProperties") if isinstance(last.get("extraProperties"), dict) else {}
        again = {
            **{k: str(last[k]) for k in ("message", "description", "priority", "entity") if last.get(k)},
            "tags": ",".join(str(t) for t in last.get("tags") or []),
            "details": orjson.dumps(details).decode(),
            "note": marked(note),
        }
        await self._write("reopen", INTEGRATION, self._alert(ref.id, again))

    async def state(self, ref: TicketRef) -> TicketState:
        alert = await self._newest("state", ref.id)
        if alert is None:
            raise DeskRejected(f"{self.name} state: no alert with alias {ref.id}", desk=self.name, action="state")
        status = str(alert.get("status", ""))
        shown = {k: str(alert.get(k) or "") for k in SHOWN}
        shown["tags"] = ",".join(str(t) for t in alert.get("tags") or [])
        shown["acknowledged"] = "true" if alert.get("acknowledged") else "false"
        details = alert.get("extraProperties")
        if isinstance(details, dict):
            shown |= {str(k): str(v) for k, v in details.items() if str(k) not in shown}
        phase = TicketPhase.RESOLVED if status == "closed" else TicketPhase.OPEN
        return TicketState(phase=phase, raw_state=status, fields=shown)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    # -- the loop back (bridge.core.sync) ------------------------------------------------------

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]:
        """One post of JSM Ops' outgoing Webhook integration: the action's event, and the note given with it."""
        what = f"{self.name} desk event"
        data = Reader(decode(body, what), what)
        action = data.text("action", required=True, limit=100)
        alert = data.obj("alert", required=True)
        assert alert is not None
        alert_id = alert.text("alertId", required=True, limit=200)
        alias = alert.text("alias", required=True, limit=600)
        at_ms = _epoch_ms(alert.integer("updatedAt", required=True) or 0)
        author = alert.text("username", limit=200)
        note = alert.text("note")
        if action == "Create":
            return []  # a new alert (the bridge's open, or another integration's): no person's change
        events = []
        kind = _ACTIONS.get(action, DeskEventKind.UPDATED)
        if kind is not DeskEventKind.COMMENTED:
            key = "close" if action == "Close" else f"{action.lower()}:{at_ms}"
            events.append(self._event(alias, alert_id, key, kind, at_ms, author, action))
        if note:
            key = _note_key(at_ms, author, str(alert.data.get("note")))
            events.append(self._event(alias, alert_id, key, DeskEventKind.COMMENTED, at_ms, author, note))
        return events

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage:
        """The desk's alerts updated at or after `since_ms`: their acknowledgement and close (the alert's
        `report`) and their notes from then on, oldest first, in one page (`cursor` is not used)."""
        source = self._config.source.replace("\\", "\\\\").replace('"', '\\"')
        params = {"query": f'updatedAt>={max(0, since_ms)} AND source:"{source}"', "sort": "updatedAt", "order": "asc"}
        alerts: list[dict[str, Any]] = []
        for _ in range(self.max_pages):
            page, more = await self._alerts(
                "changes", params | {"offset": str(len(alerts)), "size": str(self.page_size)}
            )
            alerts += page
            if not more or not page:
                break
        else:
            log.warning("jsm_ops_poll_truncated", desk=self.name, alerts=len(alerts), since_ms=since_ms)
        events = []
        for alert in alerts:
            events += await self._alert_changes(alert, since_ms)
        events.sort(key=lambda e: e.at_ms)
        return ChangePage(events=events, cursor=None)

    async def _alert_changes(self, alert: Mapping[str, Any], since_ms: int) -> list[DeskEvent]:
        what = f"{self.name} changes"
        try:
            row = Reader(alert, what)
            alert_id, alias = row.text("id", required=True, limit=200), row.text("alias", required=True, limit=600)
            created = row.time_ms("createdAt", _TIMES, required=True) or 0
            report = row.obj("report")
            events = []
            if report is not None:
                acked, ack_ms = report.text("acknowledgedBy", limit=200), report.integer("ackTime")
                if acked and ack_ms is not None and created + ack_ms >= since_ms:
                    at = created + ack_ms
                    events.append(
                        self._event(
                            alias, alert_id, f"acknowledge:{at}", DeskEventKind.ASSIGNED, at, acked, "Acknowledge"
                        )
                    )
                closed, close_ms = report.text("closedBy", limit=200), report.integer("closeTime")
                if (
                    row.text("status") == "closed"
                    and closed
                    and close_ms is not None
                    and created + close_ms >= since_ms
                ):
                    at = created + close_ms
                    events.append(self._event(alias, alert_id, "close", DeskEventKind.RESOLVED, at, closed, "Close"))
            for note in await self._notes(alert_id, since_ms):
                at = note.time_ms("createdAt", _TIMES, required=True) or 0
                text, author = note.text("note"), note.text("owner", limit=200)
                key = _note_key(at, author, str(note.data.get("note")))
                events.append(self._event(alias, alert_id, key, DeskEventKind.COMMENTED, at, author, text))
        except PayloadError as exc:
            raise DeskRejected(f"{self.name} changes: unexpected alert answer: {exc}", desk=self.name) from exc
        return events

    async def _notes(self, alert_id: str, since_ms: int) -> list[Reader]:
        """The alert's notes made at or after `since_ms`, oldest first (read newest first until an older one)."""
        url = f"{self._api}/{quote(alert_id, safe='')}/notes"
        what = f"{self.name} changes"
        found: list[Reader] = []
        params = {"order": "desc", "limit": "100", "direction": "next"}
        for _ in range(self.max_pages * 10):
            answer = await self._http.send("changes", "GET", url, headers=self._reads, params=params)
            if not answer.ok:
                raise self._http.error("changes", answer, _reason(answer))
            page = Reader(self._http.json("changes", answer), what)
            values = page.items("values")
            for note in values:
                if (note.time_ms("createdAt", _TIMES, required=True) or 0) < since_ms:
                    return found[::-1]
                found.append(note)
            links = page.obj("links")
            if not values or links is None or not links.text("next", limit=4000):
                break
            params = params | {"offset": values[-1].text("offset", required=True, limit=200)}
        return found[::-1]

    def _event(
        self, alias: str, alert_id: str, key: str, kind: DeskEventKind, at_ms: int, author: str, text: str
    ) -> DeskEvent:
        return DeskEvent(
            desk=self.name,
            ticket=_ref(alias),
            kind=kind,
            at_ms=at_ms,
            event_id=f"{alert_id}:{key}",
            author=author,
            text=text,
            correlation_id=alias,
            ours=self._identity.ours([author], text if kind is DeskEventKind.COMMENTED else ""),
        )

    # -- requests ------------------------------------------------------------------------------

    def _alert(self, alias: str, fields: Mapping[str, str]) -> dict[str, Any]:
        """A create's body from the route's fields (see the module's vocabulary)."""
        body: dict[str, Any] = {"alias": alias, "source": self._config.source, "user": self._config.user}
        details: dict[str, str] = {}
        for name, value in fields.items():
            if name in ("message", "description", "entity", "note"):
                body[name] = value
            elif name == "priority":
                body["priority"] = value.strip().upper() or self._config.priority
            elif name in ("tags", "actions"):
                body[name] = [part.strip() for part in value.split(",") if part.strip()]
            elif name in ("responders", "visibleTo"):
                body[name] = self._json(name, value, list)
            elif name == "details":
                details |= {str(k): str(v) for k, v in self._json(name, value, dict).items()}
            else:
                details[name] = value
        body.setdefault("priority", self._config.priority)
        if not body.get("message", "").strip():
            raise DeskRejected(f"{self.name} open: the ticket fields have no `message`", desk=self.name, action="open")
        if details:
            body["details"] = details
        return body

    def _json(self, name: str, value: str, kind: type[Any]) -> Any:
        try:
            parsed = orjson.loads(value) if value.strip() else kind()
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, kind):
            what = "a JSON array" if kind is list else "a JSON object"
            raise DeskRejected(f"{self.name} open: field {name!r} must be {what}", desk=self.name, action="open")
        return parsed

    async def _act(self, action: str, ref: TicketRef, verb: str, note: str) -> None:
        """acknowledge, close or notes on the alert of the ticket's alias."""
        body = {"user": self._config.user, "source": self._config.source}
        if note:
            body["note"] = note
        path = f"{INTEGRATION}/{quote(ref.id, safe='')}/{verb}"
        await self._write(action, path, body, {"identifierType": "alias"})

    async def _write(
        self, action: str, path: str, body: dict[str, Any], params: dict[str, str] | None = None
    ) -> Answer:
        url = self._config.url + path
        answer = await self._http.send(action, "POST", url, headers=self._writes, params=params, json=body)
        if not answer.ok:
            raise self._http.error(action, answer, _reason(answer))
        return answer

    async def _newest(self, action: str, alias: str) -> dict[str, Any] | None:
        """The newest alert of an alias, open or closed; None when there is none."""
        query = 'alias:"' + alias.replace("\\", "\\\\").replace('"', '\\"') + '"'
        values, _ = await self._alerts(action, {"query": query, "sort": "createdAt", "order": "desc", "size": "1"})
        return values[0] if values else None

    async def _alerts(self, action: str, params: Mapping[str, str]) -> tuple[list[dict[str, Any]], bool]:
        """One page of the alert list: its alerts, and whether a next page follows (`links.next`)."""
        answer = await self._http.send(action, "GET", self._api, headers=self._reads, params=params)
        if not answer.ok:
            raise self._http.error(action, answer, _reason(answer))
        found = self._http.json(action, answer)
        values = found.get("values") if isinstance(found, dict) else None
        if not isinstance(values, list):
            raise self._http.unexpected(action, answer, "an alert list without `values`")
        links = found.get("links")
        more = isinstance(links, dict) and bool(links.get("next"))
        return [v for v in values if isinstance(v, dict)], more


def _epoch_ms(value: int) -> int:
    """Epoch milliseconds of a Webhook time: createdAt comes in ms, updatedAt in ns (older ones in µs)."""
    while value > 10**14:
        value //= 1000
    return value


def _note_key(at_ms: int, author: str, text: str) -> str:
    """A note's part of its event id: its time, and a digest of who wrote what (two notes in one ms)."""
    digest = hashlib.sha256(f"{author}\n{text}".encode(errors="surrogatepass")).hexdigest()[:12]
    return f"note:{at_ms}:{digest}"


def _ref(alias: str) -> TicketRef:
    return TicketRef(id=alias, display=alias)


def _reason(answer: Answer) -> str:
    reason = json_reason(answer.text, ("message",))
    try:
        errors = orjson.loads(answer.text).get("errors")
    except (orjson.JSONDecodeError, AttributeError):
        errors = None
    if isinstance(errors, dict) and errors:
        reason += " " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    return reason.strip()
