"""The generic webhook desk: one templated HTTP request per action, for in-house ticketing systems.

Each action (`open`, `note`, `update`, `resolve`, `reopen`, `find`, `state`) is a request made
from templates (Jinja2, sandboxed, as in the mappings): `path` (joined to `url`), `params` and a
JSON `body` whose string leaves are templates and whose other leaves are sent as they are. What
`path` puts in from values is escaped as one path segment each, and a `.` or `..` segment is
refused (DeskRejected), so that alert text cannot turn the call into another one; `params` are
query-encoded. A
template sees `correlation_id`, `fields` (the route's rendered ticket fields), `note` (resolve,
reopen and note text), `ticket` (`id`, `display`, `url`) and `action`.

What comes back is read with expressions: JMESPath (`ticket.id`, `tickets[0].number`), or a
simple JSONPath (`$.ticket.id`, `$['tickets'][0].id`), which is translated to JMESPath. `open`
needs `id` (and may have `display`); `find` needs `id` (no value there means no ticket); `state`
needs `state`, whose value is compared with `resolved_states` and `closed_states`. Without a
`find` action the desk cannot adopt a ticket whose open answer was lost (duplicates are then
possible); without `update` an update is skipped; without `state`, `state()` is DeskRejected.

The loop back (bridge.core.sync) has its own documented format, since there is no vendor's. A push
(`POST /desk-events/{desk}`) is one change or `{"events": [...]}`, each change an object:

    id          unique per change (string or number), required: the event id
    ticket      the ticket id the desk's actions use, required
    display     what a human calls it (optional)
    at          when: RFC 3339 (2026-12-04T10:00:00Z) or epoch milliseconds, required
    author      who made it (the integration user's changes are the bridge's own)
    status      the ticket's status after the change
    previous_status   its status before (optional: tells a reopening)
    kind        resolved, cancelled, reopened, assigned, commented or updated (optional: else derived)
    comment     a comment's text (a change with a comment and no status is `commented`)
    assignee    who it is assigned to now (optional)
    correlation_id    the bridge's correlation id on the ticket (optional)

Without `kind`: a status in `cancelled_states` is CANCELLED, in `resolved_states` or
`closed_states` RESOLVED, back to any other status from one of those (`previous_status`) REOPENED,
in `assigned_states` or with an assignee ASSIGNED, a comment COMMENTED, else UPDATED. The poll is an
optional `changes` action: its `params` and `path` see `since` (epoch ms), `since_iso` and `cursor`
(empty at first); `events` reads the list of changes (the same objects) from the answer, `cursor`
the next page's token (nothing: the last page). Without it the desk is push-only. Notes and the
reopen text reach the templates with `MARKER` at the end (the resolve text, often a resolution
field rather than a comment, does not).

Auth is Bearer (`token`) or Basic (`user`, `password`), plus fixed `headers`. Errors follow the
common rule: 429 and 5xx transient (Retry-After honoured), 401 auth expired, other 4xx rejected;
the reason is read from `error.message`, `message`, `error` or `detail` when the answer has one.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Literal, Self

import aiohttp
import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from adapters.desks.events import MAX_EVENTS, Identity, KnowsItself, Reader, decode, marked, utc
from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, json_reason, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected, PayloadError
from bridge.core.sync import ChangePage, DeskEvent, DeskEventKind
from bridge.core.templates import compile_path_template, compile_template, render, render_path

_JSONPATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\*)\]|\[['\"]([^'\"]+)['\"]\]")


def to_jmespath(expression: str) -> str:
    """JMESPath as it is, or a simple JSONPath (`$.a.b[0]`, `$['a b']`) translated to JMESPath."""
    if not expression.startswith("$"):
        return expression
    parts: list[str] = []
    at = 1
    while at < len(expression):
        match = _JSONPATH_PART.match(expression, at)
        if not match:
            raise ValueError(f"unsupported JSONPath {expression!r}: use $.name, $['name'], [n] or a JMESPath")
        name, index, quoted = match.groups()
        if index is not None:
            parts.append(f"[{index}]")
        else:
            key = name or quoted
            parts.append(("." if parts else "") + '"' + key.replace('"', '\\"') + '"')
        at = match.end()
    return "".join(parts).lstrip(".") or "@"


def _compiled(expression: str | None) -> str | None:
    if expression is None:
        return None
    translated = to_jmespath(expression)
    try:
        jmespath.compile(translated)
    except JMESPathError as exc:
        raise ValueError(f"expression {expression!r} does not compile: {exc}") from exc
    return translated


def _templates(value: Any) -> Any:
    """Compile every string leaf once, so that a broken template fails at start-up."""
    if isinstance(value, str):
        compile_template(value)
    elif isinstance(value, dict):
        for item in value.values():
            _templates(item)
    elif isinstance(value, list):
        for item in value:
            _templates(item)
    return value


class WebhookAction(BaseModel):
    """One request: method, path, query and body templates, and what to read from the answer."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str
    params: dict[str, str] = {}
    body: Any = None
    id: str | None = None  # expression: the ticket id (open, find)
    display: str | None = None  # expression: what a human calls the ticket (open, find)
    state: str | None = None  # expression: the ticket's state (state)
    fields: str | None = None  # expression: the object holding the ticket's fields (state; default: all)
    events: str | None = None  # expression: the list of changes (changes)
    cursor: str | None = None  # expression: the next page's token (changes; nothing on the last page)

    @field_validator("params", "body")
    @classmethod
    def _compiles(cls, value: Any) -> Any:
        return _templates(value)

    @field_validator("path")
    @classmethod
    def _path_compiles(cls, value: str) -> str:
        compile_path_template(value)
        return value

    @field_validator("id", "display", "state", "fields", "events", "cursor")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return _compiled(value)


