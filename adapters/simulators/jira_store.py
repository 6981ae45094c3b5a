"""The simulated Jira site's projects, workflows, issues and the rules a REST client meets.

Those rules follow https://developer.atlassian.com/cloud/jira/platform/rest/v3/ (create, edit,
transitions, the ErrorCollection) and Atlassian's workflow and screen documentation.

Two projects: OPS (a software-style project on Jira's classic workflow: Open, In Progress,
Reopened, Resolved, Closed) and HELP (the JSM service desk "10", on a service-request workflow:
Waiting for support, In Progress, Resolved, Canceled, Closed). Transitions into a done status set
a resolution (from their screen, else "Done" by post function); transitions out of it clear it.
Create and edit accept only fields on the screen (`SCREEN`), with the value shapes Jira checks:
rich text as ADF on API v3 and as strings on v2, named values for priority and resolution,
labels without spaces, components that exist. Errors are Jira's ErrorCollection.

Who changes an issue: the API's user (`integration`, the one account the simulator accepts), or a
person acting in the UI (`act_as_human`). Every change made after the create is kept as Jira keeps
it: a changelog history (`id`, `author`, `created`, `items` of field, fieldtype, from, fromString,
to, toString), `updated` moves, comments carry `author`; and each is passed to `on_change` as
(webhook event name, issue, history or comment), which jira.py pushes as Jira's webhook.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.simulators.jira_adf import adf_problem, adf_to_text, text_to_adf

PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
RESOLUTIONS = ("Done", "Fixed", "Won't Do", "Duplicate", "Cannot Reproduce")
CATEGORY_NAMES = {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}
CATEGORY_IDS = {"new": 2, "indeterminate": 4, "done": 3}
STATUSES: Mapping[str, tuple[str, str]] = {  # name -> (id, category key)
    "Open": ("1", "new"),
    "In Progress": ("3", "indeterminate"),
    "Reopened": ("4", "new"),
    "Resolved": ("5", "done"),
    "Closed": ("6", "done"),
    "Waiting for support": ("10001", "new"),
    "Canceled": ("10003", "done"),
}
# field id -> kind; "rich" fields are ADF on API v3. Custom fields as a site would define them.
SCREEN: Mapping[str, str] = {
    "summary": "text",
    "description": "rich",
    "environment": "rich",
    "priority": "named",
    "labels": "labels",
    "components": "components",
    "duedate": "text",
    "assignee": "user",
    "reporter": "user",
    "customfield_10010": "text",  # "Alert source"
    "customfield_10020": "rich",  # "Runbook" (paragraph field)
    "customfield_10030": "option",  # "Severity"
    "customfield_10040": "text",  # "Change start date" (date-time, as Jira writes it: 2026-12-04T10:00:00.000+0000)
    "customfield_10041": "text",  # "Change completion date"
}
OPTIONS = {"customfield_10030": ("Sev 1", "Sev 2", "Sev 3", "Sev 4")}


@dataclass(frozen=True, slots=True)
class Transition:
    id: str
    name: str
    to: str
    sources: tuple[str, ...]
    screen: tuple[str, ...] = ()  # fields on its screen; resolution is required when present
    resolution: str = "Done"  # what its post function sets when no screen asks (into a done status)


CLASSIC = (
    Transition("4", "Start Progress", "In Progress", ("Open", "Reopened")),
    Transition("301", "Stop Progress", "Open", ("In Progress",)),
    Transition("5", "Resolve Issue", "Resolved", ("Open", "In Progress", "Reopened"), ("resolution",)),
    Transition("2", "Close Issue", "Closed", ("Open", "In Progress", "Reopened"), ("resolution",)),
    Transition("701", "Close Issue", "Closed", ("Resolved",)),
    Transition("3", "Reopen Issue", "Reopened", ("Resolved", "Closed")),
)
SERVICE_REQUEST = (
    Transition("11", "Start work", "In Progress", ("Waiting for support",)),
    Transition("761", "Resolve this issue", "Resolved", ("Waiting for support", "In Progress"), ("resolution",)),
    Transition("771", "Cancel request", "Canceled", ("Waiting for support", "In Progress"), (), "Won't Do"),
    Transition("781", "Back to in progress", "In Progress", ("Resolved",)),
    Transition("791", "Close", "Closed", ("Resolved",)),
)


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    key: str
    issue_types: tuple[str, ...]
    initial: str
    workflow: tuple[Transition, ...]
    components: tuple[str, ...] = ()


PROJECTS = (
    Project("10000", "OPS", ("Incident", "Task", "Bug", "Problem"), "Open", CLASSIC, ("Database", "Network", "Web")),
    Project("10001", "HELP", ("[System] Incident", "[System] Service request"), "Waiting for support", SERVICE_REQUEST),
    Project("10002", "CHG", ("Change",), "Open", CLASSIC),  # changes, for change-aware tickets
)


class JiraError(Exception):
    """An answer in Jira's ErrorCollection: {"errorMessages": [...], "errors": {field: message}}."""

    def __init__(self, status: int, *messages: str, errors: Mapping[str, str] | None = None) -> None:
        self.status, self.messages, self.errors = status, list(messages), dict(errors or {})
        super().__init__(f"{status} {messages} {self.errors}")

    def body(self) -> dict[str, Any]:
        return {"errorMessages": self.messages, "errors": self.errors}


