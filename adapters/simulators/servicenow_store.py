"""The simulated ServiceNow instance's tables and the business rules a Table API client meets.

Rules followed, from ServiceNow's docs: "Table API"
(https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html), "Incident management state
model", "Priority lookup rules" and "Resolve and close an incident" (under
https://www.servicenow.com/docs/r/it-service-management/incident-management/): every value is a string;
`sys_id` is 32 lowercase hex characters; numbers run INC0010001, INC0010002, ...; priority is computed
from impact x urgency (sent values are overwritten); `incident_state` mirrors `state`; `active` is
"false" once Closed or Canceled; `sys_mod_count` counts saves; journal fields (`work_notes`, `comments`)
append rows to `sys_journal_field` and read back ""; the data policy refuses state 6/7 without
`close_code` and `close_notes` (403), and a `close_code` outside the configured choice list; unknown
fields in a body are silently ignored.

Who changes a record: the API's user (`user`), or a person acting in the UI (`act_as_human`); either
way `sys_updated_by` and the journal rows' `sys_created_by` name them, and every update (not an
insert) is passed to `on_update`, as an "after update" Business Rule sees it (servicenow.py turns it
into the body of deploy/snippets/servicenow/'s Business Rule and pushes it).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.simulators.servicenow_itsm import ItsmTables

# The current base-system resolution codes (the instance's `close_code` choice list); older instances use
# other labels.
CLOSE_CODES: tuple[str, ...] = (
    "Duplicate",
    "Known error",
    "No resolution provided",
    "Resolved by caller",
    "Resolved by change",
    "Resolved by problem",
    "Resolved by request",
    "Solution provided",
    "Workaround provided",
    "User error",
)

ADMIN_SYS_ID = "6816f79cc0a8016401c5a33be04be441"  # the admin user in the vendor's doc examples

# Reference fields, rendered as {"link", "value"} objects; the value names a row of this table.
REFERENCES: Mapping[str, str] = {
    "assignment_group": "sys_user_group",
    "assigned_to": "sys_user",
    "caller_id": "sys_user",
    "caused_by": "change_request",
    "closed_by": "sys_user",
    "cmdb_ci": "cmdb_ci",
    "opened_by": "sys_user",
    "parent_incident": "incident",
    "problem_id": "problem",
    "resolved_by": "sys_user",
    "rfc": "change_request",
    "sys_domain": "sys_user_group",
}

_INCIDENT_DEFAULTS: Mapping[str, str] = {
    "active": "true",
    "assigned_to": "",
    "assignment_group": "",
    "caller_id": "",
    "category": "inquiry",
    "caused_by": "",
    "close_code": "",
    "close_notes": "",
    "closed_at": "",
    "closed_by": "",
    "cmdb_ci": "",
    "comments": "",
    "contact_type": "",
    "correlation_display": "",
    "correlation_id": "",
    "description": "",
    "escalation": "0",
    "hold_reason": "",
    "impact": "3",
    "incident_state": "1",
    "location": "",
    "number": "",
    "opened_at": "",
    "opened_by": "",
    "parent_incident": "",
    "priority": "",
    "problem_id": "",
    "reopen_count": "0",
    "reopened_by": "",
    "reopened_time": "",
    "resolved_at": "",
    "resolved_by": "",
    "rfc": "",
    "severity": "3",
    "short_description": "",
    "state": "1",
    "subcategory": "",
    "sys_class_name": "incident",
    "sys_created_by": "",
    "sys_created_on": "",
    "sys_domain": "global",
    "sys_id": "",
    "sys_mod_count": "0",
    "sys_updated_by": "",
    "sys_updated_on": "",
    "upon_approval": "proceed",
    "urgency": "3",
    "work_notes": "",
}
INCIDENT_FIELDS = frozenset(_INCIDENT_DEFAULTS)
JOURNAL_FIELDS = frozenset({"sys_id", "name", "element", "element_id", "value", "sys_created_on", "sys_created_by"})
CHOICE_FIELDS = frozenset({"sys_id", "name", "element", "value", "label", "sequence", "inactive", "language"})
_JOURNALED = ("work_notes", "comments")
_READ_ONLY = frozenset(
    {"sys_id", "number", "priority", "active", "opened_at", "opened_by", "reopen_count", "sys_class_name"}
    | {"resolved_at", "resolved_by", "closed_at", "closed_by", "sys_domain", "reopened_by", "reopened_time"}
    | {f for f in INCIDENT_FIELDS if f.startswith("sys_")}
)
_WRITABLE = INCIDENT_FIELDS - _READ_ONLY
_DONE, _INACTIVE = frozenset({"6", "7"}), frozenset({"7", "8"})
_LABELS = {"close_code": "Resolution code", "close_notes": "Close notes"}  # as the instance names them


class ServiceNowError(Exception):
    """An answer in ServiceNow's error envelope: {"error": {"message", "detail"}, "status": "failure"}."""

    def __init__(self, status: int, message: str, detail: str | None) -> None:
        self.status, self.message, self.detail = status, message, detail
        super().__init__(f"{status} {message}: {detail}")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "detail": self.detail}, "status": "failure"}


