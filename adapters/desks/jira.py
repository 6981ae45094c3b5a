"""The Jira desk: issues in Jira Cloud or Data Center, and Jira Service Management requests.

Wire format: the Jira Cloud platform REST API
(https://developer.atlassian.com/cloud/jira/platform/rest/v3/ and .../rest/v2/), the Jira Data
Center REST API (https://docs.atlassian.com/software/jira/docs/api/REST/latest/) and the Jira
Service Management REST API (https://developer.atlassian.com/cloud/jira/service-desk/rest/). Cloud
speaks `/rest/api/3` (rich text as ADF) and `/rest/api/2`; Data Center only `/rest/api/2` (rich text
as wiki-markup strings). `api_type: auto` asks `/rest/api/2/serverInfo` once which one it is. Auth
is Basic `email:api_token` (Cloud) or Bearer with a personal access token (Data Center).

- open: `POST /issue` with the route's fields (adapters.desks.jira_fields) plus the correlation
  label, or, with `correlation: property`, an issue property written in the same call. When the
  route (field `requestTypeId`) or the desk (`request_type`) names a JSM request type, open is
  `POST /rest/servicedeskapi/request` instead; the correlation label is then added by a second
  call, unless the request type is listed in `request_labels` (its form shows Labels), which puts
  it in the request itself.
  If that second call fails, open is DeskRejected naming the new request: label it (or delete it)
  and replay the dead letter, whose open finds and adopts it.
- find: JQL `labels = "<id>"` (or `issue.property[key].correlation_id = "<id>"`, which needs a site
  that indexes the property), newest first, through `/search/jql` on Cloud and `/search` on DC.
  Search may trail a create (`search_lag`): `find_lag` tells the delivery how long to keep
  searching before it opens again an issue whose create's answer was lost.
- note: a comment; on a desk with `service_desk`, an internal JSM comment (`public: false`).
- update: edit; labels are added (never replaced, so the correlation label stays).
- resolve / reopen: the transition named in the config, else the first one into (out of) the
  "done" status category but not into a closed status, with the fields its screen requires
  (resolution), then the note as a comment. An issue already in the wanted category just gets the
  comment, so a retry is harmless.
- state: the status category; statuses in `closed_statuses` count as CLOSED.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from typing import Any, Literal, Self

import aiohttp
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.desks.jira_fields import RICH_TEXT, adf, field_text, jira_fields, jql_string, labels
from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, json_reason, tls_context
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskError, DeskRejected

_JSM_ONLY = frozenset({"requestTypeId", "serviceDeskId"})
# A correlation id as a label: `<route id>:<key hash>:<epoch>` (spaces as `_`; bridge.core.keys).
_CORRELATION = re.compile(r"[A-Za-z0-9_.-]+:[0-9a-f]{6,}:[0-9a-z]+")


class JiraConfig(DeskAddress):
    """One Jira site (Cloud or Data Center), optionally with a JSM service desk."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jira"]
    url: str  # https://your-domain.atlassian.net or https://jira.example.com
    api_type: Literal["auto", "cloud", "datacenter"] = "auto"
    api_version: Literal[2, 3] | None = None  # default: 3 on Cloud, 2 on Data Center (its only one)
    email: str | None = None  # Cloud: Basic email:api_token
    api_token: SecretStr | None = None
    token: SecretStr | None = None  # Data Center: personal access token, sent as Bearer
    project: str  # project key, e.g. OPS
    issue_type: str = "Incident"
    correlation: Literal["label", "property"] = "label"
    label_prefix: str = ""  # the correlation label is label_prefix + correlation id
    property_key: str = "alert-bridge"
    resolve_transition: str = "Resolve Issue"
    reopen_transition: str = "Reopen Issue"
    resolution: str = "Done"
    closed_statuses: list[str] = ["Closed", "Canceled", "Cancelled", "Won't Do"]
    rich_text_fields: list[str] = list(RICH_TEXT)
    # Fields whose rendered text is JSON (option fields: `{"value": "Sev 1"}`); every other one is text.
    json_fields: list[str] = []
    service_desk: str | None = None  # JSM service desk id: notes become internal JSM comments
    request_type: str | None = None  # JSM request type id for every open (a route may set requestTypeId)
    request_labels: list[str] = []  # JSM request types whose form shows Labels: label set in the request
    timeout: Seconds = 10.0
    # How long after a create Jira's search may still not show the issue (Cloud search is eventually
    # consistent): an open whose answer was lost is made again only once search, asked `timeout` +
    # `search_lag` after that open was sent, still does not find it (docs/desks.md, "Lost opens").
    search_lag: float = Field(15.0, ge=0)  # 0: search shows a create at once (a Data Center site may)
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        return https_url(value, "https://your-domain.atlassian.net")

    @field_validator("label_prefix")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError("Jira labels cannot contain spaces")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        basic = self.email is not None or self.api_token is not None
        if basic == (self.token is not None):
            raise ValueError("give either email and api_token (Basic) or token (Bearer PAT)")
        if basic and (self.email is None or self.api_token is None):
            raise ValueError("Basic auth needs both email and api_token")
        if self.api_type == "datacenter" and self.api_version == 3:
            raise ValueError("Jira Data Center has no REST API v3: use api_version 2")
        if self.request_type is not None and self.service_desk is None:
            raise ValueError("request_type needs service_desk")
        return self

    def build(self, name: str, session: aiohttp.ClientSession) -> JiraDesk:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return JiraDesk(name, self, transport)


