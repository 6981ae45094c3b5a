"""A faithful local Jira site, Cloud or Data Center, with Jira Service Management.

Follows Atlassian's REST API references
(https://developer.atlassian.com/cloud/jira/platform/rest/v3/,
https://docs.atlassian.com/software/jira/docs/api/REST/latest/ for Data Center): Basic
`email:api_token` (Cloud; also `user:password` on Data Center) and Bearer personal access tokens
(Data Center only); `/rest/api/2` (rich text as strings) and, on Cloud only, `/rest/api/3` (rich
text as ADF, strings refused); create 201 `{id, key, self}`, edit 204, comments, workflow
transitions with screens (adapters.simulators.jira_workflow), issue properties; `/search/jql`
(Cloud: `nextPageToken`/`isLast`, fields default to the id) and the legacy `/search` (Data Center;
410 Gone on Cloud); JQL per adapters.simulators.jira_jql, with issue properties searchable only
when listed in `indexed_properties` (an app must index them on a real site); JSM requests and
comments (adapters.simulators.jira_jsm); ErrorCollection errors; and the shared fault switches, with
Jira's 429 (Retry-After, X-RateLimit-*, an HTML body).

Knobs: `search_lag_s` hides new issues from `/search/jql` for that long (Cloud search is eventually
consistent); `app[STORE].read_only` holds project keys the user may not write (403).

Test and CLI hooks: `GET /_sim/issues` (every issue with comments and properties), `GET
/_sim/requests` (the request log), `/_sim/faults`, `/_sim/reset`; `POST /_sim/human/{key}`
`{"user", "to"?, "resolution"?, "assignee"?, "comment"?}` (a person's change: `JiraStore.act_as_human`);
`POST /_sim/push` `{"url", "headers"?, "secret"?}`: every later change is sent there as Jira's
webhook (`jira:issue_updated` with the changelog, and `comment_created`; a comment also makes a
`jira:issue_updated` of type `issue_commented`, as Jira sends both), signed in `X-Hub-Signature`
(`sha256=<HMAC>`) when a secret is given; the integration user's own changes are pushed too.
In-process: `app[STORE]`, `app[PUSH]` (adapters.simulators.pusher).
As a process: `bridge simulate jira --port P` (Cloud) or `bridge simulate jira-datacenter`.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.jira_jsm import JsmError, add_jsm_routes
from adapters.simulators.jira_links import link
from adapters.simulators.jira_search import add_search_routes
from adapters.simulators.jira_store import Issue, JiraError, JiraStore, comment_problem, field_items, rich
from adapters.simulators.jira_views import SETTINGS, STORE, api_version, dumps, issue_body, issue_json, read_json
from adapters.simulators.jira_workflow import do_transition, get_transitions
from adapters.simulators.pusher import Pusher
from adapters.simulators.requestlog import recorder

_UNAUTHENTICATED = JiraError(401, "Client must be authenticated to access this resource.")
PUSH = web.AppKey("jira_push", Pusher)


def make_app(
    *,
    mode: str = "cloud",
    email: str = "bridge@example.com",
    api_token: str = "api-token",
    pat: str = "pat-token",
    indexed_properties: Sequence[str] = (),
    search_lag_s: float = 0.0,
    faults: Faults | None = None,
) -> web.Application:
    """One simulated site; `mode` is "cloud" or "datacenter"."""
    if mode not in ("cloud", "datacenter"):
        raise ValueError("mode is cloud or datacenter")
    store = JiraStore(cloud=mode == "cloud", email=email if mode == "cloud" else "")
    app = web.Application(middlewares=[recorder(lambda r: r.path.startswith("/rest/"), _requests_of), _vendor_errors])
    app[STORE] = store
    push = Pusher(sign="X-Hub-Signature")
    app[PUSH] = push
    store.on_change.append(lambda event, issue, change: push.push(webhook_body(push, store, event, issue, change)))
    app.on_cleanup.append(lambda _: push.aclose())
    app[SETTINGS] = {
        "basic": (email, api_token),
        "pat": pat if mode == "datacenter" else None,
        "indexed": tuple(indexed_properties),
        "lag": search_lag_s,
    }
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=store.reset)
    app.middlewares.append(_authenticate)
    api = "/rest/api/{version}"
    app.router.add_get(api + "/serverInfo", _server_info)
    app.router.add_get(api + "/myself", _myself)
    app.router.add_post(api + "/issue", _create)
    app.router.add_post(api + "/issueLink", _link)
    app.router.add_get(api + "/issue/{key}", _read)
    app.router.add_put(api + "/issue/{key}", _edit)
    app.router.add_get(api + "/issue/{key}/comment", _comments)
    app.router.add_post(api + "/issue/{key}/comment", _add_comment)
    app.router.add_get(api + "/issue/{key}/transitions", get_transitions)
    app.router.add_post(api + "/issue/{key}/transitions", do_transition)
    app.router.add_get(api + "/issue/{key}/properties/{prop}", _get_property)
    app.router.add_put(api + "/issue/{key}/properties/{prop}", _put_property)
    app.router.add_delete(api + "/issue/{key}/properties/{prop}", _delete_property)
    add_search_routes(app)
    add_jsm_routes(app)
    app.router.add_get("/_sim/issues", _issues)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/human/{key}", _human)
    app.router.add_post("/_sim/push", _push_target)
    return app


# -- webhooks ------------------------------------------------------------------------------------


def webhook_body(push: Pusher, store: JiraStore, event: str, issue: Issue, change: dict[str, Any]) -> dict[str, Any]:
    """Jira's webhook JSON (https://developer.atlassian.com/server/jira/platform/webhooks/): the issue in
    REST API v2 shape, and the changelog (`jira:issue_updated`) or the comment (`comment_created`)."""
    body: dict[str, Any] = {"timestamp": int(time.time() * 1000), "webhookEvent": event}
    shown = issue_body(push.instance, issue, 2, "*all")
    if event == "comment_created":
        comment = {k: v for k, v in change.items() if k != "jsdPublic"} | {"body": rich(change["body"], 2)}
        body |= {"comment": comment, "issue": shown}
        # Jira also sends the issue's update, of type issue_commented, without a changelog.
        push.push({"timestamp": body["timestamp"], "webhookEvent": "jira:issue_updated",
                   "issue_event_type_name": "issue_commented", "user": change["author"],
                   "issue": shown, "comment": comment})  # fmt: skip
        return body
    kinds = {i["field"] for i in change["items"]}
    kind = "issue_generic" if "status" in kinds else "issue_assigned" if kinds == {"assignee"} else "issue_updated"
    return body | {
        "issue_event_type_name": kind,
        "user": change["author"],
        "issue": shown,
        "changelog": {"id": change["id"], "items": change["items"]},
    }


# -- vendor wording of the injected faults -------------------------------------------------------


def _error(error: JiraError | JsmError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers, dumps=dumps)


def _rate_limited(retry_after: int) -> web.Response:
    # Cloud burst limits (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/): Retry-After,
    # X-RateLimit-*, and often an HTML body.
    reset = (datetime.now(UTC) + timedelta(seconds=retry_after)).strftime("%Y-%m-%dT%H:%MZ")
    headers = {
        "Retry-After": str(retry_after),
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": reset,
        "RateLimit-Reason": "jira-burst-based",
    }
    page = "<html><head><title>Oops - an error has occurred</title></head><body>Rate limit exceeded.</body></html>"
    return web.Response(status=429, text=page, content_type="text/html", headers=headers)


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: _error(JiraError(503, "Service Unavailable")),
    rate_limited=_rate_limited,
    auth_expired=lambda: _error(_UNAUTHENTICATED, {"WWW-Authenticate": 'Basic realm="protected-area"'}),
)


# -- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def _vendor_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (JiraError, JsmError) as exc:
        return _error(exc)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        if not request.path.startswith("/rest/"):
            raise
        # Jersey's answer for a path no resource serves (Data Center; Cloud answers alike).
        return web.json_response({"message": f"null for uri: {request.url}", "status-code": 404}, status=404)


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/rest/"):
        return await handler(request)
    settings = request.app[SETTINGS]
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Bearer" and settings["pat"] is not None and credentials == settings["pat"]:
        return await handler(request)
    if scheme == "Basic":
        try:
            user, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:
            user = secret = ""
        if (user, secret) == settings["basic"]:
            return await handler(request)
    return _error(_UNAUTHENTICATED, {"WWW-Authenticate": 'Basic realm="protected-area"'})


# -- issues --------------------------------------------------------------------------------------


async def _server_info(request: web.Request) -> web.Response:
    api_version(request)
    cloud = request.app[STORE].cloud
    return web.json_response(
        {
            "baseUrl": str(request.url.origin()),
            "version": "1001.0.0-SNAPSHOT" if cloud else "9.12.2",
            "versionNumbers": [1001, 0, 0] if cloud else [9, 12, 2],
            "deploymentType": "Cloud" if cloud else "Server",  # [INFERRED] Data Center says "Server"
            "buildNumber": 100280 if cloud else 912002,
            "serverTitle": "Jira",
        }
    )


async def _create(request: web.Request) -> web.Response:
    version = api_version(request)
    issue = request.app[STORE].create(await read_json(request), version=version, clock=time.monotonic())
    url = f"{request.url.origin()}/rest/api/{version}/issue/{issue.id}"
    return web.json_response({"id": issue.id, "key": issue.key, "self": url}, status=201)


async def _link(request: web.Request) -> web.Response:
    """Create issue link (jira_links): 201 with no body."""
    link(request.app[STORE], await read_json(request), api_version(request))
    return web.Response(status=201)


async def _read(request: web.Request) -> web.Response:
    version = api_version(request)
    issue = request.app[STORE].get(request.match_info["key"])
    wanted = request.query.get("fields")
    return web.json_response(issue_json(request, issue, version, wanted), dumps=dumps)


async def _edit(request: web.Request) -> web.Response:
    version = api_version(request)
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    store.writable(issue, "edit issues")
    body = await read_json(request)
    values, updates = body.get("fields") or {}, body.get("update") or {}
    both = sorted(set(values) & set(updates))
    if both:
        raise JiraError(400, errors={f: f"Field '{f}' cannot be both set and updated." for f in both})
    labels = list(issue.fields.get("labels", []))
    for operation in updates.pop("labels", []):
        for verb, value in operation.items():
            if verb == "add" and value not in labels:
                labels.append(value)
            elif verb == "remove" and value in labels:
                labels.remove(value)
            elif verb == "set":
                labels = list(value)
    for name, operations in updates.items():
        for operation in operations:
            if "set" in operation:
                values[name] = operation["set"]
    checked = store.check_fields(values | {"labels": labels}, version=version, project=issue.project)
    before = dict(issue.fields)
    issue.fields.update(checked)
    store.record(issue, field_items(before, checked))
    for prop in body.get("properties") or []:
        issue.properties[prop["key"]] = prop.get("value")
    return web.Response(status=204)


async def _comments(request: web.Request) -> web.Response:
    version = api_version(request)
    issue = request.app[STORE].get(request.match_info["key"])
    shown = [c | {"body": rich(c["body"], version)} for c in issue.comments]
    return web.json_response({"startAt": 0, "maxResults": 5000, "total": len(shown), "comments": shown}, dumps=dumps)


async def _add_comment(request: web.Request) -> web.Response:
    version = api_version(request)
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    store.writable(issue, "comment on issues")
    body = (await read_json(request)).get("body")
    problem = comment_problem(body, version)
    if problem:
        raise JiraError(400, errors={"comment": problem})
    entry = store.comment(issue, body)
    url = f"{request.url.origin()}/rest/api/{version}/issue/{issue.id}/comment/{entry['id']}"
    return web.json_response(entry | {"self": url}, status=201, dumps=dumps)


async def _get_property(request: web.Request) -> web.Response:
    issue = request.app[STORE].get(request.match_info["key"])
    key = request.match_info["prop"]
    if key not in issue.properties:
        raise JiraError(404, f"The property with key '{key}' does not exist.")
    return web.json_response({"key": key, "value": issue.properties[key]}, dumps=dumps)


async def _put_property(request: web.Request) -> web.Response:
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    store.writable(issue, "edit issues")
    key = request.match_info["prop"]
    existed = key in issue.properties
    issue.properties[key] = await read_json(request, any_json=True)
    return web.Response(status=200 if existed else 201)


async def _delete_property(request: web.Request) -> web.Response:
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    store.writable(issue, "edit issues")
    if issue.properties.pop(request.match_info["prop"], None) is None:
        raise JiraError(404, f"The property with key '{request.match_info['prop']}' does not exist.")
    return web.Response(status=204)


# -- test hooks and running it -------------------------------------------------------------------


async def _issues(request: web.Request) -> web.Response:
    store = request.app[STORE]
    shown = [issue_json(request, i, 2, "*all") | {"properties": i.properties} for i in store.issues.values()]
    return web.json_response({"issues": shown}, dumps=dumps)


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests}, dumps=dumps)


async def _myself(request: web.Request) -> web.Response:
    api_version(request)
    return web.json_response(request.app[STORE].user(), dumps=dumps)


async def _human(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body.get("user"), str):
        raise JiraError(400, 'send {"user": "...", "to"?, "resolution"?, "assignee"?, "comment"?}')
    wanted = {k: body[k] for k in ("to", "resolution", "assignee", "comment") if isinstance(body.get(k), str)}
    issue = request.app[STORE].act_as_human(request.match_info["key"], body["user"], **wanted)
    return web.json_response(issue_json(request, issue, 2, "*all"), dumps=dumps)


async def _push_target(request: web.Request) -> web.Response:
    body = await read_json(request)
    push = request.app[PUSH]
    headers = body.get("headers") or {}
    push.target(
        str(body.get("url", "")),
        {str(k): str(v) for k, v in headers.items()},
        secret=str(body.get("secret", "")),
        sign="X-Hub-Signature",
    )
    push.instance = str(request.url.origin())
    return web.json_response({"url": push.url})


def run(
    host: str = "127.0.0.1",
    port: int = 8082,
    user: str = "admin",
    password: str = "admin",
    mode: str = "cloud",
    search_lag_s: float = 0.0,
) -> None:
    """Serve one simulated site until interrupted; `password` is the API token and the PAT."""
    app = make_app(mode=mode, email=user, api_token=password, pat=password, search_lag_s=search_lag_s)
    web.run_app(app, host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jira-simulator", description="A local Jira Cloud or Data Center.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--mode", choices=["cloud", "datacenter"], default="cloud")
    parser.add_argument(
        "--search-lag", type=float, default=0.0, help="seconds a new issue stays hidden from /search/jql (Cloud)"
    )
    args = parser.parse_args(argv)
    run(args.host, args.port, args.user, args.password, args.mode, args.search_lag)
    return 0


__all__ = ["FAULTS", "PUSH", "STORE", "JiraStore", "main", "make_app", "run", "webhook_body"]

if __name__ == "__main__":
    raise SystemExit(main())


def _requests_of(request: web.Request) -> list[dict[str, Any]]:
    return request.app[STORE].requests