def not_found() -> ServiceNowError:
    return ServiceNowError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class ServiceNowStore:
    """The instance's tables: `incidents` (sys_id → record, creation order), `journal`, `requests`."""

    user: str = "admin"
    close_codes: tuple[str, ...] = CLOSE_CODES
    priority_3_3: str = "4"
    clock: Callable[[], str] = now_utc
    incidents: dict[str, dict[str, str]] = field(default_factory=dict)
    journal: list[dict[str, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # the Table API request log
    acl_denied: bool = False  # an ACL refuses the integration user every write (403)
    # after every update: (record after, record before, the journal rows it added)
    on_update: list[Callable[[dict[str, str], dict[str, str], list[dict[str, str]]], None]] = field(
        default_factory=list
    )
    _numbers: int = 10000
    itsm: ItsmTables = field(init=False)  # change_request, problem, cmdb_ci (servicenow_itsm)

    def __post_init__(self) -> None:
        self.itsm = ItsmTables(clock=lambda: self.clock(), user=self.user, journal=self.journal)

    def reset(self) -> None:
        """Empty every table and the request log, as a fresh instance."""
        self.itsm.reset()
        self.incidents.clear()
        self.journal.clear()
        self.requests.clear()
        self.acl_denied = False
        self._numbers = 10000

    # -- reading ---------------------------------------------------------------------------------

    def rows(self, table: str) -> tuple[list[dict[str, str]], frozenset[str]]:
        """The rows of a readable table and its field names; 400 for a table we do not have."""
        if table == "incident":
            return list(self.incidents.values()), INCIDENT_FIELDS
        if table == "sys_journal_field":
            return list(self.journal), JOURNAL_FIELDS
        if table == "sys_choice":
            return self._choices(), CHOICE_FIELDS
        if self.itsm.knows(table):
            return self.itsm.rows(table)
        raise ServiceNowError(400, "Operation Failed", f"Invalid table {table}")

    def get(self, sys_id: str) -> dict[str, str]:
        try:
            return self.incidents[sys_id]
        except KeyError:
            raise not_found() from None

    def notes(self, sys_id: str, element: str = "work_notes") -> list[str]:
        """The journal entries of one record, oldest first."""
        return [j["value"] for j in self.journal if j["element_id"] == sys_id and j["element"] == element]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every incident with its journal rows, in creation order (for `/_sim/records`)."""
        return [
            {"record": dict(rec), "journal": [dict(j) for j in self.journal if j["element_id"] == sys_id]}
            for sys_id, rec in self.incidents.items()
        ]

    # -- writing ---------------------------------------------------------------------------------

    def create(self, body: Mapping[str, Any]) -> dict[str, str]:
        when = self.clock()
        self._numbers += 1
        record = dict(_INCIDENT_DEFAULTS)
        sys_id = uuid.uuid4().hex
        record.update(
            sys_id=sys_id,
            number=f"INC{self._numbers:07d}",
            opened_at=when,
            opened_by=ADMIN_SYS_ID,
            sys_created_on=when,
            sys_created_by=self.user,
            sys_updated_on=when,
            sys_updated_by=self.user,
        )
        changes, entries = _accept(body)
        self._save(record, dict(record), changes, entries, when, created=True)
        return self.incidents[sys_id]

    def update(self, sys_id: str, body: Mapping[str, Any], *, user: str | None = None) -> dict[str, str]:
        """PATCH and PUT alike: apply the known fields, run the rules, save if anything changed."""
        before = self.get(sys_id)
        changes, entries = _accept(body)
        self._save(dict(before), before, changes, entries, self.clock(), created=False, user=user or self.user)
        return self.incidents[sys_id]

    def act_as_human(self, sys_id: str, user: str, **changes: str) -> dict[str, str]:
        """A person's change in the UI: `state="6", close_code=..., close_notes=...` resolves,
        `state="8"` cancels, `assigned_to=<sys_id>` assigns, `comments=`/`work_notes=` comment,
        `state="2"` from 6 reopens. Same rules as the API; `sys_updated_by` is `user`."""
        return self.update(sys_id, changes, user=user)

    def delete(self, sys_id: str) -> None:
        self.get(sys_id)
        del self.incidents[sys_id]
        self.journal[:] = [j for j in self.journal if j["element_id"] != sys_id]

    def _save(
        self,
        record: dict[str, str],
        before: Mapping[str, str],
        changes: Mapping[str, str],
        entries: Iterable[tuple[str, str]],
        when: str,
        *,
        created: bool,
        user: str = "",
    ) -> None:
        user = user or self.user
        record.update(changes)
        if "state" in changes:
            record["incident_state"] = record["state"]
        elif "incident_state" in changes:
            record["state"] = record["incident_state"]
        record["priority"] = self._priority(record["impact"], record["urgency"])
        self._check_data_policy(record)
        _apply_state_change(record, before["state"], when, created=created, user=user)
        entries = [(element, text) for element, text in entries if text]
        if not created and record == before and not entries:
            return  # nothing changed: no save, no sys_mod_count bump
        if not created:
            record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
            record.update(sys_updated_on=when, sys_updated_by=user)
        self.incidents[record["sys_id"]] = record
        rows = [
            {
                "sys_id": uuid.uuid4().hex,
                "name": "incident",
                "element": element,
                "element_id": record["sys_id"],
                "value": text,
                "sys_created_on": when,
                "sys_created_by": user,
            }
            for element, text in entries
        ]
        self.journal.extend(rows)
        if not created:
            for listener in self.on_update:
                listener(dict(record), dict(before), rows)

    def _priority(self, impact: str, urgency: str) -> str:
        # Priority Lookup Rules, the sample in ServiceNow docs "Priority lookup rules"
        # (https://www.servicenow.com/docs/r/it-service-management/incident-management/def-prio-lookup-rules.html);
        # the 3/3 cell differs between instances.
        if (impact, urgency) == ("3", "3"):
            return self.priority_3_3
        table = {"11": "1", "12": "2", "13": "3", "21": "2", "22": "3", "23": "4", "31": "3", "32": "4"}
        return table.get(impact + urgency, "5")  # no matching rule: 5 - Planning [INFERRED]

    def _check_data_policy(self, record: Mapping[str, str]) -> None:
        if record["state"] not in _DONE:
            return
        missing = [label for name, label in _LABELS.items() if not record[name]]
        if missing:
            raise ServiceNowError(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tThe following fields are mandatory: " + ", ".join(missing),
            )
        if record["close_code"] not in self.close_codes:
            # [INFERRED] wording: instances that restrict the choice list refuse the save like this.
            raise ServiceNowError(
                403,
                "Operation Failed",
                f"Data Policy Exception: \n\tInvalid value for Resolution code: {record['close_code']}",
            )

    def _choices(self) -> list[dict[str, str]]:
        return [
            {
                "sys_id": hashlib.md5(f"incident.close_code.{code}".encode()).hexdigest(),
                "name": "incident",
                "element": "close_code",
                "value": code,
                "label": code,
                "sequence": str(n),
                "inactive": "false",
                "language": "en",
            }
            for n, code in enumerate(self.close_codes)
        ]


def _apply_state_change(record: dict[str, str], old: str, when: str, *, created: bool, user: str = "") -> None:
    """What the base instance's business rules do when the state moves."""
    new = record["state"]
    record["active"] = "false" if new in _INACTIVE else "true"
    if new == old and not created:
        return
    if new == "6" or (new == "7" and not record["resolved_at"]):
        record.update(resolved_at=when, resolved_by=ADMIN_SYS_ID)
    if new == "7":
        record.update(closed_at=when, closed_by=ADMIN_SYS_ID)
    if old in _DONE | _INACTIVE and new not in _DONE | _INACTIVE and not created:
        record.update(resolved_at="", resolved_by="", closed_at="", closed_by="")
        record["reopen_count"] = str(int(record["reopen_count"]) + 1)
        record.update(reopened_time=when, reopened_by=user)


def _accept(body: Mapping[str, Any]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The writable fields of a body as strings, and its journal entries; the rest is ignored."""
    changes = {name: _as_string(value) for name, value in body.items() if name in _WRITABLE}
    entries = [(name, changes.pop(name)) for name in _JOURNALED if name in changes]
    return changes, entries


def _as_string(value: Any) -> str:
    # The platform stores strings: numbers and booleans arrive as their text, null as empty.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:
        return _as_string(value["value"])
    return value if isinstance(value, str) else str(value)
