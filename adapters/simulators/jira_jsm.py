"""Jira Service Management on the simulated site: `/rest/servicedeskapi` requests and comments.

Wire format: the Jira Service Management REST API, "Request" group
(https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/).

Service desk "10" (project HELP) has two request types: "25" Report a system problem (summary,
description, priority) and "26" Report an incident (the same plus labels). A request is an issue of
the request type's issue type in HELP, so the platform API works on it too. Errors use JSM's own
shape, `{"errorMessage", "i18nErrorMessage": {"i18nKey", "parameters"}}`. Comments need `public`;
`public: false` is an internal comment that customers do not see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.simulators.jira_store import JiraError, now_jira
from adapters.simulators.jira_views import STORE, dumps, read_json, status_json


@dataclass(frozen=True, slots=True)
class RequestType:
    id: str
    name: str
    issue_type: str
    fields: tuple[str, ...]


SERVICE_DESKS = {"10": "HELP"}
REQUEST_TYPES = {
    "25": RequestType("25", "Report a system problem", "[System] Incident", ("summary", "description", "priority")),
    "26": RequestType(
        "26", "Report an incident", "[System] Incident", ("summary", "description", "priority", "labels")
    ),
}


class JsmError(Exception):
    def __init__(self, status: int, message: str, key: str) -> None:
        self.status, self.message, self.key = status, message, key
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"errorMessage": self.message, "i18nErrorMessage": {"i18nKey": self.key, "parameters": []}}


def add_jsm_routes(app: web.Application) -> None:
    app.router.add_post("/rest/servicedeskapi/request", _create_request)
    app.router.add_get("/rest/servicedeskapi/request/{key}", _read_request)
    app.router.add_post("/rest/servicedeskapi/request/{key}/comment", _add_comment)
    app.router.add_get("/rest/servicedeskapi/request/{key}/comment", _comments)


async def _create_request(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await read_json(request)
    desk = body.get("serviceDeskId")
    if not isinstance(desk, str) or desk not in SERVICE_DESKS:
        raise JsmError(404, f"The service desk with id '{desk}' does not exist.", "sd.service.desk.not.found")
    request_type = REQUEST_TYPES.get(str(body.get("requestTypeId")))
    if request_type is None or not isinstance(body.get("requestTypeId"), str):
        raise JsmError(
            400,
            "The request type you are trying to use does not exist or is not enabled for this service desk.",
            "sd.request.type.not.found",
        )
    values = body.get("requestFieldValues")
    if not isinstance(values, dict):
        raise JsmError(400, "requestFieldValues is required.", "sd.request.field.values.required")
    unknown = sorted(set(values) - set(request_type.fields))
    if unknown:
        raise JsmError(
            400,
            f"The following fields are not valid for this request type: {', '.join(unknown)}",
            "sd.request.create.error.field.not.valid",
        )
    fields = {"project": {"key": SERVICE_DESKS[desk]}, "issuetype": {"name": request_type.issue_type}} | values
    try:
        issue = store.create({"fields": fields}, version=2, clock=time.monotonic(), agent=False)
    except JiraError as exc:
        detail = "; ".join([*exc.messages, *(f"{k}: {v}" for k, v in exc.errors.items())])
        raise JsmError(400, detail, "sd.request.create.error") from None
    origin = request.url.origin()
    answer = {
        "_expands": ["participant", "status", "sla", "requestType", "serviceDesk", "attachment", "action", "comment"],
        "issueId": issue.id,
        "issueKey": issue.key,
        "summary": issue.fields.get("summary", ""),
        "requestTypeId": request_type.id,
        "serviceDeskId": desk,
        "createdDate": {"iso8601": issue.created, "jira": issue.created},
        "requestFieldValues": [{"fieldId": k, "label": k.capitalize(), "value": v} for k, v in values.items()],
        "currentStatus": {"status": issue.status, "statusCategory": "NEW"},
        "_links": {
            "jiraRest": f"{origin}/rest/api/2/issue/{issue.id}",
            "web": f"{origin}/servicedesk/customer/portal/{desk}/{issue.key}",
            "self": f"{origin}/rest/servicedeskapi/request/{issue.id}",
        },
    }
    return web.json_response(answer, status=201, dumps=dumps)


def _service_issue(request: web.Request) -> Any:
    try:
        issue = request.app[STORE].get(request.match_info["key"])
    except JiraError:
        raise JsmError(
            404, "Request does not exist or you do not have permission to see it.", "sd.request.not.found"
        ) from None
    if issue.project.key not in SERVICE_DESKS.values():
        raise JsmError(404, "This issue is not a customer request.", "sd.request.not.found")
    return issue


async def _read_request(request: web.Request) -> web.Response:
    issue = _service_issue(request)
    status = status_json(issue.status)
    answer = {"issueId": issue.id, "issueKey": issue.key, "currentStatus": {"status": status["name"]}}
    return web.json_response(answer, dumps=dumps)


async def _add_comment(request: web.Request) -> web.Response:
    issue = _service_issue(request)
    store = request.app[STORE]
    if issue.project.key in store.read_only:
        raise JsmError(403, "You do not have permission to comment on this request.", "sd.comment.permission")
    body = await read_json(request)
    if not isinstance(body.get("public"), bool):
        raise JsmError(400, "The 'public' field is required.", "sd.comment.public.required")
    if not isinstance(body.get("body"), str) or not body["body"].strip():
        raise JsmError(400, "The comment body must not be empty.", "sd.comment.body.required")
    entry = store.comment(issue, body["body"], public=body["public"])
    answer = {"id": entry["id"], "body": entry["body"], "public": entry["jsdPublic"], "created": {"jira": now_jira()}}
    return web.json_response(answer, status=201, dumps=dumps)


async def _comments(request: web.Request) -> web.Response:
    issue = _service_issue(request)
    values = [{"id": c["id"], "body": c["body"], "public": c["jsdPublic"]} for c in issue.comments]
    return web.json_response({"size": len(values), "start": 0, "limit": 50, "isLastPage": True, "values": values})
