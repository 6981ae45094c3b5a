"""The simulated Remedy / Helix ITSM server's incidents and work logs, and the workflow a REST client meets.

Rules followed (BMC's AR System REST API docs,
https://docs.bmc.com/docs/ars91/en/entry-formname-609071438.html, and the Helix ITSM incident interface
forms): incidents are created through `HPD:IncidentInterface_Create` with `z1D_Action` "CREATE" and the
required fields (First_Name, Last_Name of a known person, Description, Impact, Urgency, Status, Reported
Source, Service_Type), with create-form names (underscores, BMC's own `Detailed_Decription`) shown under
their display names elsewhere; entry ids (`Request ID`) and `Incident Number` come from different
sequences, and the interface form shows the Request ID as `id|id`; Priority and Priority Weight follow
Impact x Urgency; a status needs a Status_Reason from its list (Pending, Resolved, Closed, Cancelled),
Resolved also a Resolution and an Assigned Group (given, or routed when the incident is created as
Assigned); Closed and Cancelled incidents are read-only. Errors are AR error lists; numbers and wording
of workflow errors are [INFERRED] (sites differ), core errors (302, 303, 306, 314, 326) are AR System's.

Who changes an incident: the REST user (`user`), or a person in the Mid Tier (`act_as_human`); the
incident's `Last Modified By` and `Last Modified Date` and a work log's `Submitter` say who and when.
AR System has no outgoing webhook: clients poll on 'Last Modified Date'.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

IMPACTS = ("1-Extensive/Widespread", "2-Significant/Large", "3-Moderate/Limited", "4-Minor/Localized")
URGENCIES = ("1-Critical", "2-High", "3-Medium", "4-Low")
STATUSES = ("New", "Assigned", "In Progress", "Pending", "Resolved", "Closed", "Cancelled")
REPORTED_SOURCES = (
    "Direct Input", "Email", "External Escalation", "Fax", "Self Service", "Systems Management",
    "Phone", "Voice Mail", "Walk In", "Web", "Other", "BMC Impact Manager Event",
)  # fmt: skip
SERVICE_TYPES = (
    "User Service Restoration", "User Service Request", "Infrastructure Restoration", "Infrastructure Event",
)  # fmt: skip
STATUS_REASONS: Mapping[str, tuple[str, ...]] = {
    "Pending": (
        "Automated Resolution Reported", "Client Action Required", "Client Hold", "Future Enhancement",
        "Infrastructure Change", "Local Site Action Required", "Monitoring Incident", "Purchase Order Approval",
        "Registration Approval", "Request", "Supplier Delivery", "Support Contact Hold",
        "Third Party Vendor Action Reqd",
    ),
    "Resolved": (
        "Automated Resolution Reported", "Customer Follow-Up Required", "Future Enhancement",
        "Monitoring Incident", "No Further Action Required", "Temporary Corrective Action",
    ),
    "Closed": ("Automated Resolution Reported", "Infrastructure Change Created"),
    "Cancelled": ("No longer a Causal CI",),
}  # fmt: skip
WORK_LOG_TYPES = (
    "Customer Communication", "Customer Follow-up", "Customer Status Update", "Closure Follow Up",
    "Detail Clarification", "General Information", "Resolution Communications", "Satisfaction Survey",
    "Status Update", "Incident Task / Action", "Problem Script", "Working Log", "Email System",
    "Paging System", "BMC Impact Manager Update", "Chat", "Vendor Communication",
)  # fmt: skip
ENUMS: Mapping[str, tuple[str, ...]] = {
    "Impact": IMPACTS,
    "Urgency": URGENCIES,
    "Status": STATUSES,
    "Reported Source": REPORTED_SOURCES,
    "Service Type": SERVICE_TYPES,
    "Work Log Type": WORK_LOG_TYPES,
    "View Access": ("Internal", "Public"),
    "Secure Work Log": ("Yes", "No"),
}
PEOPLE = frozenset({("Allen", "Allbrook"), ("Bridge", "Integration"), ("App", "Admin")})
# Create-form (and interface) field names -> the display names the other forms show.
ALIASES = {
    "First_Name": "First Name",
    "Last_Name": "Last Name",
    "Service_Type": "Service Type",
    "Detailed_Decription": "Detailed Decription",
    "Reported_Source": "Reported Source",
}
_SETTABLE = (
    "First Name", "Last Name", "Description", "Detailed Decription", "Impact", "Urgency", "Status",
    "Status_Reason", "Resolution", "Reported Source", "Service Type", "Assigned Support Company",
    "Assigned Support Organization", "Assigned Group", "Assignee", "Company", "Categorization Tier 1",
    "Categorization Tier 2", "Categorization Tier 3", "Product Categorization Tier 1",
    "Product Categorization Tier 2", "Product Categorization Tier 3", "HPD_CI", "ServiceCI",
    "Vendor Ticket Number", "Site",
)  # fmt: skip
_SHOWN = (
    "Request ID", "Entry ID", "Incident Number", *_SETTABLE, "Priority", "Priority Weight",
    "Submit Date", "Last Modified Date", "Last Resolved Date", "Re-Opened Date", "Submitter", "Last Modified By",
)  # fmt: skip
INCIDENT_FIELDS = frozenset(_SHOWN)
WORKLOG_FIELDS = frozenset(
    {"Request ID", "Work Log ID", "Incident Number", "Work Log Type", "Description", "Detailed Description"}
    | {"View Access", "Secure Work Log", "Submit Date", "Submitter"}
)
REQUIRED = ("First Name", "Last Name", "Description", "Impact", "Urgency", "Status", "Reported Source", "Service Type")
_LENGTHS = {"Description": 100, "Vendor Ticket Number": 255}  # [INFERRED] site lengths
_IMPACT_WEIGHT = {IMPACTS[0]: 20, IMPACTS[1]: 15, IMPACTS[2]: 10, IMPACTS[3]: 5}
_URGENCY_WEIGHT = {URGENCIES[0]: 10, URGENCIES[1]: 7, URGENCIES[2]: 4, URGENCIES[3]: 1}


class RemedyError(Exception):
    """An AR error list answer: [{"messageType", "messageText", "messageAppendedText", "messageNumber"}]."""

    def __init__(self, status: int, number: int, text: str, appended: str | None = None) -> None:
        self.status, self.number, self.text, self.appended = status, number, text, appended
        super().__init__(f"ARERR {number} {text}: {appended}")

    def body(self) -> list[dict[str, Any]]:
        return [
            {
                "messageType": "ERROR",
                "messageText": self.text,
                "messageAppendedText": self.appended,
                "messageNumber": self.number,
            }
        ]


def missing_entry(entry: str) -> RemedyError:
    return RemedyError(404, 302, "Entry does not exist in database", entry)


def now_ar() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class RemedyStore:
    clock: Callable[[], str] = now_ar
    user: str = "Bridge"
    read_only: bool = False  # the integration user lost write access to the incident forms
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # Request ID -> values
    worklogs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _entries: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _creates: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _logs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        self.incidents.clear()
        self.worklogs.clear()
        self.requests.clear()
        self.read_only = False
        self._entries, self._numbers = itertools.count(1000), itertools.count(1)
        self._creates, self._logs = itertools.count(1), itertools.count(1)

    def incident(self, entry_id: str) -> dict[str, Any]:
        """An incident by Request ID, in either shape (`INC...` or `INC...|INC...`)."""
        record = self.incidents.get(entry_id.split("|", 1)[0])
        if record is None:
            raise missing_entry(entry_id)
        return record

    def by_number(self, number: Any) -> dict[str, Any] | None:
        return next((r for r in self.incidents.values() if r["Incident Number"] == number), None)

    def create(self, values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run the interface workflow: the _Create form's entry id and the new incident."""
        self._writable()
        if values.get("z1D_Action") != "CREATE":
            raise RemedyError(
                500, 1291002, "The z1D_Action field must be CREATE on this form", "z1D_Action"
            )  # [INFERRED]
        given = _display({k: v for k, v in values.items() if k not in ("z1D_Action", "TemplateID")})
        missing = next((name for name in REQUIRED if given.get(name) in (None, "")), None)
        if missing is not None:
            raise RemedyError(400, 326, "Required field cannot be blank.", f"HPD:IncidentInterface_Create : {missing}")
        if (given["First Name"], given["Last Name"]) not in PEOPLE:
            raise RemedyError(
                500,
                1291053,  # [INFERRED] number; the wording is the one clients report
                "No matching records have been found for the Incident contact information you have provided.",
                f"{given['First Name']} {given['Last Name']}",
            )
        if given["Status"] not in ("New", "Assigned", "In Progress", "Pending"):
            raise RemedyError(500, 1291025, "An incident cannot be created with this status", given["Status"])
        entry = f"INC{next(self._entries):012d}"
        when = self.clock()
        record: dict[str, Any] = dict.fromkeys(_SHOWN)
        record |= {
            "Request ID": entry,
            "Entry ID": entry,
            "Incident Number": f"INC{next(self._numbers):012d}",
            "Submit Date": when,
            "Last Modified Date": when,
            "Submitter": self.user,
            "Last Modified By": self.user,
        }
        if given["Status"] == "Assigned" and not given.get("Assigned Group"):
            # Assignment routing picks the group when the incident is created as Assigned.
            given |= {"Assigned Support Company": "Calbro Services", "Assigned Group": "Service Desk"}
        self._apply(record, given, creating=True)
        self.incidents[entry] = record
        return f"{next(self._creates):015d}", record

    def update(self, entry_id: str, values: Mapping[str, Any], *, user: str | None = None) -> dict[str, Any]:
        if user is None:
            self._writable()
        record = self.incident(entry_id)
        if record["Status"] in ("Closed", "Cancelled"):
            raise RemedyError(
                500, 1291037, "A closed or cancelled incident cannot be modified.", record["Incident Number"]
            )
        given = _display(values)
        self._apply(record, given, creating=False, user=user or self.user)
        return record

    def act_as_human(self, entry_id: str, user: str, *, work_log: str | None = None, **values: Any) -> dict[str, Any]:
        """A person's change: `Status="Resolved", Status_Reason=..., Resolution=...` resolves,
        `Status="Cancelled", Status_Reason="No longer a Causal CI"` cancels, `Assignee=...` or
        `Status="In Progress"` takes it, `work_log=` adds a work log entry. Same workflow as the API."""
        record = self.update(entry_id, values, user=user) if values else self.incident(entry_id)
        if work_log is not None:
            self.add_worklog(
                {
                    "Incident Number": record["Incident Number"],
                    "Description": work_log[:100],
                    "Detailed Description": work_log,
                },
                user=user,
            )
        return record

    def add_worklog(self, values: Mapping[str, Any], *, user: str | None = None) -> str:
        if user is None:
            self._writable()
        unknown = next((k for k in values if k not in WORKLOG_FIELDS), None)
        if unknown is not None:
            raise RemedyError(400, 314, "Field does not exist on current form", f"HPD:WorkLog : <{unknown}>")
        record: dict[str, Any] = dict.fromkeys(WORKLOG_FIELDS) | {"Work Log Type": "General Information"}
        record |= {"View Access": "Internal", "Secure Work Log": "No"} | dict(values)
        if not record["Incident Number"]:
            raise RemedyError(400, 326, "Required field cannot be blank.", "HPD:WorkLog : Incident Number")
        if self.by_number(record["Incident Number"]) is None:
            raise RemedyError(500, 1291058, "The incident number is not valid.", str(record["Incident Number"]))
        _check_values(record, "HPD:WorkLog")
        log_id = f"WLG{next(self._logs):012d}"
        record |= {
            "Request ID": log_id,
            "Work Log ID": log_id,
            "Submit Date": self.clock(),
            "Submitter": user or self.user,
        }
        self.worklogs.append(record)
        return log_id

    def notes(self, incident_number: str) -> list[str]:
        return [
            w["Detailed Description"] or w["Description"]
            for w in self.worklogs
            if w["Incident Number"] == incident_number
        ]

    def _writable(self) -> None:
        if self.read_only:
            raise RemedyError(403, 333, "You do not have write access to this form", "HPD:Help Desk")  # [INFERRED]

    def _apply(self, record: dict[str, Any], given: Mapping[str, Any], *, creating: bool, user: str = "") -> None:
        unknown = next((k for k in given if k not in _SETTABLE), None)
        if unknown is not None:
            raise RemedyError(400, 314, "Field does not exist on current form", f"HPD:Help Desk : <{unknown}>")
        merged = record | dict(given)
        _check_values(merged, "HPD:Help Desk")
        status = merged["Status"]
        reasons, reason = STATUS_REASONS.get(status), merged.get("Status_Reason")
        if reasons is None:
            if given.get("Status_Reason"):
                raise RemedyError(500, 1291034, "Incorrect Status reason", f"{status}: {reason}")  # [INFERRED]
            merged["Status_Reason"] = None
        elif (creating or status != record["Status"] or "Status_Reason" in given) and reason not in reasons:
            raise RemedyError(500, 1291034, "Incorrect Status reason", f"{status}: {reason}")
        when = self.clock()
        if status == "Resolved" and record["Status"] != "Resolved":
            if not merged.get("Resolution"):
                raise RemedyError(
                    500, 1291040, "The Resolution field is required to resolve an incident.", "Resolution"
                )
            if not merged.get("Assigned Group"):
                raise RemedyError(
                    500, 1291005, "An assigned group is required to resolve an incident.", "Assigned Group"
                )
            merged["Last Resolved Date"] = when
        if record["Status"] in ("Resolved",) and status not in ("Resolved", "Closed", "Cancelled") and not creating:
            merged["Re-Opened Date"] = when
        weight = _IMPACT_WEIGHT[merged["Impact"]] + _URGENCY_WEIGHT[merged["Urgency"]]
        merged["Priority Weight"] = weight
        merged["Priority"] = (
            "Critical" if weight >= 23 else "High" if weight >= 17 else "Medium" if weight >= 11 else "Low"
        )
        changed = merged != record
        record.update(merged)
        if changed and not creating:
            record["Last Modified Date"] = when
            record["Last Modified By"] = user or self.user


def _display(values: Mapping[str, Any]) -> dict[str, Any]:
    return {ALIASES.get(k, k): v for k, v in values.items()}


def _check_values(record: Mapping[str, Any], form: str) -> None:
    for name, allowed in ENUMS.items():
        value = record.get(name)
        if value is not None and value not in allowed:
            raise RemedyError(
                400, 306, "Value does not fall within the limits specified for the field", f"{form} : {name}"
            )
    for name, limit in _LENGTHS.items():
        value = record.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise RemedyError(
                400, 306, "Value does not fall within the limits specified for the field", f"{form} : {name}"
            )
