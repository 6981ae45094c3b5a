"""ServiceNow Event Management: events to `/api/global/em/jsonv2` instead of incidents, for shops that run EM.

Wire format: ServiceNow docs, "Send events via web service"
(https://www.servicenow.com/docs/r/it-operations-management/event-management/send-events-via-web-service.html).
EM has no ticket to write notes on or reopen: the instance turns events into alerts, and its own alert
rules open incidents. So the "ticket" of this desk is the event's `message_key`, which is the bridge's
correlation id:

- `open` sends an event with severity 1-5 (Critical, Major, Minor, Warning, Info);
- `note` and `update` send the key's latest event again, `update` with the given fields, `note`
  with the text under `bridge_note` in `additional_info` (events cannot carry work notes);
- `resolve` sends it with severity 0 (Clear), which closes the alert;
- `reopen` sends the latest non-clear event again, which reopens or recreates the alert;
- `find` answers a TicketRef of the message key when the `em_event` table holds an event with it;
- `state` reads the key's newest `em_alert` (Closed → RESOLVED), or its latest event when the
  instance has made no alert of it.

Reading `em_event` and `em_alert` goes through the Table API, so the integration user needs read
access to them besides the `evt_mgmt_integration` role. Every value sent is a string, and
`additional_info` is stringified JSON whose values are strings, as the endpoint requires.
The answer of jsonv2 says only how many events were inserted; processing is asynchronous.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson

from adapters.desks.servicenow_auth import ServiceNowCredentials, ServiceNowSignIn, call
from adapters.desks.transport import Transport, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected

# The event fields a route may set in `ticket.fields` (message_key is always the correlation id).
EVENT_FIELDS = (
    "source",
    "event_class",
    "node",
    "resource",
    "metric_name",
    "type",
    "severity",
    "description",
    "additional_info",
    "ci_type",
)
_SEVERITIES: Mapping[str, str] = {
    "critical": "1",
    "major": "2",
    "minor": "3",
    "warning": "4",
    "info": "5",
    "ok": "5",
    **{n: n for n in "12345"},
}
_CLEAR = "0"
_NOTE_KEY = "bridge_note"


class ServiceNowEventsConfig(ServiceNowSignIn):
    """One instance's Event Management, as an ops team writes it in the mappings."""

    kind: Literal["servicenow_em"]
    source: str = "alert-ticket-bridge"  # the event source when a route gives none
    event_class: str = ""  # e.g. "Prometheus on prom-01"; needed for alert rules when node is empty
    severity: str = "3"  # when a route gives none: 1 Critical ... 5 Info, or a bridge severity name

    def build(self, name: str, session: aiohttp.ClientSession) -> ServiceNowEventsDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return ServiceNowEventsDesk(name, self, transport)