def not_found() -> JiraError:
    return JiraError(404, "Issue does not exist or you do not have permission to see it.")


def now_jira() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def jira_ms(text: str) -> int:
    """Epoch milliseconds of a Jira timestamp (2026-12-04T10:00:00.000+0000)."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def user_json(name: str, *, cloud: bool, email: str = "") -> dict[str, Any]:
    """A user as Jira shows it: Cloud by accountId (email usually hidden), Data Center by name and key."""
    shown = name.replace(".", " ").title()
    if cloud:
        user: dict[str, Any] = {"accountId": f"557058:{name}", "displayName": shown, "active": True}
        user["accountType"] = "atlassian"
    else:
        user = {"name": name, "key": f"JIRAUSER-{name}", "displayName": shown, "active": True}
    if email:
        user["emailAddress"] = email
    return user


@dataclass
class Issue:
    id: str
    key: str
    project: Project
    fields: dict[str, Any]  # as stored: rich text in the form it was sent (ADF dict or string)
    status: str
    created: str
    created_at: float  # monotonic, for the eventual-consistency knob
    resolution: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    updated: str = ""
    histories: list[dict[str, Any]] = field(default_factory=list)  # the changelog, oldest first
    links: list[dict[str, Any]] = field(default_factory=list)  # issue links, both ends (jira_links)

    @property
    def category(self) -> str:
        return STATUSES[self.status][1]

    def search_row(self) -> dict[str, Any]:
        """The issue as JQL sees it."""
        row: dict[str, Any] = {
            "project": [self.project.key, self.project.id],
            "key": [self.key, self.id],
            "key_number": int(self.id),
            "issuetype": self.fields.get("issuetype"),
            "status": self.status,
            "statusCategory": self.category,
            "labels": list(self.fields.get("labels", [])),
            "summary": self.fields.get("summary", ""),
            "text": " ".join(str(self.fields.get(f, "")) for f in ("summary",))
            + " "
            + " ".join(adf_to_text(self.fields.get(f)) for f in ("description", "environment")),
            "resolution": self.resolution,
            "priority": self.fields.get("priority"),
            "created": jira_ms(self.created),
            "updated": jira_ms(self.updated or self.created),
        }
        for key, value in self.properties.items():
            if isinstance(value, dict):
                for name, inner in value.items():
                    row[f"issue.property[{key}].{name}"] = inner if isinstance(inner, str) else str(inner)
        return row


@dataclass
class JiraStore:
    cloud: bool = True
    read_only: set[str] = field(default_factory=set)  # project keys the bridge user may not write
    issues: dict[str, Issue] = field(default_factory=dict)  # key -> issue, creation order
    requests: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10000))
    _numbers: dict[str, itertools.count[int]] = field(default_factory=dict)
    _comment_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10000))
    _history_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10100))
    integration: str = "alert.bridge"  # the API user's name (Cloud: accountId 557058:alert.bridge)
    email: str = ""
    time_zone: str = "UTC"  # the API user's profile time zone: /myself shows it, JQL reads dates in it
    on_change: list[Callable[[str, Issue, dict[str, Any]], None]] = field(default_factory=list)
    link_ids: int = 10000  # the last issue link's id (jira_links)

    def user(self, name: str | None = None) -> dict[str, Any]:
        """A user object; the integration user (with its email) when `name` is None."""
        if name is None:
            return user_json(self.integration, cloud=self.cloud, email=self.email) | {"timeZone": self.time_zone}
        return user_json(name, cloud=self.cloud)

    def record(self, issue: Issue, items: list[dict[str, Any]], author: str | None = None) -> None:
        """One changelog history of `items` by `author` (None: the integration user); pushed."""
        if not items:
            return
        issue.updated = now_jira()
        history: dict[str, Any] = {"id": str(next(self._history_ids)), "author": self.user(author)}
        history |= {"created": issue.updated, "items": items}
        issue.histories.append(history)
        for listener in self.on_change:
            listener("jira:issue_updated", issue, history)

    def move(self, issue: Issue, to: str, resolution: str | None, author: str | None = None) -> None:
        """Set the status (and resolution), recording both as Jira's changelog does."""
        items = []
        if to != issue.status:
            items.append(_item("status", "jira", STATUSES[issue.status][0], issue.status, STATUSES[to][0], to))
        if resolution != issue.resolution:
            items.append(_item("resolution", "jira", None, issue.resolution, None, resolution))
        issue.status, issue.resolution = to, resolution
        self.record(issue, items, author)

    def act_as_human(
        self,
        key: str,
        user: str,
        *,
        to: str | None = None,
        resolution: str | None = None,
        assignee: str | None = None,
        comment: str | None = None,
    ) -> Issue:
        """A person in the UI: a transition into status `to` (its screen's resolution, or `resolution`),
        an assignment to `assignee`, a comment. Refused (JiraError 400) where the workflow has no such move."""
        issue = self.get(key)
        if assignee is not None:
            before = issue.fields.get("assignee")
            issue.fields["assignee"] = self.user(assignee)
            old = before.get("displayName") if isinstance(before, dict) else None
            item = _item("assignee", "jira", None, old, None, issue.fields["assignee"]["displayName"])
            self.record(issue, [item], user)
        if to is not None:
            chosen = next((t for t in self.transitions(issue) if t.to == to), None)
            if chosen is None:
                raise JiraError(400, f"No transition from {issue.status!r} to {to!r}")
            done = STATUSES[to][1] == "done"
            self.move(issue, to, (resolution or chosen.resolution) if done else None, user)
        if comment is not None:
            self.comment(issue, comment, author=user)
        return issue

    def reset(self) -> None:
        self.issues.clear()
        self.requests.clear()
        self.read_only.clear()
        self._ids, self._numbers = itertools.count(10000), {}
        self._comment_ids = itertools.count(10000)
        self._history_ids = itertools.count(10100)
        self.link_ids = 10000

    def project(self, ref: Any) -> Project | None:
        key = ref.get("key") or ref.get("id") if isinstance(ref, dict) else ref
        return next((p for p in PROJECTS if key in (p.key, p.id)), None)

    def get(self, id_or_key: str) -> Issue:
        for issue in self.issues.values():
            if id_or_key in (issue.key, issue.id):
                return issue
        raise not_found()

    def writable(self, issue: Issue, what: str) -> None:
        if issue.project.key in self.read_only:
            raise JiraError(403, f"You do not have permission to {what} in this project.")

    def create(self, body: Mapping[str, Any], *, version: int, clock: float, agent: bool = True) -> Issue:
        """A new issue; `agent` False is a JSM customer's request, which needs no edit permission."""
        values = body.get("fields")
        if not isinstance(values, dict):
            raise JiraError(400, "Can not deserialize instance of fields")
        project = self.project(values.get("project"))
        if project is None:
            raise JiraError(400, errors={"project": "valid project is required"})
        if agent and project.key in self.read_only:
            raise JiraError(400, errors={"project": "You do not have permission to create issues in this project."})
        type_ref = values.get("issuetype") or {}
        issue_type = type_ref.get("name") or type_ref.get("id") if isinstance(type_ref, dict) else None
        if issue_type not in project.issue_types:
            raise JiraError(400, errors={"issuetype": "valid issue type is required"})
        rest = {k: v for k, v in values.items() if k not in ("project", "issuetype")}
        fields = self.check_fields(rest, version=version, project=project)
        if not str(fields.get("summary", "")).strip():
            raise JiraError(400, errors={"summary": "You must specify a summary of the issue."})
        properties = _properties(body.get("properties"))
        number = next(self._numbers.setdefault(project.key, itertools.count(1)))
        issue = Issue(
            id=str(next(self._ids)),
            key=f"{project.key}-{number}",
            project=project,
            fields=fields | {"issuetype": issue_type},
            status=project.initial,
            created=now_jira(),
            created_at=clock,
            properties=properties,
        )
        issue.updated = issue.created
        self.issues[issue.key] = issue
        return issue

    def check_fields(self, values: Mapping[str, Any], *, version: int, project: Project) -> dict[str, Any]:
        """The values of a create or edit, checked against the screen; 400 naming every bad field."""
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for name, value in values.items():
            kind = SCREEN.get(name)
            problem = (
                f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                if kind is None
                else _value_problem(name, kind, value, version=version, cloud=self.cloud, project=project)
            )
            if problem:
                errors[name] = problem
                continue
            out[name] = _stored(kind or "", value)
        if errors:
            raise JiraError(400, errors=errors)
        return out

    def transitions(self, issue: Issue) -> list[Transition]:
        return [t for t in issue.project.workflow if issue.status in t.sources]

    def comment(self, issue: Issue, body: Any, *, public: bool = True, author: str | None = None) -> dict[str, Any]:
        when = now_jira()
        entry = {
            "id": str(next(self._comment_ids)),
            "author": self.user(author),
            "body": body,
            "updateAuthor": self.user(author),
            "created": when,
            "updated": when,
            "jsdPublic": public,
        }
        issue.comments.append(entry)
        issue.updated = when
        for listener in self.on_change:
            listener("comment_created", issue, entry)
        return entry