class JiraDesk:
    """Issues found again by their correlation label (or property); see the module text."""

    def __init__(self, name: str, config: JiraConfig, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        if config.token is not None:
            auth = "Bearer " + config.token.get_secret_value()
        else:
            secret = config.api_token.get_secret_value() if config.api_token else ""
            auth = "Basic " + base64.b64encode(f"{config.email}:{secret}".encode()).decode("ascii")
        self._headers = {"Accept": "application/json", "Authorization": auth}  # never logged
        self._cloud: bool | None = {"cloud": True, "datacenter": False}.get(config.api_type)
        self._lock = asyncio.Lock()
        # How long `find` may miss an issue after its create was sent: the answer may come that late
        # (`timeout`), and search may take `search_lag` more to show the issue.
        self.find_lag = config.timeout + config.search_lag

    # -- the Desk protocol ---------------------------------------------------------------------

    async def find(self, correlation_id: str) -> TicketRef | None:
        cloud = await self._is_cloud("find")
        if self._config.correlation == "property":
            clause = f"issue.property[{self._config.property_key}].correlation_id = {jql_string(correlation_id)}"
        else:
            clause = f"labels = {jql_string(self._label(correlation_id))}"
        jql = f"{clause} ORDER BY created DESC"
        if cloud:
            body = {"jql": jql, "fields": ["status"], "maxResults": 1}
            found = await self._json("find", "POST", await self._api("find", "search/jql"), json=body)
        else:
            params = {"jql": jql, "fields": "status", "maxResults": "1"}
            found = await self._json("find", "GET", await self._api("find", "search"), params=params)
        issues = found.get("issues") if isinstance(found, dict) else None
        if not isinstance(issues, list):
            raise DeskRejected(f"{self.name} find: search answer has no issues", desk=self.name, action="find")
        return self._ref(issues[0]["key"]) if issues and isinstance(issues[0], dict) else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        request_type = fields.get("requestTypeId") or self._config.request_type
        if request_type:
            return await self._open_request(correlation_id, request_type, fields)
        cloud = await self._is_cloud("open")
        version = await self._version("open")
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
        answer = await self._send("open", "POST", await self._api("open", "issue"), json=body)
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
        cloud = await self._is_cloud("update")
        version = await self._version("update")
        values = self._fields(editable, adf_rich_text=version == 3, cloud=cloud)
        body: dict[str, Any] = {"fields": values}
        added = values.pop("labels", None)
        if added:
            body["update"] = {"labels": [{"add": label} for label in added]}
        await self._send("update", "PUT", await self._api("update", f"issue/{ref.id}"), json=body)

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        await self._transition("resolve", ref, self._config.resolve_transition, done=True, fields=fields)
        await self._comment("resolve", ref, note)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._transition("reopen", ref, self._config.reopen_transition, done=False, fields={})
        await self._comment("reopen", ref, note)

    async def state(self, ref: TicketRef) -> TicketState:
        """The status category decides the phase; fields come back as the strings a route writes."""
        url = await self._api("state", f"issue/{ref.id}")
        issue = await self._json("state", "GET", url, params={"fields": "*navigable"})
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

    # -- JSM -----------------------------------------------------------------------------------

    async def _open_request(self, correlation_id: str, request_type: str, fields: Mapping[str, str]) -> TicketRef:
        service_desk = fields.get("serviceDeskId") or self._config.service_desk
        if not service_desk:
            raise DeskRejected(
                f"{self.name} open: requestTypeId needs service_desk in the desk config",
                desk=self.name,
                action="open",
            )
        cloud = await self._is_cloud("open")
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
        answer = await self._send("open", "POST", f"{self._config.url}/rest/servicedeskapi/request", json=body)
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
            await self._send("open", "PUT", url, json={"correlation_id": correlation_id})
        else:
            body = {"update": {"labels": [{"add": self._label(correlation_id)}]}}
            await self._send("open", "PUT", base, json=body)

    # -- transitions and comments --------------------------------------------------------------

    async def _transition(
        self, action: str, ref: TicketRef, wanted: str, *, done: bool, fields: Mapping[str, str]
    ) -> None:
        url = await self._api(action, f"issue/{ref.id}/transitions")
        listed = await self._json(action, "GET", url, params={"expand": "transitions.fields"})
        transitions = [t for t in (listed or {}).get("transitions") or [] if isinstance(t, dict)]
        chosen = _pick(transitions, wanted, done=done, closed=self._config.closed_statuses)
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
        cloud = await self._is_cloud(action)
        given = self._fields({k: v for k, v in fields.items() if k in screen}, adf_rich_text=False, cloud=cloud)
        values |= given
        missing = [
            str(meta.get("name", key))
            for key, meta in screen.items()
            if isinstance(meta, dict) and meta.get("required") and key not in values
        ]
        if missing:
            raise DeskRejected(
                f"{self.name} {action}: transition {chosen.get('name')!r} requires {', '.join(missing)}",
                desk=self.name,
                action=action,
            )
        if values:
            body["fields"] = values
        await self._send(action, "POST", url, json=body)

    async def _comment(self, action: str, ref: TicketRef, text: str) -> None:
        if not text:
            return
        if self._config.service_desk is not None:
            url = f"{self._config.url}/rest/servicedeskapi/request/{ref.id}/comment"
            await self._send(action, "POST", url, json={"body": text, "public": False})
            return
        version = await self._version(action)
        body = {"body": adf(text) if version == 3 else text}
        await self._send(action, "POST", await self._api(action, f"issue/{ref.id}/comment"), json=body)

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
        return label.startswith(prefix) and _CORRELATION.fullmatch(label[len(prefix) :]) is not None

    async def _is_cloud(self, action: str) -> bool:
        """Cloud or Data Center: from the config, else from serverInfo's deploymentType, asked once."""
        async with self._lock:
            if self._cloud is None:
                info = await self._json(action, "GET", f"{self._config.url}/rest/api/2/serverInfo")
                kind = str(info.get("deploymentType", "")) if isinstance(info, dict) else ""
                if not kind:
                    raise DeskRejected(f"{self.name}: serverInfo has no deploymentType", desk=self.name)
                self._cloud = kind.lower() == "cloud"
            return self._cloud

    async def _version(self, action: str) -> int:
        cloud = await self._is_cloud(action)
        version = self._config.api_version or (3 if cloud else 2)
        if version == 3 and not cloud:
            raise DeskRejected(f"{self.name}: Jira Data Center has no REST API v3", desk=self.name, action=action)
        return version

    async def _api(self, action: str, path: str) -> str:
        return f"{self._config.url}/rest/api/{await self._version(action)}/{path}"

    async def _json(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Any:
        answer = await self._send(action, method, url, params=params, json=json)
        return self._http.json(action, answer)

    async def _send(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Answer:
        answer = await self._http.send(action, method, url, headers=self._headers, params=params, json=json)
        if not answer.ok:
            raise self._http.error(action, answer, _reason(answer.text))
        return answer


def _pick(transitions: list[dict[str, Any]], wanted: str, *, done: bool, closed: list[str]) -> dict[str, Any] | None:
    """The transition called `wanted`; else the first into (done) or out of (not done) the done category.

    The fallback never picks a transition into one of the `closed` statuses: closing is a human's
    call, or the configured transition's.
    """
    for transition in transitions:
        if str(transition.get("name", "")).casefold() == wanted.casefold():
            return transition
    for transition in transitions:
        to = transition.get("to") or {}
        category = str((to.get("statusCategory") or {}).get("key", ""))
        if (category == "done") == done and str(to.get("name", "")) not in closed:
            return transition
    return None


def _reason(text: str) -> str:
    """The messages of Jira's ErrorCollection, or of JSM's ErrorResponse."""
    messages = json_reason(text, ("errorMessages",))
    errors = json_reason(text, ("errors",))
    jsm = json_reason(text, ("errorMessage",))
    return "; ".join(part for part in (messages, errors, jsm) if part)
