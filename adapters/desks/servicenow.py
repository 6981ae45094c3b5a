"""The ServiceNow desk: incidents through the Table API, with its config model.

Wire format: the ServiceNow Table API, `/api/now/table/{table}`
(https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html). Sign-in is Basic or OAuth
(adapters.desks.servicenow_auth). One ClientSession is lent by the caller; requests go through
adapters.desks.transport, each with its own timeout and, with `ca_file`, its own TLS context
(verification is never turned off). Connect errors, timeouts, 429 and 5xx → `DeskTransient`; 401 →
`DeskAuthExpired` (an OAuth token is dropped first, so the retry signs in again); any other non-2xx →
`DeskRejected`. The adapter never retries (bridge.delivery.guard does, once, by type).

The loop back (bridge.core.sync): `parse_events` reads the body of the Business Rule in
deploy/snippets/servicenow/, `changes_since` polls `sys_updated_on` and `sys_journal_field`. Work
notes the bridge writes end with `MARKER`; its own changes are those of `integration_user`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field

from adapters.desks.events import Identity, KnowsItself, Reader, decode, marked, merge_pages, offsets, parse_time, utc
from adapters.desks.servicenow_auth import ServiceNowCredentials, ServiceNowSignIn, call
from adapters.desks.transport import Answer, Transport, tls_context
from bridge.core.desk import ChangeRef, TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected
from bridge.core.sync import ChangePage, DeskEvent, DeskEventKind

# Incident `state` values (ServiceNow docs, "Incident management state model":
# https://www.servicenow.com/docs/r/it-service-management/incident-management/c_IncidentManagementStateModel.html):
# 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled. Anything else (a custom state) counts as open.
_PHASES: Mapping[str, TicketPhase] = {
    "6": TicketPhase.RESOLVED,
    "7": TicketPhase.CLOSED,
    "8": TicketPhase.CLOSED,
}
_RESOLVED, _IN_PROGRESS = "6", "2"
_STATE_NAMES = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"}
_STATE_KINDS = {
    "6": DeskEventKind.RESOLVED,
    "7": DeskEventKind.RESOLVED,
    "8": DeskEventKind.CANCELLED,
    "2": DeskEventKind.ASSIGNED,
}
_OPEN_STATES, _DONE_STATES = frozenset({"1", "2", "3"}), frozenset({"6", "7", "8"})
_TIME = "%Y-%m-%d %H:%M:%S"  # glide_date_time, UTC as the Table API shows it
_POLL_FIELDS = (
    "sys_id,number,state,assigned_to,sys_updated_on,sys_updated_by,sys_mod_count,correlation_id,reopened_time"
)


class ServiceNowConfig(ServiceNowSignIn):
    """One ServiceNow instance, as an ops team writes it in the mappings."""

    kind: Literal["servicenow"]
    table: str = "incident"
    close_code: str = "Solution provided"
    duplicate_close_code: str = "Duplicate"  # a ticket closed as a duplicate of its topology parent's
    correlation_display: str = "alert-ticket-bridge"
    # Change-aware tickets (route `change:`): a change covers a CI when it is in one of these states
    # (Change Management's state model: -2 Scheduled, -1 Implement), its `approval` is this value, and
    # its planned window (`start_date` to `end_date`) holds now. Problem records go to `problem_table`.
    change_table: str = "change_request"
    change_states: list[str] = Field(default_factory=lambda: ["-2", "-1"], min_length=1)
    change_approval: str = "approved"
    problem_table: str = "problem"

    def build(self, name: str, session: aiohttp.ClientSession) -> ServiceNowDesk:
        """The desk client for this instance, on the caller's session."""
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return ServiceNowDesk(name, self, transport)


