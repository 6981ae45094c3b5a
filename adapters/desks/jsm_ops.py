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
Opsgenie's `message` and `errors` as the reason).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import ConfigDict, Field, SecretStr, field_validator

from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, json_reason, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected

INTEGRATION = "/jsm/ops/integration/v2/alerts"
KNOWN = frozenset({"message", "description", "priority", "entity", "tags", "actions", "note", "responders",
                   "visibleTo", "details"})  # fmt: skip
SHOWN = ("message", "description", "priority", "entity", "source")  # the alert's fields `state` shows
TRUE = frozenset({"true", "yes", "1"})


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


class JsmOpsDesk:
    def __init__(self, name: str, config: JsmOpsConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        # Never logged nor kept with an error.
        self._writes = {"Accept": "application/json", "Authorization": "GenieKey " + config.api_key.get_secret_value()}
        pair = f"{config.email}:{config.api_token.get_secret_value()}".encode()
        self._reads = {"Accept": "application/json", "Authorization": "Basic " + base64.b64encode(pair).decode()}

    async def find(self, correlation_id: str) -> TicketRef | None:
        return _ref(correlation_id) if await self._newest("find", correlation_id) else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        await self._write("open", INTEGRATION, self._alert(correlation_id, fields))
        return _ref(correlation_id)

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._act("note", ref, "notes", text)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        current = await self.state(ref)  # an alias JSM does not have is refused here, not lost later
        changed = {k: v for k, v in fields.items() if k != "acknowledged" and current.fields.get(k) != v}
        if fields.get("acknowledged", "").lower() in TRUE and current.fields.get("acknowledged") != "true":
            await self._act("update", ref, "acknowledge", "")
        if changed:
            listed = "; ".join(f"{k}: {v}" for k, v in changed.items())
            await self._act("update", ref, "notes", f"Fields changed (not editable through the alert API): {listed}")

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        await self._act("resolve", ref, "close", note)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        last = await self._newest("reopen", ref.id)
        if last is None:
            raise DeskRejected(f"{self.name} reopen: no alert with alias {ref.id}", desk=self.name, action="reopen")
        if last.get("status") != "closed":
            await self._act("reopen", ref, "notes", note)
            return
        details = last.get("extraProperties") if isinstance(last.get("extraProperties"), dict) else {}
        again = {
            **{k: str(last[k]) for k in ("message", "description", "priority", "entity") if last.get(k)},
            "tags": ",".join(str(t) for t in last.get("tags") or []),
            "details": orjson.dumps(details).decode(),
            "note": note,
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
        url = f"{self._config.url}/jsm/ops/api/{quote(self._config.cloud_id, safe='')}/v1/alerts"
        query = 'alias:"' + alias.replace("\\", "\\\\").replace('"', '\\"') + '"'
        params = {"query": query, "sort": "createdAt", "order": "desc", "size": "1"}
        answer = await self._http.send(action, "GET", url, headers=self._reads, params=params)
        if not answer.ok:
            raise self._http.error(action, answer, _reason(answer))
        found = self._http.json(action, answer)
        values = found.get("values") if isinstance(found, dict) else None
        if not isinstance(values, list):
            raise self._http.unexpected(action, answer, "an alert list without `values`")
        first = values[0] if values else None
        return first if isinstance(first, dict) else None


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
