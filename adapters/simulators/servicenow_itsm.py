"""The simulated instance's other ITSM tables: `change_request`, `problem` and `cmdb_ci`.

Follows ServiceNow's docs: the Table API (https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html)
for the envelope and string values, and Change Management's "State model and transitions"
(https://www.servicenow.com/docs/r/it-service-management/change-management/c_ChangeStateModel.html) for a
change's `state`: -5 New, -4 Assess, -3 Authorize, -2 Scheduled, -1 Implement, 0 Review, 3 Closed, 4 Canceled
(excerpt in tests/fixtures/specs/servicenow-change-states.md). A change's planned window is `start_date` to
`end_date` (glide_date_time, UTC as the API shows it), its approval `approval` ("not requested",
"requested", "approved", "rejected"), its configuration item `cmdb_ci`, a reference to `cmdb_ci`, which an
encoded query reaches by dot-walking (`cmdb_ci.name=web-01`). A problem's `state` starts at 101 (New);
numbers run CHG0030001, PRB0040001, ... Unknown fields in a body are ignored, as for incidents.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_COMMON: Mapping[str, str] = {
    "active": "true",
    "assigned_to": "",
    "assignment_group": "",
    "cmdb_ci": "",
    "comments": "",
    "correlation_display": "",
    "correlation_id": "",
    "description": "",
    "impact": "3",
    "number": "",
    "priority": "4",
    "short_description": "",
    "sys_created_by": "",
    "sys_created_on": "",
    "sys_id": "",
    "sys_mod_count": "0",
    "sys_updated_by": "",
    "sys_updated_on": "",
    "urgency": "3",
    "work_notes": "",
}
DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "change_request": {
        **_COMMON,
        "approval": "not requested",
        "end_date": "",
        "risk": "3",
        "start_date": "",
        "state": "-5",
        "sys_class_name": "change_request",
        "type": "normal",
    },
    "problem": {
        **_COMMON,
        "first_reported_by_task": "",
        "problem_state": "101",
        "state": "101",
        "sys_class_name": "problem",
    },
}
PREFIXES = {"change_request": ("CHG", 30000), "problem": ("PRB", 40000)}
CI_FIELDS = frozenset({"sys_id", "name", "sys_class_name"})
WALKED = "cmdb_ci.name"  # the one dot-walked field the simulator resolves
_READ_ONLY = frozenset({"sys_id", "number", "sys_class_name", "active"})
_JOURNALED = ("work_notes", "comments")


@dataclass
class ItsmTables:
    """change_request, problem and cmdb_ci rows (sys_id -> record, creation order)."""

    clock: Callable[[], str]
    user: str = "admin"
    journal: list[dict[str, str]] = field(default_factory=list)  # the store's sys_journal_field
    tables: dict[str, dict[str, dict[str, str]]] = field(
        default_factory=lambda: {"change_request": {}, "problem": {}, "cmdb_ci": {}}
    )
    _numbers: dict[str, int] = field(default_factory=lambda: {t: n for t, (_, n) in PREFIXES.items()})

    def reset(self) -> None:
        for rows in self.tables.values():
            rows.clear()
        self._numbers = {t: n for t, (_, n) in PREFIXES.items()}

    def knows(self, table: str) -> bool:
        return table in self.tables

    def rows(self, table: str) -> tuple[list[dict[str, str]], frozenset[str]]:
        """The rows and field names; records with a `cmdb_ci` also carry `cmdb_ci.name` for queries."""
        if table == "cmdb_ci":
            return list(self.tables[table].values()), CI_FIELDS
        names = {ci["sys_id"]: ci["name"] for ci in self.tables["cmdb_ci"].values()}
        rows = [{**row, WALKED: names.get(row["cmdb_ci"], "")} for row in self.tables[table].values()]
        return rows, frozenset(DEFAULTS[table]) | {WALKED}

    def ci(self, name: str) -> str:
        """The sys_id of the configuration item named `name`, made on first use (a test's CMDB)."""
        for row in self.tables["cmdb_ci"].values():
            if row["name"] == name:
                return row["sys_id"]
        sys_id = uuid.uuid4().hex
        self.tables["cmdb_ci"][sys_id] = {"sys_id": sys_id, "name": name, "sys_class_name": "cmdb_ci_server"}
        return sys_id

    def add_change(self, ci: str, start: str, end: str, *, state: str = "-1", approval: str = "approved",
                   **fields: str) -> dict[str, str]:  # fmt: skip
        """A change on the CI named `ci`, planned `start` to `end` ("YYYY-MM-DD HH:MM:SS" UTC), as a change
        manager would have scheduled it (default: approved and being implemented)."""
        body = {"cmdb_ci": self.ci(ci), "start_date": start, "end_date": end, "state": state, "approval": approval}
        return self.create("change_request", {**body, **fields})

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        return self.tables[table].get(sys_id)

    def create(self, table: str, body: Mapping[str, Any]) -> dict[str, str]:
        when = self.clock()
        prefix, _ = PREFIXES[table]
        self._numbers[table] += 1
        record = dict(DEFAULTS[table])
        sys_id = uuid.uuid4().hex
        record.update(sys_id=sys_id, number=f"{prefix}{self._numbers[table]:07d}", sys_created_on=when,
                      sys_created_by=self.user, sys_updated_on=when, sys_updated_by=self.user)  # fmt: skip
        self._apply(table, record, body, when)
        self.tables[table][sys_id] = record
        return record

    def update(self, table: str, sys_id: str, body: Mapping[str, Any]) -> dict[str, str] | None:
        record = self.tables[table].get(sys_id)
        if record is None:
            return None
        when = self.clock()
        if self._apply(table, record, body, when):
            record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
            record.update(sys_updated_on=when, sys_updated_by=self.user)
        return record

    def _apply(self, table: str, record: dict[str, str], body: Mapping[str, Any], when: str) -> bool:
        changed = False
        for name, value in body.items():
            if name not in DEFAULTS[table] or name in _READ_ONLY or name.startswith("sys_"):
                continue
            text = _as_string(value)
            if name in _JOURNALED:
                if text:
                    self.journal.append({"sys_id": uuid.uuid4().hex, "name": table, "element": name,
                                         "element_id": record["sys_id"], "value": text, "sys_created_on": when,
                                         "sys_created_by": self.user})  # fmt: skip
                    changed = True
                continue
            changed = changed or record.get(name) != text
            record[name] = text
        if table == "problem" and "state" in body:
            record["problem_state"] = record["state"]
        return changed


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:
        return _as_string(value["value"])
    return value if isinstance(value, str) else str(value)
