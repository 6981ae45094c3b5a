"""Event Management on the simulated instance: `POST /api/global/em/jsonv2` into `em_event`, then `em_alert`.

Wire format (ServiceNow docs, "Send events via web service":
https://www.servicenow.com/docs/r/it-operations-management/event-management/send-events-via-web-service.html):
`{"records": [event, ...]}`, answered `200 {"result": {"Default Bulk Endpoint": "N events were
inserted"}}` whatever becomes of the events. A real instance processes them later; this one at once, with
the same outcome:

- an event whose `additional_info` is not a JSON object of strings, whose `severity` is not "0"-"5"
  or which has no `source` is stored with `state` "Error" and a `processing_notes` reason;
- `message_key` defaults to source+node+type+resource+metric_name;
- severity "0" (Clear) or `resolution_state` "Closing" closes the open alert of that key and
  creates none;
- any other severity updates the key's open alert, creates one (`Alert0010001`, state "Open"),
  or reopens a closed one (state "Reopen", [INFERRED]: instances differ in their reopen rules).

Both tables are readable through the Table API (`/api/now/table/em_event`, `.../em_alert`). The
endpoint needs the `evt_mgmt_integration` role: with `authorized` False it answers 403 [INFERRED wording].
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from adapters.simulators.servicenow_store import ServiceNowError, now_utc

EVENT_FIELDS = frozenset(
    {
        "sys_id",
        "source",
        "event_class",
        "node",
        "resource",
        "metric_name",
        "type",
        "message_key",
        "severity",
        "resolution_state",
        "description",
        "additional_info",
        "time_of_event",
        "ci_type",
        "state",
        "processing_notes",
        "alert",
        "sys_created_on",
    }
)
ALERT_FIELDS = frozenset(
    {
        "sys_id",
        "number",
        "message_key",
        "source",
        "node",
        "resource",
        "type",
        "metric_name",
        "severity",
        "state",
        "description",
        "additional_info",
        "reopen_count",
        "sys_created_on",
        "sys_updated_on",
    }
)
TABLES = frozenset({"em_event", "em_alert"})
_SENT = EVENT_FIELDS - {"sys_id", "state", "processing_notes", "alert", "sys_created_on"}
_KEY_PARTS = ("source", "node", "type", "resource", "metric_name")


@dataclass
class EventManagement:
    """The instance's `em_event` rows (arrival order) and `em_alert` rows (creation order)."""

    clock: Callable[[], str] = now_utc
    authorized: bool = True  # the integration user has evt_mgmt_integration
    events: list[dict[str, str]] = field(default_factory=list)
    alerts: list[dict[str, str]] = field(default_factory=list)
    _numbers: int = 10000

    def reset(self) -> None:
        self.events.clear()
        self.alerts.clear()
        self.authorized = True
        self._numbers = 10000

    def rows(self, table: str) -> tuple[list[dict[str, str]], frozenset[str]]:
        if table == "em_event":
            return list(self.events), EVENT_FIELDS
        return list(self.alerts), ALERT_FIELDS

    def alert(self, message_key: str) -> dict[str, str] | None:
        """The newest alert of a message key."""
        return next((a for a in reversed(self.alerts) if a["message_key"] == message_key), None)

    def insert(self, record: Mapping[str, Any]) -> dict[str, str]:
        """Store one event and process it."""
        when = self.clock()
        event = {name: _text(record.get(name)) for name in _SENT}
        if not event["message_key"]:
            event["message_key"] = "".join(event[part] for part in _KEY_PARTS)
        event.update(sys_id=uuid.uuid4().hex, sys_created_on=when, state="Ready", processing_notes="", alert="")
        self.events.append(event)
        problem = _problem(event)
        if problem:
            event.update(state="Error", processing_notes=problem)
            return event
        alert = self._process(event, when)
        event.update(state="Processed", alert=alert["sys_id"] if alert else "")
        return event

    def _process(self, event: Mapping[str, str], when: str) -> dict[str, str] | None:
        alert = self.alert(event["message_key"])
        clearing = event["severity"] == "0" or event["resolution_state"] == "Closing"
        if clearing:
            if alert is not None and alert["state"] != "Closed":
                alert.update(state="Closed", sys_updated_on=when)
            return alert
        if alert is None:
            self._numbers += 1
            alert = {
                "sys_id": uuid.uuid4().hex,
                "number": f"Alert{self._numbers:07d}",
                "message_key": event["message_key"],
                "reopen_count": "0",
                "sys_created_on": when,
                "state": "Open",
            }
            self.alerts.append(alert)
        elif alert["state"] == "Closed":
            alert.update(state="Reopen", reopen_count=str(int(alert["reopen_count"]) + 1))
        for name in ("source", "node", "resource", "type", "metric_name", "severity", "description"):
            alert[name] = event[name]
        alert.update(additional_info=event["additional_info"], sys_updated_on=when)
        return alert


EVENTS = web.AppKey("servicenow_events", EventManagement)


async def jsonv2(request: web.Request) -> web.Response:
    """`POST /api/global/em/jsonv2`: insert every record, answer how many."""
    events = request.app[EVENTS]
    if not events.authorized:
        raise ServiceNowError(403, "User Not Authorized", "User does not have the role evt_mgmt_integration")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ServiceNowError(400, "Exception while reading request", f"Cannot decode: {exc}") from None
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ServiceNowError(400, "Exception while reading request", 'Expected {"records": [...]}')
    for record in records:
        events.insert(record)
    # Worded as captured from real instances, plural even for one event.
    message = f"{len(records)} events were inserted"
    return web.json_response({"result": {"Default Bulk Endpoint": message}})


def _problem(event: Mapping[str, str]) -> str:
    if not event["source"]:
        return "Missing mandatory field: source"
    if event["severity"] not in {"0", "1", "2", "3", "4", "5"}:
        return f"Invalid severity: {event['severity']!r}"
    info = event["additional_info"]
    if info:
        try:
            parsed = orjson.loads(info)
        except orjson.JSONDecodeError:
            return "additional_info is not valid JSON"
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            return "additional_info must be a JSON object whose values are strings"
    return ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()