class ServiceNowEventsDesk:
    """Events keyed by the correlation id; see the module text for what each action sends."""

    def __init__(self, name: str, config: ServiceNowEventsConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        self._credentials = ServiceNowCredentials(config, transport)
        self._endpoint = f"{config.url}/api/global/em/jsonv2"

    async def find(self, correlation_id: str) -> TicketRef | None:
        event = await self._latest("find", correlation_id)
        return self._ref(correlation_id) if event is not None else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        event: dict[str, str] = {"source": self._config.source, "severity": self._config.severity}
        if self._config.event_class:
            event["event_class"] = self._config.event_class
        event |= {k: v for k, v in fields.items() if k in EVENT_FIELDS}
        event["severity"] = self._severity("open", event["severity"])
        await self._send("open", correlation_id, event)
        return self._ref(correlation_id)

    async def note(self, ref: TicketRef, text: str) -> None:
        event = await self._previous("note", ref.id)
        await self._send("note", ref.id, event, note=text)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        event = await self._previous("update", ref.id)
        event |= {k: v for k, v in fields.items() if k in EVENT_FIELDS}
        event["severity"] = self._severity("update", event["severity"])
        await self._send("update", ref.id, event)

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        """A clear (severity 0) for the key: the instance closes its alert."""
        event = await self._previous("resolve", ref.id)
        event |= {k: v for k, v in fields.items() if k in EVENT_FIELDS}
        event["severity"] = _CLEAR
        await self._send("resolve", ref.id, event, note=note)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        """The latest non-clear event again: the instance reopens (or recreates) the alert."""
        event = await self._previous("reopen", ref.id, firing=True)
        await self._send("reopen", ref.id, event, note=note)

    async def state(self, ref: TicketRef) -> TicketState:
        params = {
            "sysparm_query": f"message_key={ref.id}^ORDERBYDESCsys_created_on",
            "sysparm_fields": "number,state,severity,description,message_key",
            "sysparm_limit": "1",
        }
        rows = await self._rows("state", "em_alert", params)
        if rows:
            alert = {k: v for k, v in rows[0].items() if isinstance(v, str)}
            raw = alert.get("state", "")
            phase = TicketPhase.RESOLVED if raw == "Closed" else TicketPhase.OPEN
            return TicketState(phase=phase, raw_state=raw, fields=alert)
        event = await self._latest("state", ref.id)
        if event is None:
            raise DeskRejected(f"{self.name} state: no event with message_key {ref.id}", desk=self.name)
        phase = TicketPhase.RESOLVED if event.get("severity") == _CLEAR else TicketPhase.OPEN
        return TicketState(phase=phase, raw_state=event.get("state", ""), fields=event)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller, and OAuth tokens simply expire."""

    # -- requests ------------------------------------------------------------------------------

    def _ref(self, message_key: str) -> TicketRef:
        url = f"{self._config.url}/em_alert_list.do?sysparm_query=message_key%3D{quote(message_key, safe='')}"
        return TicketRef(id=message_key, display=message_key, url=url)

    def _severity(self, action: str, value: str) -> str:
        severity = _SEVERITIES.get(value.strip().lower())
        if severity is None:
            raise DeskRejected(
                f"{self.name} {action}: severity {value!r} is not 1-5 or a severity name",
                desk=self.name,
                action=action,
            )
        return severity

    async def _send(self, action: str, key: str, event: Mapping[str, str], note: str | None = None) -> None:
        record = {k: v for k, v in event.items() if k in EVENT_FIELDS and v != ""}
        info = _info(record.get("additional_info", ""))
        if note is not None:
            info[_NOTE_KEY] = note
        else:
            info.pop(_NOTE_KEY, None)
        if info:
            record["additional_info"] = orjson.dumps(info).decode()
        else:
            record.pop("additional_info", None)
        record |= {"message_key": key, "time_of_event": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")}
        answer = await call(self._http, self._credentials, action, "POST", self._endpoint, json={"records": [record]})
        body = self._http.json(action, answer)
        if not isinstance(body, dict) or not isinstance(body.get("result"), dict):
            raise self._http.unexpected(action, answer, "answer has no result")

    async def _previous(self, action: str, key: str, *, firing: bool = False) -> dict[str, str]:
        event = await self._latest(action, key, firing=firing)
        if event is None:
            what = "firing event" if firing else "event"
            raise DeskRejected(f"{self.name} {action}: no {what} with message_key {key}", desk=self.name, action=action)
        return {k: v for k, v in event.items() if k in EVENT_FIELDS}

    async def _latest(self, action: str, key: str, *, firing: bool = False) -> dict[str, str] | None:
        query = f"message_key={key}" + (f"^severity!={_CLEAR}" if firing else "") + "^ORDERBYDESCsys_created_on"
        params = {
            "sysparm_query": query,
            "sysparm_fields": ",".join((*EVENT_FIELDS, "message_key", "state")),
            "sysparm_limit": "1",
        }
        rows = await self._rows(action, "em_event", params)
        return {k: v for k, v in rows[0].items() if isinstance(v, str)} if rows else None

    async def _rows(self, action: str, table: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        url = f"{self._config.url}/api/now/table/{table}"
        answer = await call(self._http, self._credentials, action, "GET", url, params=params)
        body = self._http.json(action, answer)
        rows = body.get("result") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise self._http.unexpected(action, answer, "answer has no result list")
        return [row for row in rows if isinstance(row, dict)]


def _info(text: str) -> dict[str, str]:
    """additional_info as a dict of strings; text that is not a JSON object is kept under `details`."""
    if not text:
        return {}
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"details": text}
    if not isinstance(parsed, dict):
        return {"details": text}
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in parsed.items()}
