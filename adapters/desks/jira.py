"""The Jira desk: issues in Jira Cloud or Data Center, and Jira Service Management requests.

Wire format: the Jira Cloud platform REST API
(https://developer.atlassian.com/cloud/jira/platform/rest/v3/ and .../rest/v2/), the Jira Data
Center REST API (https://docs.atlassian.com/software/jira/docs/api/REST/latest/) and the Jira
Service Management REST API (https://developer.atlassian.com/cloud/jira/service-desk/rest/). The
desk's keys: adapters.desks.jira_config; API versions, Cloud or Data Center, auth, searches and
error reasons: adapters.desks.jira_site.

- open: `POST /issue` with the route's fields (adapters.desks.jira_fields) plus the correlation
  label, or, with `correlation: property`, an issue property written in the same call. When the
  route (field `requestTypeId`) or the desk (`request_type`) names a JSM request type, open is
  `POST /rest/servicedeskapi/request` instead; the correlation label is then added by a second
  call, unless the request type is listed in `request_labels` (its form shows Labels), which puts
  it in the request itself.
  If that second call fails, open is DeskRejected naming the new request: label it (or delete it)
  and replay the dead letter, whose open finds and adopts it.
- find: JQL `labels = "<id>"` (or `issue.property[key].correlation_id = "<id>"`, which needs a site
  that indexes the property), newest first.
  Search may trail a create (`search_lag`): `find_lag` tells the delivery how long to keep
  searching before it opens again an issue whose create's answer was lost.
- note: a comment; on a desk with `service_desk`, an internal JSM comment (`public: false`).
- update: edit; labels are added (never replaced, so the correlation label stays).
- resolve / reopen: the transition named in the config, else the first one into (out of) the
  "done" status category but not into a closed status (adapters.desks.jira_workflow), with the
  fields its screen requires (resolution), then the note as a comment. An issue already in the
  wanted category just gets the comment, so a retry is harmless.
- state: the status category; statuses in `closed_statuses` count as CLOSED.

The loop back (bridge.core.sync): `parse_events` reads Jira's webhooks (`jira:issue_updated` with
its changelog, `comment_created`; Cloud and Data Center send the same shape), `changes_since` polls
`updated >= "<yyyy/MM/dd HH:mm>"` (in the integration user's profile time zone, which JQL reads dates
in: `/myself` tells it) with `expand=changelog` and the comments, scoped to `project` (and `sync_jql`), keeping the
issues that carry a correlation label. A change into the done category is RESOLVED, or CANCELLED
when its resolution or status is in `cancelled`; a cleared resolution is REOPENED; into "In
Progress" or an assignee set is ASSIGNED. Comments the bridge writes end with `MARKER`; the
integration user is known by `email`/accountId/name (`identify()` asks `/myself`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from adapters.desks.events import MAX_EVENTS, Identity, KnowsItself, Reader, marked
from adapters.desks.jira_config import JiraSettings
from adapters.desks.jira_events import CORRELATION, TIMES, JiraEvents
from adapters.desks.jira_fields import adf, field_text, jira_fields, jql_string, labels
from adapters.desks.jira_site import JiraSite
from adapters.desks.jira_workflow import missing, pick
from adapters.desks.transport import Transport, tls_context
from bridge.core.desk import ChangeRef, TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskError, DeskRejected, PayloadError
from bridge.core.sync import ChangePage, DeskEvent
from bridge.core.templates import render

_JSM_ONLY = frozenset({"requestTypeId", "serviceDeskId"})
# A correlation id as a label: `<route id>:<key hash>:<epoch>` (spaces as `_`; bridge.core.keys).


class JiraConfig(JiraSettings):  # the model pyproject.toml registers: the keys (jira_config), and build
    """One Jira site (Cloud or Data Center), optionally with a JSM service desk."""

    def build(self, name: str, session: aiohttp.ClientSession) -> JiraDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return JiraDesk(name, self, transport)


class JiraDesk(KnowsItself):
    """Issues found again by their correlation label (or property); see the module text."""

    def __init__(self, name: str, config: JiraConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        self._site = JiraSite(name, config, transport)  # signed requests, in the site's API version
        # How long `find` may miss an issue after its create was sent: the answer may come that late
        # (`timeout`), and search may take `search_lag` more to show the issue.
        self.find_lag = config.timeout + config.search_lag
        # sync.integration_user: the accountId (Cloud) or user name (Data Center); by default the configured
        # email and whatever /myself answers (`identify`)
        self._identity = Identity(config.email)
        self._events = JiraEvents(  # the loop back's reading of Jira's changes
            name, self._identity, url=config.url, label_prefix=config.label_prefix, cancelled=config.cancelled,
            by_label=config.correlation == "label",
        )  # fmt: skip
        self._identified = False
        self._zone: tzinfo = UTC  # the integration user's profile time zone (`/myself`): JQL's dates are in it
        self.page_size = 50  # issues per search page of the poll

    async def identify(self) -> None:
        """Learn the integration user's accountId, name and key from `/myself` (once)."""
        if self._identified:
            return
        me = await self._site.json("identify", "GET", f"{self._config.url}/rest/api/2/myself")
        if isinstance(me, dict):
            for key in ("accountId", "name", "key", "emailAddress"):
                self._identity.learn(str(me.get(key) or ""))
            self._zone = _zone(me.get("timeZone"))
        self._identified = True

    # -- the Desk protocol ---------------------------------------------------------------------

    async def find(self, correlation_id: str) -> TicketRef | None:
        if self._config.correlation == "property":
            clause = f"issue.property[{self._config.property_key}].correlation_id = {jql_string(correlation_id)}"
        else:
            clause = f"labels = {jql_string(self._label(correlation_id))}"
        found = await self._site.search("find", f"{clause} ORDER BY created DESC", ["status"], limit=1)
        issues = found.get("issues") if isinstance(found, dict) else None
        if not isinstance(issues, list):
            raise DeskRejected(f"{self.name} find: search answer has no issues", desk=self.name, action="find")
        return self._ref(issues[0]["key"]) if issues and isinstance(issues[0], dict) else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        request_type = fields.get("requestTypeId") or self._config.request_type
        if request_type:
            return await self._open_request(correlation_id, request_type, fields)
        cloud = await self._site.is_cloud("open")
        version = await self._site.version("open")
        values: dict[str, Any] = {
            "project": {"key": self._config.project},
            "issuetype": {"name": self._config.issue_type},
        }
        values |= self._fields(fields, adf_rich_text=version == 3, cloud=cloud)
        body: dict[str, Any] = {"fields": values}
        if self._config.correlation == "property":
            body["properties"] = [{"key": self._config.property_key, "value": {"correlation_id": correlation_id}}]
        else:
            values["labels"] = [*values.get("labels", []), self._label(correlation_id)]
        answer = await self._site.send("open", "POST", await self._site.api_url("open", "issue"), json=body)
        created = self._http.json("open", answer)
        if not isinstance(created, dict) or not isinstance(created.get("key"), str):
            raise self._http.unexpected("open", answer, "answer has no issue key")
        return self._ref(created["key"])

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._comment("note", ref, text)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        editable = {k: v for k, v in fields.items() if k not in _JSM_ONLY}
        if not editable:
            return
        cloud = await self._site.is_cloud("update")
        version = await self._site.version("update")
        values = self._fields(editable, adf_rich_text=version == 3, cloud=cloud)
        body: dict[str, Any] = {"fields": values}
        added = values.pop("labels", None)
        if added:
            body["update"] = {"labels": [{"add": label} for label in added]}
        await self._site.send("update", "PUT", await self._site.api_url("update", f"issue/{ref.id}"), json=body)

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        await self._transition("resolve", ref, self._config.resolve_transition, done=True, fields=fields)
        await self._comment("resolve", ref, note)

    # -- change-aware tickets and problem records (bridge.core.desk.ChangeAware, ProblemDesk) ------

    async def change_covering(self, ci: str, at_ms: int) -> ChangeRef | None:
        """The first change the desk's `change_jql` finds for `ci` whose window (if the desk names its
        fields) holds `at_ms`, newest first."""
        config = self._config
        if not config.change_jql:
            return None
        try:
            jql = render(config.change_jql, {"ci": jql_string(ci)})
        except ValueError as exc:
            raise DeskRejected(str(exc), desk=self.name, action="change_covering") from exc
        window = [f for f in (config.change_start_field, config.change_end_field) if f]
        found = await self._site.search("change_covering", jql, ["summary", *window], limit=20)
        issues = found.get("issues") if isinstance(found, dict) else None
        if not isinstance(issues, list):
            raise DeskRejected(f"{self.name}: change search answer has no issues", desk=self.name,
                               action="change_covering")  # fmt: skip
        for issue in issues:
            values = issue.get("fields") if isinstance(issue, dict) else None
            if not isinstance(values, dict) or not isinstance(issue.get("key"), str):
                continue
            start = _when(values.get(config.change_start_field)) if config.change_start_field else 0
            end = _when(values.get(config.change_end_field)) if config.change_end_field else 0
            if window and (start is None or end is None or not start <= at_ms <= end):
                continue  # no window, or not now
            ref = self._ref(issue["key"])
            summary = str(values.get("summary") or "")[:200]
            return ChangeRef(ref.id, ref.display, ref.url, start or 0, end or 0, summary)
        return None

    async def link_change(self, ref: TicketRef, change: ChangeRef, note: str) -> None:
        await self._link("link_change", ref, change.id, self._config.change_link_type, note)

    async def open_problem(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        """An issue of `problem_issue_type` in the project, found again by its correlation label."""
        cloud = await self._site.is_cloud("open_problem")
        version = await self._site.version("open_problem")
        summary = f"Recurring incident {correlation_id.rsplit(':problem:', 1)[0]}"
        values: dict[str, Any] = {
            "project": {"key": self._config.project},
            "issuetype": {"name": self._config.problem_issue_type},
        }
        values |= self._fields({"summary": summary, **fields}, adf_rich_text=version == 3, cloud=cloud)
        values["labels"] = [*values.get("labels", []), self._label(correlation_id)]
        answer = await self._site.send("open_problem", "POST", await self._site.api_url("open_problem", "issue"),
                                       json={"fields": values})  # fmt: skip
        created = self._http.json("open_problem", answer)
        if not isinstance(created, dict) or not isinstance(created.get("key"), str):
            raise self._http.unexpected("open_problem", answer, "answer has no issue key")
        return self._ref(created["key"])

    async def link_problem(self, ref: TicketRef, problem: TicketRef, note: str) -> None:
        await self._link("link_problem", ref, problem.id, self._config.problem_link_type, note)

    async def _link(self, action: str, ref: TicketRef, other: str, kind: str, note: str) -> None:
        """Create issue link (`POST /issueLink`): the ticket is the outward ("from") issue, which gets the
        note as the link's comment."""
        version = await self._site.version(action)
        text = marked(note)
        body = {
            "type": {"name": kind},
            "inwardIssue": {"key": other},
            "outwardIssue": {"key": ref.id},
            "comment": {"body": adf(text) if version == 3 else text},
        }
        await self._site.send(action, "POST", await self._site.api_url(action, "issueLink"), json=body)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._transition("reopen", ref, self._config.reopen_transition, done=False, fields={})
        await self._comment("reopen", ref, note)

    async def state(self, ref: TicketRef) -> TicketState:
        """The status category decides the phase; fields come back as the strings a route writes."""
        url = await self._site.api_url("state", f"issue/{ref.id}")
        issue = await self._site.json("state", "GET", url, params={"fields": "*navigable"})
        values = issue.get("fields") if isinstance(issue, dict) else None
        if not isinstance(values, dict):
            raise DeskRejected(f"{self.name} state: answer has no fields", desk=self.name, action="state")
        status = values.get("status") or {}
        name = str(status.get("name", ""))
        category = str((status.get("statusCategory") or {}).get("key", ""))
        phase = TicketPhase.OPEN
        if name in self._config.closed_statuses:
            phase = TicketPhase.CLOSED
        elif category == "done":
            phase = TicketPhase.RESOLVED
        shown = {key: field_text(value) for key, value in values.items()}
        shown["statusCategory"] = category
        return TicketState(phase=phase, raw_state=name, fields=shown)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    # -- the loop back (bridge.core.sync) ------------------------------------------------------

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]:
        """A Jira webhook (adapters.desks.jira_events)."""
        return self._events.parse(body)

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage:
        """Issues of `project` (and `sync_jql`) updated at or after `since_ms` (JQL counts minutes):
        their changelog histories and comments from `since_ms` on, oldest first per page."""
        await self.identify()
        scope = f"project = {jql_string(self._config.project)}"
        if self._config.sync_jql:
            scope += f" AND ({self._config.sync_jql})"
        since = datetime.fromtimestamp(max(0, since_ms) / 1000, self._zone).strftime("%Y/%m/%d %H:%M")
        jql = f'updated >= "{since}" AND {scope} ORDER BY updated ASC'
        fields = ["status", "labels", "resolution", "comment", "updated", "assignee"]
        found = await self._site.search(
            "changes", jql, fields, limit=self.page_size, expand="changelog", page=cursor or ""
        )
        what = f"{self.name} changes"
        try:
            page = Reader(found, what)
            issues = page.items("issues", limit=MAX_EVENTS)
            events = [e for issue in issues for e in self._events.issue_changes(issue, since_ms)]
        except PayloadError as exc:
            raise DeskRejected(f"{self.name} changes: unexpected search answer: {exc}", desk=self.name) from exc
        events.sort(key=lambda e: e.at_ms)
        return ChangePage(events=events, cursor=await self._site.next_page("changes", page, len(issues)))

    # -- JSM -----------------------------------------------------------------------------------

    async def _open_request(self, correlation_id: str, request_type: str, fields: Mapping[str, str]) -> TicketRef:
        service_desk = fields.get("serviceDeskId") or self._config.service_desk
        if not service_desk:
            raise DeskRejected(
                f"{self.name} open: requestTypeId needs service_desk in the desk config",
                desk=self.name,
                action="open",
            )
        cloud = await self._site.is_cloud("open")
        values = self._fields({k: v for k, v in fields.items() if k not in _JSM_ONLY}, adf_rich_text=False, cloud=cloud)
        labelled = request_type in self._config.request_labels and self._config.correlation == "label"
        if labelled:
            values["labels"] = [*values.get("labels", []), self._label(correlation_id)]
        body = {
            "serviceDeskId": service_desk,
            "requestTypeId": request_type,
            "requestFieldValues": values,
            "isAdfRequest": False,
        }
        answer = await self._site.send("open", "POST", f"{self._config.url}/rest/servicedeskapi/request", json=body)
        created = self._http.json("open", answer)
        if not isinstance(created, dict) or not isinstance(created.get("issueKey"), str):
            raise self._http.unexpected("open", answer, "answer has no issueKey")
        ref = self._ref(created["issueKey"])
        if not labelled:
            try:
                await self._bind(ref, correlation_id)
            except DeskError as exc:
                raise DeskRejected(
                    f"{self.name} open: created {ref.id} but could not record its correlation id ({exc});"
                    f" label it {self._label(correlation_id)!r} and replay, or delete it",
                    desk=self.name,
                    action="open",
                    request=body,
                ) from exc
        return ref

    async def _bind(self, ref: TicketRef, correlation_id: str) -> None:
        base = f"{self._config.url}/rest/api/2/issue/{ref.id}"
        if self._config.correlation == "property":
            url = f"{base}/properties/{self._config.property_key}"
            await self._site.send("open", "PUT", url, json={"correlation_id": correlation_id})
        else:
            body = {"update": {"labels": [{"add": self._label(correlation_id)}]}}
            await self._site.send("open", "PUT", base, json=body)

    # -- transitions and comments --------------------------------------------------------------

    async def _transition(
        self, action: str, ref: TicketRef, wanted: str, *, done: bool, fields: Mapping[str, str]
    ) -> None:
        url = await self._site.api_url(action, f"issue/{ref.id}/transitions")
        listed = await self._site.json(action, "GET", url, params={"expand": "transitions.fields"})
        transitions = [t for t in (listed or {}).get("transitions") or [] if isinstance(t, dict)]
        chosen = pick(transitions, wanted, done=done, closed=self._config.closed_statuses)
        if chosen is None:
            current = await self.state(ref)
            if (current.phase != TicketPhase.OPEN) == done:
                return  # already there (a retry, or a human was quicker): only the comment is left
            names = ", ".join(repr(t.get("name")) for t in transitions) or "none"
            raise DeskRejected(
                f"{self.name} {action}: no transition {wanted!r} from status {current.raw_state!r}"
                f" (available: {names})",
                desk=self.name,
                action=action,
            )
        body: dict[str, Any] = {"transition": {"id": str(chosen["id"])}}
        screen = chosen.get("fields") or {}
        values: dict[str, Any] = {}
        if "resolution" in screen:
            values["resolution"] = {"name": self._config.resolution}
        cloud = await self._site.is_cloud(action)
        given = self._fields({k: v for k, v in fields.items() if k in screen}, adf_rich_text=False, cloud=cloud)
        values |= given
        lacking = missing(screen, values)
        if lacking:
            raise DeskRejected(
                f"{self.name} {action}: transition {chosen.get('name')!r} requires {', '.join(lacking)}",
                desk=self.name,
                action=action,
            )
        if values:
            body["fields"] = values
        await self._site.send(action, "POST", url, json=body)

    async def _comment(self, action: str, ref: TicketRef, text: str) -> None:
        if not text:
            return
        text = marked(text)
        if self._config.service_desk is not None:
            url = f"{self._config.url}/rest/servicedeskapi/request/{ref.id}/comment"
            await self._site.send(action, "POST", url, json={"body": text, "public": False})
            return
        version = await self._site.version(action)
        body = {"body": adf(text) if version == 3 else text}
        await self._site.send(action, "POST", await self._site.api_url(action, f"issue/{ref.id}/comment"), json=body)

    # -- requests ------------------------------------------------------------------------------

    def _label(self, correlation_id: str) -> str:
        return self._config.label_prefix + correlation_id.replace(" ", "_")

    def _ref(self, key: str) -> TicketRef:
        return TicketRef(id=key, display=key, url=f"{self._config.url}/browse/{key}")

    def _fields(self, fields: Mapping[str, str], *, adf_rich_text: bool, cloud: bool) -> dict[str, Any]:
        config = self._config
        values = jira_fields(
            fields, adf_rich_text=adf_rich_text, rich_text=config.rich_text_fields, cloud=cloud,
            json_fields=config.json_fields,
        )  # fmt: skip
        if "labels" in values:
            # Rendered labels may carry alert text: none of them may pass for a correlation label, which
            # would make `find` adopt this issue for another incident. Only `_label` writes those.
            shaped = self._forged
            values["labels"] = [label for label in labels(" ".join(values["labels"])) if not shaped(label)]
        return values

    def _forged(self, label: str) -> bool:
        """Whether a label has the shape of a correlation label (prefix + `<route>:<key hash>:<epoch>`)."""
        prefix = self._config.label_prefix
        return label.startswith(prefix) and CORRELATION.fullmatch(label[len(prefix) :]) is not None


def _when(value: Any) -> int | None:
    """Epoch ms of a Jira date-time field's value, or None."""
    if not isinstance(value, str) or not value:
        return None
    for form in TIMES:
        try:
            return int(datetime.strptime(value, form).timestamp() * 1000)
        except ValueError:
            continue
    return None


def _zone(name: Any) -> tzinfo:
    """A Jira profile's `timeZone` (an IANA name); UTC when it has none this machine knows."""
    try:
        return ZoneInfo(str(name)) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