def _item(field: str, kind: str, old: str | None, old_text: Any, new: str | None, new_text: Any) -> dict[str, Any]:
    return {
        "field": field,
        "fieldtype": kind,
        "fieldId": field,
        "from": old,
        "fromString": None if old_text is None else str(old_text),
        "to": new,
        "toString": None if new_text is None else str(new_text),
    }


def field_items(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changelog items for the fields an edit changed."""
    items = []
    for name in after:
        old, new = before.get(name), after.get(name)
        if old != new:
            shown = [v.get("displayName") if isinstance(v, dict) else v for v in (old, new)]
            texts = [" ".join(v) if isinstance(v, list) else v for v in shown]
            items.append(_item(name, "jira", None, texts[0], None, texts[1]))
    return items


def rich(value: Any, version: int) -> Any:
    """A stored rich-text value as API `version` shows it."""
    if value is None:
        return None
    if version == 3:
        return value if isinstance(value, dict) else text_to_adf(str(value))
    return value if isinstance(value, str) else adf_to_text(value)


def comment_problem(body: Any, version: int) -> str:
    """Why a comment body is refused: empty, a string on API v3, ADF on v2."""
    if body in (None, "", {}):
        return "Comment body can not be empty!"
    if version == 2:
        return "" if isinstance(body, str) else "Operation value must be a string"
    problem = adf_problem(body)
    return f"Comment body must be an Atlassian Document: {problem}" if problem else ""


def _value_problem(name: str, kind: str, value: Any, *, version: int, cloud: bool, project: Project) -> str:
    if kind == "text":
        return "" if isinstance(value, str) else f"Operation value must be a string for field '{name}'."
    if kind == "rich":
        if version == 2:
            return "" if isinstance(value, str) else "Operation value must be a string"
        problem = adf_problem(value)
        return (
            f"Operation value must be an Atlassian Document (see the Atlassian Document Format): {problem}"
            if problem
            else ""
        )
    if kind == "named":
        ref = value.get("name") or value.get("id") if isinstance(value, dict) else None
        return "" if ref in PRIORITIES else f"Specify a valid 'id' or 'name' for {name.capitalize()}"
    if kind == "labels":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "Operation value must be an array of strings"
        bad = next((v for v in value if not v or any(c.isspace() for c in v) or len(v) > 255), None)
        return f"The label '{bad}' contains spaces which is invalid." if bad is not None else ""
    if kind == "components":
        names = [c.get("name") for c in value if isinstance(c, dict)] if isinstance(value, list) else [None]
        bad_name = next((n for n in names if n not in project.components), "")
        return f"Component name '{bad_name}' is not valid" if bad_name != "" else ""
    if kind == "user":
        wanted = "accountId" if cloud else "name"
        return "" if isinstance(value, dict) and isinstance(value.get(wanted), str) else f"Specify the user by {wanted}"
    if kind == "option":
        option = value.get("value") if isinstance(value, dict) else None
        allowed = OPTIONS.get(name, ())
        return "" if option in allowed else f"Option value '{option}' is not valid"
    return ""


def _stored(kind: str, value: Any) -> Any:
    if kind == "named":
        return value.get("name") or value.get("id")
    if kind == "components":
        return [c["name"] for c in value]
    return value


def _properties(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, list) or not all(isinstance(p, dict) and set(p) <= {"key", "value"} for p in value):
        raise JiraError(400, "Unrecognized field in properties: each needs only key and value")
    return {str(p.get("key")): p.get("value") for p in value}
