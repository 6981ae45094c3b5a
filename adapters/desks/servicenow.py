"""The ServiceNow desk: incidents through the Table API, with its config model.

Wire format: the ServiceNow Table API, `/api/now/table/{table}`
(https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html). Sign-in is Basic or OAuth
(adapters.desks.servicenow_auth). One ClientSession is lent by the caller; requests go through
adapters.desks.transport, each with its own timeout and, with `ca_file`, its own TLS context
(verification is never turned off). Connect errors, timeouts, 429 and 5xx → `DeskTransient`; 401 →
`DeskAuthExpired` (an OAuth token is dropped first, so the retry signs in again); any other non-2xx →
`DeskRejected`. The adapter never retries (bridge.delivery.guard does, once, by type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

from adapters.desks.servicenow_auth import ServiceNowCredentials, ServiceNowSignIn, call
from adapters.desks.transport import Answer, Transport, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState

# Incident `state` values (ServiceNow docs, "Incident management state model":
# https://www.servicenow.com/docs/r/it-service-management/incident-management/c_IncidentManagementStateModel.html):
# 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled. Anything else (a custom state) counts as open.
_PHASES: Mapping[str, TicketPhase] = {
    "6": TicketPhase.RESOLVED,
    "7": TicketPhase.CLOSED,
    "8": TicketPhase.CLOSED,
}
_RESOLVED, _IN_PROGRESS = "6", "2"


class ServiceNowConfig(ServiceNowSignIn):
    """One ServiceNow instance, as an ops team writes it in the mappings."""

    kind: Literal["servicenow"]
    table: str = "incident"
    close_code: str = "Solution provided"
    duplicate_close_code: str = "Duplicate"  # a ticket closed as a duplicate of its topology parent's
    correlation_display: str = "alert-ticket-bridge"

    def build(self, name: str, session: aiohttp.ClientSession) -> ServiceNowDesk:
        """The desk client for this instance, on the caller's session."""
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return ServiceNowDesk(name, self, transport)


class ServiceNowDesk:
    """Incidents in one ServiceNow table, found again by `correlation_id`."""

    def __init__(self, name: str, config: ServiceNowConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        self._credentials = ServiceNowCredentials(config, transport)
        self._table_url = f"{config.url}/api/now/table/{config.table}"

    async def find(self, correlation_id: str) -> TicketRef | None:
        """The newest record with this correlation id, in any state."""
        params = {
            "sysparm_query": f"correlation_id={correlation_id}^ORDERBYDESCsys_created_on",
            "sysparm_fields": "sys_id,number,state",
            "sysparm_limit": "1",
        }
        answer, decoded = await self._call("find", "GET", self._table_url, params=params)
        rows = decoded.get("result")
        if not isinstance(rows, list):
            raise self._http.unexpected("find", answer, "answer has no result list")
        return self._ref(rows[0]) if rows else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        body = {
            **fields,
            "correlation_id": correlation_id,
            "correlation_display": self._config.correlation_display,
        }
        params = {"sysparm_fields": "sys_id,number"}
        answer, decoded = await self._call("open", "POST", self._table_url, params=params, json=body)
        record = decoded.get("result")
        if not isinstance(record, dict) or not isinstance(record.get("sys_id"), str):
            # The record may exist: transient, so that delivery searches by correlation id first.
            raise self._http.unexpected("open", answer, "answer has no result record")
        return self._ref(record)

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._patch("note", ref, {"work_notes": text})

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        if fields:
            await self._patch("update", ref, dict(fields))

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        """State 6 with the resolution code and notes that the data policy demands in the same call."""
        others = {k: v for k, v in fields.items() if k != "close_code"}
        body = {
            **others,
            "state": _RESOLVED,
            "close_code": fields.get("close_code", self._config.close_code),
            "close_notes": note,
        }
        await self._patch("resolve", ref, body)

    async def close_duplicate(self, ref: TicketRef, parent: TicketRef, note: str) -> None:
        """Resolved as a duplicate, its `parent_incident` the parent's record (the related list "Child
        Incidents" on the parent then shows it)."""
        body = {
            "state": _RESOLVED,
            "close_code": self._config.duplicate_close_code,
            "close_notes": note,
            "parent_incident": parent.id,
        }
        await self._patch("close_duplicate", ref, body)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._patch("reopen", ref, {"state": _IN_PROGRESS, "work_notes": note})

    async def state(self, ref: TicketRef) -> TicketState:
        url = f"{self._table_url}/{ref.id}"
        params = {"sysparm_exclude_reference_link": "true"}
        answer, decoded = await self._call("state", "GET", url, params=params)
        record = decoded.get("result")
        if not isinstance(record, dict):
            raise self._http.unexpected("state", answer, "answer has no result record")
        values = {k: v for k, v in record.items() if isinstance(v, str)}
        raw = values.get("state", "")
        return TicketState(phase=_PHASES.get(raw, TicketPhase.OPEN), raw_state=raw, fields=values)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller, and OAuth tokens simply expire."""

    # -- requests ------------------------------------------------------------------------------

    def _ref(self, record: Mapping[str, Any]) -> TicketRef:
        sys_id = str(record["sys_id"])
        url = f"{self._config.url}/nav_to.do?uri={self._config.table}.do?sys_id={sys_id}"
        return TicketRef(id=sys_id, display=str(record.get("number", "")), url=url)

    async def _patch(self, action: str, ref: TicketRef, body: dict[str, str]) -> None:
        url = f"{self._table_url}/{ref.id}"
        await self._call(action, "PATCH", url, params={"sysparm_fields": "sys_id"}, json=body)

    async def _call(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, str] | None = None,
    ) -> tuple[Answer, dict[str, Any]]:
        """One request; its 2xx answer and decoded JSON object, or the desk error it amounts to."""
        answer = await call(self._http, self._credentials, action, method, url, params=params, json=json)
        decoded = self._http.json(action, answer)
        if decoded is None:
            return answer, {}
        if not isinstance(decoded, dict):
            raise self._http.unexpected(action, answer, "answer is not a JSON object")
        return answer, decoded