class WebhookConfig(DeskAddress):
    """An in-house ticketing API described action by action."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook"]
    url: str  # base URL; each action's path is appended
    token: SecretStr | None = None  # Bearer
    user: str | None = None  # Basic
    password: SecretStr | None = None
    headers: dict[str, str] = {}
    open: WebhookAction
    note: WebhookAction
    resolve: WebhookAction
    reopen: WebhookAction
    update: WebhookAction | None = None
    find: WebhookAction | None = None
    state: WebhookAction | None = None
    changes: WebhookAction | None = None  # the loop back's poll (see the module text); none: push-only
    ticket_url: str | None = None  # template, e.g. https://tickets.example.com/t/{{ ticket.id }}
    resolved_states: list[str] = ["resolved"]
    closed_states: list[str] = ["closed", "cancelled"]
    cancelled_states: list[str] = ["cancelled", "canceled"]  # the loop back: a person cancelled it
    assigned_states: list[str] = ["in_progress", "assigned"]  # the loop back: a person took it
    timeout: Seconds = 10.0
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return https_url(value, "https://tickets.example.com/api")

    @field_validator("ticket_url")
    @classmethod
    def _url_template(cls, value: str | None) -> str | None:
        return _templates(value) if value is not None else None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if (self.password is None) != (self.user is None):
            raise ValueError("Basic auth needs both user and password")
        if self.token is not None and self.user is not None:
            raise ValueError("give either token (Bearer) or user and password (Basic), not both")
        for name in ("open", "find"):
            action = getattr(self, name)
            if action is not None and action.id is None:
                raise ValueError(f"{name} needs `id`: the expression that reads the ticket id from the answer")
        if self.state is not None and self.state.state is None:
            raise ValueError("state needs `state`: the expression that reads the ticket's state")
        if self.changes is not None and self.changes.events is None:
            raise ValueError("changes needs `events`: the expression that reads the list of changes")
        return self

    def build(self, name: str, session: aiohttp.ClientSession) -> WebhookDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return WebhookDesk(name, self, transport)


class WebhookDesk(KnowsItself):
    def __init__(self, name: str, config: WebhookConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        headers = {"Accept": "application/json", **config.headers}
        if config.token is not None:
            headers["Authorization"] = "Bearer " + config.token.get_secret_value()
        elif config.user is not None and config.password is not None:
            pair = f"{config.user}:{config.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._headers = headers  # never logged or kept with an error
        self._identity = Identity(config.user)

    # -- the loop back (bridge.core.sync) ------------------------------------------------------

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]:
        """One change, or `{"events": [...]}`, in the format of the module text."""
        what = f"{self.name} desk event"
        data = Reader(decode(body, what), what)
        changes = data.items("events") if data.has("events") else [data]
        return [self._event(change) for change in changes]

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage:
        action = self._config.changes
        if action is None or action.events is None:
            raise DeskRejected(
                f"{self.name} changes: no `changes` action: this desk is push-only", desk=self.name, action="changes"
            )
        context = {"since": since_ms, "since_iso": utc(since_ms, "%Y-%m-%dT%H:%M:%S.") + f"{since_ms % 1000:03d}Z"}
        _, answer = await self._call("changes", action, context | {"cursor": cursor or ""})
        found = jmespath.search(action.events, answer)
        nxt = jmespath.search(action.cursor, answer) if action.cursor else None
        try:
            if not isinstance(found, list):
                raise PayloadError(f"{action.events!r} does not read a list")
            if len(found) > MAX_EVENTS:
                raise PayloadError(f"{len(found)} changes in one page, more than {MAX_EVENTS}")
            what = f"{self.name} changes"
            events = [self._event(Reader(item, what, f"events[{n}]")) for n, item in enumerate(found)]
        except PayloadError as exc:
            raise DeskRejected(f"{self.name} changes: unexpected answer: {exc}", desk=self.name) from exc
        events.sort(key=lambda e: e.at_ms)
        next_cursor = str(nxt) if nxt not in (None, "", False) and not isinstance(nxt, dict | list) else None
        return ChangePage(events=events, cursor=next_cursor)

    def _event(self, change: Reader) -> DeskEvent:
        config = self._config
        ticket_id = change.text("ticket", required=True, limit=200)
        display = change.text("display", limit=200) or ticket_id
        status, previous = change.text("status", limit=100), change.text("previous_status", limit=100)
        comment, author = change.text("comment"), change.text("author", limit=200)
        named = change.text("kind", limit=20).lower()
        if named:
            try:
                kind = DeskEventKind(named)
            except ValueError:
                kinds = ", ".join(k.value for k in DeskEventKind)
                raise PayloadError(f"{change.what}: {change.path or 'the change'}.kind is not one of {kinds}") from None
        else:
            kind = self._kind(status, previous, comment, bool(change.text("assignee", limit=200)))
        at_ms = change.time_ms("at", ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"), required=True) or 0
        url = render(config.ticket_url, {"ticket": {"id": ticket_id, "display": display}}) if config.ticket_url else ""
        return DeskEvent(
            desk=self.name,
            ticket=TicketRef(id=ticket_id, display=display, url=url),
            kind=kind,
            at_ms=at_ms,
            event_id=change.text("id", required=True, limit=200),
            author=author,
            text=comment or status,
            correlation_id=change.text("correlation_id", limit=500),
            ours=self._identity.ours([author], comment),
        )

    def _kind(self, status: str, previous: str, comment: str, assigned: bool) -> DeskEventKind:
        config = self._config
        done = {*config.resolved_states, *config.closed_states}
        if status and status != previous:
            if status in config.cancelled_states:
                return DeskEventKind.CANCELLED
            if status in done:
                return DeskEventKind.RESOLVED
            if previous in done:
                return DeskEventKind.REOPENED
            if status in config.assigned_states:
                return DeskEventKind.ASSIGNED
        if comment:
            return DeskEventKind.COMMENTED
        return DeskEventKind.ASSIGNED if assigned else DeskEventKind.UPDATED

    async def find(self, correlation_id: str) -> TicketRef | None:
        if self._config.find is None:
            return None
        _, found = await self._call("find", self._config.find, {"correlation_id": correlation_id})
        return self._ticket(self._config.find, found)

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        context = {"correlation_id": correlation_id, "fields": dict(fields)}
        answer, created = await self._call("open", self._config.open, context)
        ref = self._ticket(self._config.open, created)
        if ref is None:
            # Rejected, not transient: with an expression that reads nothing, every retry would open
            # one more ticket. The dead letter names the answer; a replay finds the ticket first.
            raise DeskRejected(f"{self.name} open: the answer has no ticket id", **self._http.context("open", answer))
        return ref

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._call("note", self._config.note, {"ticket": _ticket(ref), "note": marked(text)})

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        if self._config.update is not None and fields:
            await self._call("update", self._config.update, {"ticket": _ticket(ref), "fields": dict(fields)})

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        context = {"ticket": _ticket(ref), "note": note, "fields": dict(fields)}
        await self._call("resolve", self._config.resolve, context)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._call("reopen", self._config.reopen, {"ticket": _ticket(ref), "note": marked(note)})

    async def state(self, ref: TicketRef) -> TicketState:
        action = self._config.state
        if action is None or action.state is None:
            raise DeskRejected(f"{self.name} state: no state action configured", desk=self.name, action="state")
        _, answer = await self._call("state", action, {"ticket": _ticket(ref)})
        raw = jmespath.search(action.state, answer)
        text = "" if raw is None else str(raw)
        phase = TicketPhase.OPEN
        if text in self._config.closed_states:
            phase = TicketPhase.CLOSED
        elif text in self._config.resolved_states:
            phase = TicketPhase.RESOLVED
        shown = jmespath.search(action.fields, answer) if action.fields else answer
        flat = (
            {k: str(v) for k, v in shown.items() if isinstance(v, str | int | float)} if isinstance(shown, dict) else {}
        )
        return TicketState(phase=phase, raw_state=text, fields=flat)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    # -- requests ------------------------------------------------------------------------------

    def _ticket(self, action: WebhookAction, answer: Any) -> TicketRef | None:
        assert action.id is not None  # checked by the config
        found = jmespath.search(action.id, answer)
        if found is None or found == "" or isinstance(found, dict | list):
            return None
        ticket_id = str(found)
        display = jmespath.search(action.display, answer) if action.display else None
        ref = {"id": ticket_id, "display": str(display) if display is not None else ticket_id, "url": ""}
        url = render(self._config.ticket_url, {"ticket": ref}) if self._config.ticket_url else ""
        return TicketRef(id=ticket_id, display=ref["display"], url=url)

    async def _call(self, name: str, action: WebhookAction, context: dict[str, Any]) -> tuple[Answer, Any]:
        context = {"correlation_id": "", "fields": {}, "note": "", "ticket": {}, "action": name} | context
        try:
            path = render_path(action.path, context)  # values escaped per segment; `..` refused
            params = {k: render(v, context) for k, v in action.params.items()}
            body = _rendered(action.body, context) if action.body is not None else None
        except ValueError as exc:
            raise DeskRejected(f"{self.name} {name}: {exc}", desk=self.name, action=name) from exc
        url = self._config.url + ("" if path.startswith("/") else "/") + path
        answer = await self._http.send(name, action.method, url, headers=self._headers, params=params, json=body)
        if not answer.ok:
            reason = json_reason(answer.text, ("error", "message"), ("message",), ("error",), ("detail",))
            raise self._http.error(name, answer, reason)
        return answer, self._http.json(name, answer)


def _ticket(ref: TicketRef) -> dict[str, str]:
    return {"id": ref.id, "display": ref.display, "url": ref.url}


def _rendered(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {str(k): _rendered(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_rendered(v, context) for v in value]
    return value