class ServiceNowDesk(KnowsItself):
    """Incidents in one ServiceNow table, found again by `correlation_id`."""

    def __init__(self, name: str, config: ServiceNowConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        self._credentials = ServiceNowCredentials(config, transport)
        self._table_url = f"{config.url}/api/now/table/{config.table}"
        self._identity = Identity(config.user)
        self.page_size = 100  # rows per Table API call of the poll

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
        await self._patch("note", ref, {"work_notes": marked(text)})

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

    # -- change-aware tickets and problem records (bridge.core.desk.ChangeAware, ProblemDesk) ------

    async def change_covering(self, ci: str, at_ms: int) -> ChangeRef | None:
        """The approved change whose planned window holds `at_ms` on the CI named `ci` (the `change_request`
        table, by `cmdb_ci.name`), the one that started last if several do."""
        if "^" in ci or "=" in ci:  # would end the encoded query's condition: not asked
            raise DeskRejected(f"the CI name {ci!r} cannot go into an encoded query", desk=self.name,
                               action="change_covering")  # fmt: skip
        now = utc(at_ms, _TIME)
        cfg = self._config
        query = (
            f"cmdb_ci.name={ci}^approval={cfg.change_approval}^stateIN{','.join(cfg.change_states)}"
            f"^start_date<={now}^end_date>={now}^ORDERBYDESCstart_date"
        )
        params = {
            "sysparm_query": query,
            "sysparm_fields": "sys_id,number,short_description,start_date,end_date",
            "sysparm_limit": "1",
        }
        rows = await self._rows("change_covering", f"{cfg.url}/api/now/table/{cfg.change_table}", params)
        if not rows:
            return None
        row = rows[0]
        sys_id = str(row.get("sys_id", ""))
        return ChangeRef(
            id=sys_id,
            display=str(row.get("number", "")),
            url=f"{cfg.url}/nav_to.do?uri={cfg.change_table}.do?sys_id={sys_id}",
            start_ms=_time(row, "start_date"),
            end_ms=_time(row, "end_date"),
            summary=str(row.get("short_description", ""))[:200],
        )

    async def link_change(self, ref: TicketRef, change: ChangeRef, note: str) -> None:
        """The incident's "Caused by Change" (`caused_by`, a reference to `change_request`) set to the
        change, with the note as a work note, in one update."""
        await self._patch("link_change", ref, {"caused_by": change.id, "work_notes": marked(note)})

    async def open_problem(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        """A record in the `problem` table (a task, so with `correlation_id` too)."""
        cfg = self._config
        body = {
            "short_description": f"Recurring incident {correlation_id.rsplit(':problem:', 1)[0]}",
            **fields,
            "correlation_id": correlation_id,
            "correlation_display": cfg.correlation_display,
        }
        url = f"{cfg.url}/api/now/table/{cfg.problem_table}"
        answer, decoded = await self._call("open_problem", "POST", url, params={"sysparm_fields": "sys_id,number"},
                                           json=body)  # fmt: skip
        record = decoded.get("result")
        if not isinstance(record, dict) or not isinstance(record.get("sys_id"), str):
            raise self._http.unexpected("open_problem", answer, "answer has no result record")
        sys_id = record["sys_id"]
        url = f"{cfg.url}/nav_to.do?uri={cfg.problem_table}.do?sys_id={sys_id}"
        return TicketRef(id=sys_id, display=str(record.get("number", "")), url=url)

    async def link_problem(self, ref: TicketRef, problem: TicketRef, note: str) -> None:
        """The incident's `problem_id` (a reference to `problem`) set, with the note as a work note."""
        await self._patch("link_problem", ref, {"problem_id": problem.id, "work_notes": marked(note)})

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._patch("reopen", ref, {"state": _IN_PROGRESS, "work_notes": marked(note)})

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

    # -- the loop back (bridge.core.sync) ------------------------------------------------------

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]:
        """The Business Rule's body (deploy/snippets/servicenow/): a state or assignment change, and
        the journal entry (comment or work note) of the same update, each its own event."""
        return push_events(self.name, decode(body, f"{self.name} desk event"), self._identity)

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage:
        """Incidents the bridge opened (`correlation_display`) updated at or after `since_ms`, merged in
        time order with their comments and work notes from `sys_journal_field`; both by `sysparm_offset`.

        The poll sees each incident as it is now: one event per update it finds (`sys_mod_count`),
        its kind from the state (and `reopened_time`), so changes between two polls collapse into the
        latest; every journal entry is seen. `cursor` is "<incident offset>,<journal offset>"."""
        at_i, at_j = offsets(cursor)
        since = utc(since_ms, _TIME)
        size = self.page_size
        display = self._config.correlation_display
        incidents = await self._rows(
            "changes",
            self._table_url,
            {
                "sysparm_query": f"sys_updated_on>={since}^correlation_display={display}^correlation_idISNOTEMPTY"
                "^ORDERBYsys_updated_on^ORDERBYsys_mod_count",
                "sysparm_fields": _POLL_FIELDS,
                "sysparm_exclude_reference_link": "true",
                "sysparm_offset": str(at_i),
                "sysparm_limit": str(size),
            },
        )
        journal = await self._rows(
            "changes",
            f"{self._config.url}/api/now/table/sys_journal_field",
            {
                "sysparm_query": f"name={self._config.table}^elementINcomments,work_notes^sys_created_on>={since}"
                "^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,element,element_id,value,sys_created_on,sys_created_by",
                "sysparm_offset": str(at_j),
                "sysparm_limit": str(size),
            },
        )
        more_i, more_j = len(incidents) >= size, len(journal) >= size
        times_i = [_time(row, "sys_updated_on") for row in incidents]
        times_j = [_time(row, "sys_created_on") for row in journal]
        count_i, count_j = merge_pages(times_i, more_i, times_j, more_j)
        take_i, take_j = range(count_i), range(count_j)
        tickets = await self._tickets({str(journal[n].get("element_id", "")) for n in take_j})
        events = [self._row_event(incidents[n], times_i[n]) for n in take_i]
        for n in take_j:
            ref = tickets.get(str(journal[n].get("element_id", "")))
            if ref is not None:
                events.append(self._journal_event(journal[n], times_j[n], *ref))
        events.sort(key=lambda e: e.at_ms)
        left = more_i or more_j or len(take_i) < len(incidents) or len(take_j) < len(journal)
        next_cursor = f"{at_i + len(take_i)},{at_j + len(take_j)}" if left else None
        return ChangePage(events=events, cursor=next_cursor)

    def _row_event(self, row: Mapping[str, Any], at_ms: int) -> DeskEvent:
        state = str(row.get("state", ""))
        kind = _STATE_KINDS.get(state, DeskEventKind.UPDATED)
        if kind is DeskEventKind.UPDATED and row.get("assigned_to"):
            kind = DeskEventKind.ASSIGNED
        if state in _OPEN_STATES and row.get("reopened_time") and row.get("reopened_time") == row.get("sys_updated_on"):
            kind = DeskEventKind.REOPENED
        author = str(row.get("sys_updated_by", ""))
        sys_id = str(row.get("sys_id", ""))
        return DeskEvent(
            desk=self.name,
            ticket=self._ref({"sys_id": sys_id, "number": row.get("number", "")}),
            kind=kind,
            at_ms=at_ms,
            event_id=f"{sys_id}:{row.get('sys_mod_count', '')}",
            author=author,
            text=_STATE_NAMES.get(state, state),
            correlation_id=str(row.get("correlation_id", "")),
            ours=self._identity.ours([author]),
        )

    def _journal_event(self, row: Mapping[str, Any], at_ms: int, ref: TicketRef, correlation_id: str) -> DeskEvent:
        author, text = str(row.get("sys_created_by", "")), str(row.get("value", ""))
        return DeskEvent(
            desk=self.name,
            ticket=ref,
            kind=DeskEventKind.COMMENTED,
            at_ms=at_ms,
            event_id=f"journal:{row.get('sys_id', '')}",
            author=author,
            text=text,
            correlation_id=correlation_id,
            ours=self._identity.ours([author], text),
        )

    async def _tickets(self, sys_ids: set[str]) -> dict[str, tuple[TicketRef, str]]:
        """Which of these records the bridge opened: sys_id -> (ref, correlation id)."""
        wanted = sorted(i for i in sys_ids if i)
        if not wanted:
            return {}
        query = f"sys_idIN{','.join(wanted)}^correlation_display={self._config.correlation_display}"
        rows = await self._rows(
            "changes",
            self._table_url,
            {
                "sysparm_query": query,
                "sysparm_fields": "sys_id,number,correlation_id",
                "sysparm_limit": str(len(wanted)),
            },
        )
        return {str(r.get("sys_id")): (self._ref(r), str(r.get("correlation_id", ""))) for r in rows if r.get("sys_id")}

    async def _rows(self, action: str, url: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        answer, decoded = await self._call(action, "GET", url, params=params)
        rows = decoded.get("result")
        if not isinstance(rows, list):
            raise self._http.unexpected(action, answer, "answer has no result list")
        return [row for row in rows if isinstance(row, dict)]

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


# -- the Business Rule's body -----------------------------------------------------------------------


def push_events(desk: str, data: Mapping[str, Any], identity: Identity) -> list[DeskEvent]:
    """The events of one Business Rule body (deploy/snippets/servicenow/alert_bridge_sync.js).

    Kinds: state 6 or 7 reached -> RESOLVED, 8 -> CANCELLED, from 6/7/8 back to 1-3 -> REOPENED, 2
    reached or `assigned_to` newly set -> ASSIGNED, anything else -> UPDATED; the journal entry
    of the same update -> COMMENTED. An update that only added the entry is that one event."""
    what = f"{desk} desk event"
    body = Reader(data, what)
    sys_id = body.text("sys_id", required=True, limit=64)
    number = body.text("number", limit=64)
    state, previous = body.text("state", required=True, limit=16), body.text("previous_state", limit=16)
    assigned, was_assigned = body.text("assigned_to", limit=64), body.text("previous_assigned_to", limit=64)
    mod = body.integer("sys_mod_count", required=True)
    at_ms = body.time_ms("sys_updated_on", [_TIME], required=True) or 0
    author = body.text("sys_updated_by", limit=200)
    correlation = body.text("correlation_id", limit=500)
    url = body.text("url", limit=2000)
    ref = TicketRef(id=sys_id, display=number, url=url)
    entry = body.obj("journal")
    events: list[DeskEvent] = []
    if entry is not None:
        text = entry.text("value")
        writer = entry.text("sys_created_by", limit=200) or author
        events.append(
            DeskEvent(
                desk=desk,
                ticket=ref,
                kind=DeskEventKind.COMMENTED,
                at_ms=entry.time_ms("sys_created_on", [_TIME]) or at_ms,
                event_id=f"journal:{entry.text('sys_id', required=True, limit=64)}",
                author=writer,
                text=text,
                correlation_id=correlation,
                ours=identity.ours([writer], text),
            )
        )
    kind = DeskEventKind.UPDATED
    if state != previous and state in ("6", "7") and previous not in ("6", "7"):
        kind = DeskEventKind.RESOLVED
    elif state != previous and state == "8":
        kind = DeskEventKind.CANCELLED
    elif previous in _DONE_STATES and state in _OPEN_STATES:
        kind = DeskEventKind.REOPENED
    elif (state == "2" and previous != "2") or (assigned and assigned != was_assigned):
        kind = DeskEventKind.ASSIGNED
    if kind is not DeskEventKind.UPDATED or entry is None:
        journal_text = entry.text("value") if entry is not None else ""
        events.insert(
            0,
            DeskEvent(
                desk=desk,
                ticket=ref,
                kind=kind,
                at_ms=at_ms,
                event_id=f"{sys_id}:{mod}",
                author=author,
                text=_STATE_NAMES.get(state, state),
                correlation_id=correlation,
                ours=identity.ours([author], journal_text),
            ),
        )
    return events


def _time(row: Mapping[str, Any], key: str) -> int:
    return parse_time(str(row.get(key, "")), [_TIME]) or 0
