"""A local Jira Service Management Operations (JSM Ops): the alert APIs that replace Opsgenie's.

Written from Atlassian's reference, "Jira Service Management ops / Reference":
https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v1/api-group-integration-events/ (the
integration events API: create, acknowledge, close, add note; `Authorization: GenieKey <API key>` of
an API integration; asynchronous: 202 `{"result", "took", "requestId"}`) and
https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v2/api-group-alerts/ (the REST API:
list alerts with a search query, get an alert, get a request's status; Basic email:api_token, under
`/jsm/ops/api/{cloudId}`). These are Opsgenie's Alert API v2 moved, so what the reference leaves out
follows Opsgenie's own (opsgenie/opsgenie-python-sdk `opsgenie-oas.yml`): marked [INFERRED].

    POST /jsm/ops/integration/v2/alerts                        create: {message (required), alias,
                                                               description, tags, details, entity, source,
                                                               priority P1-P5, note, user, responders, ...}
    POST /jsm/ops/integration/v2/alerts/{identifier}/acknowledge | close | notes   {user, source, note}
         ?identifierType=id|alias|tiny (default id; alias works though the reference omits it: JSDCLOUD-14179)
    GET  /jsm/ops/integration/v2/alerts/requests/{requestId}  [INFERRED] a request's outcome, as Opsgenie
    GET  /jsm/ops/api/{cloudId}/v1/alerts?query=&sort=createdAt&order=desc&offset=&size=
                                                               {"values": [...], "links": {"next"}}
    GET  /jsm/ops/api/{cloudId}/v1/alerts/{id}                {..., "report": {ackTime, closeTime,
                                                               acknowledgedBy, closedBy}} (Opsgenie's report)
    GET  /jsm/ops/api/{cloudId}/v1/alerts/{id}/notes?order=&limit=&offset=&direction=next
                                                               [INFERRED: Opsgenie's list alert notes]
                                                               {"values": [{note, owner, createdAt, offset}],
                                                               "links": {"next"}}
    GET  /jsm/ops/api/{cloudId}/v1/alerts/requests/{id}       {action, processedAt, integrationId,
                                                               isSuccess, status, alertId, alias}

Alerts are deduplicated on the alias among open ones (a create of an open alias counts it again); a
closed alert cannot be reopened: a create with its alias makes a new one. Requests are processed
at once (the real API processes them shortly after answering; their outcome is in the request's
status: "Alert does not exist" and so on). Field limits as Opsgenie's: message 130 characters (cut),
alias 512, description 15000, note 25000 (longer: 422), at most 20 tags. Errors are
`{"message", "took", "requestId"}`, a 422 with `errors` by field [INFERRED: Opsgenie's]. Queries
understand `alias:<value>` and `source:<value>` (quoted or not), `status:open|closed`,
`acknowledged:true|false`, and `createdAt` or `updatedAt` compared (`>=`, `>`, `<=`, `<`) with epoch
milliseconds (Opsgenie's search syntax), joined by `AND`. The shared fault switches apply (faults.py);
`read_only` makes writes 403.
Test hooks: `GET /_sim/alerts`, `GET /_sim/requests`, `/_sim/faults`, `/_sim/reset`; in-process
`app[STORE]`. The loop back: `OpsStore.act_as_human(alias, user, action, note)` (or `POST
/_sim/human/{alias}` `{"user", "action": "acknowledge"|"unacknowledge"|"close"|"notes", "note"?}`) is a
person's action; every acknowledge, unacknowledge, close and note, the API's too, is pushed to the
target of `POST /_sim/push` `{"url", "headers"?}` (`app[PUSH]`) as JSM Ops' outgoing Webhook
integration sends it (Opsgenie's format: `{"action", "alert": {alertId, alias, message, tinyId,
username, userId, note, createdAt (epoch ms), updatedAt (epoch ns), ...}, "source", "integrationName",
"integrationId", "integrationType"}`). An acknowledge or close sets the alert's `report`
(`acknowledgedBy`/`ackTime`, `closedBy`/`closeTime`: ms after createdAt); its note is a note.
As a process: `bridge simulate jsm-ops --port P` (the API key and the API token are
the password, the email the user, the cloud id `sim-cloud`).
"""

from __future__ import annotations

import argparse
import base64
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.jsm_ops_store import PUSH, STORE, VERBS, OpsError, OpsStore, epoch_ms, webhook_body
from adapters.simulators.pusher import Pusher
from adapters.simulators.requestlog import recorder

INTEGRATION = "/jsm/ops/integration/v2/alerts"
CLOUD_ID = "sim-cloud"
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
LIMITS = {"alias": 512, "description": 15000, "note": 25000, "entity": 512, "source": 100, "user": 100}
_QUERY_TERM = re.compile(r'^(alias|source|status|acknowledged):(?:"((?:[^"\\]|\\.)*)"|(\S+))$')
_QUERY_TIME = re.compile(r"^(createdAt|updatedAt)\s*(>=|<=|>|<)\s*(\d{1,15})$")


_KEYS = web.AppKey("jsm_ops_keys", dict)


def make_app(
    *,
    api_key: str = "genie-key",
    email: str = "bridge@example.com",
    api_token: str = "api-token",
    cloud_id: str = CLOUD_ID,
    faults: Faults | None = None,
) -> web.Application:
    store = OpsStore()
    app = web.Application(middlewares=[recorder(lambda r: r.path.startswith("/jsm/"), _requests_of), _errors])
    app[STORE] = store
    push = Pusher()
    app[PUSH] = push
    store.on_action.append(lambda verb, alert, user, note: push.push(webhook_body(verb, alert, user, note)))
    app.on_cleanup.append(lambda _: push.aclose())
    app[_KEYS] = {
        "genie": api_key,
        "basic": base64.b64encode(f"{email}:{api_token}".encode()).decode(),
        "cloud": cloud_id,
    }
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=store.reset)
    app.middlewares.append(_authenticate)
    app.router.add_post(INTEGRATION, _create)
    app.router.add_get(INTEGRATION + "/requests/{request_id}", _integration_request)
    app.router.add_post(INTEGRATION + "/{identifier}/{action}", _action)
    api = "/jsm/ops/api/{cloud_id}/v1/alerts"
    app.router.add_get(api, _list)
    app.router.add_get(api + "/requests/{request_id}", _request)
    app.router.add_get(api + "/{id}", _get)
    app.router.add_get(api + "/{id}/notes", _notes)
    app.router.add_get("/_sim/alerts", _all)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/human/{alias}", _human)
    app.router.add_post("/_sim/push", _push_target)
    return app


async def _human(request: web.Request) -> web.Response:
    body = await _body(request, required=True)
    if not isinstance(body.get("user"), str) or not isinstance(body.get("action"), str):
        raise OpsError(422, 'send {"user", "action": "acknowledge"|"unacknowledge"|"close"|"notes", "note"?}')
    note = body.get("note")
    text = note if isinstance(note, str) else ""
    alert = request.app[STORE].act_as_human(request.match_info["alias"], body["user"], body["action"], text)
    return web.json_response(_public(alert))


async def _push_target(request: web.Request) -> web.Response:
    body = await _body(request, required=True)
    headers = body.get("headers") or {}
    request.app[PUSH].target(str(body.get("url", "")), {str(k): str(v) for k, v in headers.items()})
    return web.json_response({"url": request.app[PUSH].url})


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: OpsError(503, "Service is temporarily unavailable. Please try again later.").response(),
    rate_limited=lambda s: OpsError(
        429, "You are making too many requests! To avoid errors, we recommend you limit requests."
    ).response({"Retry-After": str(s), "X-RateLimit-State": "THROTTLED"}),
    auth_expired=lambda: OpsError(401, "Could not authenticate").response(),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OpsError as exc:
        return exc.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if not request.path.startswith("/jsm/"):
            raise
        return OpsError(exc.status, f"{request.method} {request.path} is not served").response()


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    keys = request.app[_KEYS]
    given = request.headers.get("Authorization", "")
    if request.path.startswith(INTEGRATION) and given != f"GenieKey {keys['genie']}":
        return OpsError(401, "Could not authenticate").response()
    if request.path.startswith("/jsm/ops/api/"):
        if given != f"Basic {keys['basic']}":
            return OpsError(401, "Unauthorized: the email and API token do not match").response()
        if request.match_info.get("cloud_id", keys["cloud"]) != keys["cloud"]:
            return OpsError(404, "Cloud id not found").response()
    return await handler(request)


async def _body(request: web.Request, *, required: bool) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise OpsError(400, "Invalid JSON body")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpsError(400, "Invalid JSON body") from None
    if not isinstance(body, dict):
        raise OpsError(400, "Invalid JSON body")
    return body


def _text(body: dict[str, Any], name: str, errors: dict[str, str]) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[name] = f"{name} must be a string"
        return ""
    if name in LIMITS and len(value) > LIMITS[name]:
        errors[name] = f"{name.capitalize()} can not be longer than {LIMITS[name]} characters."
    return value


def _accepted(request_id: str) -> web.Response:
    return web.json_response(
        {"result": "Request will be processed", "took": 0.012, "requestId": request_id}, status=202
    )


async def _create(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.writable()
    body = await _body(request, required=True)
    errors: dict[str, str] = {}
    message = _text(body, "message", errors).strip()
    if not message and "message" not in errors:
        errors["message"] = "Message can not be empty."
    fields = {name: _text(body, name, errors) for name in ("alias", "description", "entity", "source", "note", "user")}
    priority = body.get("priority") or "P3"
    if priority not in PRIORITIES:
        errors["priority"] = "Priority should be one of [P1, P2, P3, P4, P5]"
    tags = body.get("tags") or []
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors["tags"] = "Tags must be a list of strings"
    details = body.get("details") or {}
    if not (isinstance(details, dict) and all(isinstance(v, str) for v in details.values())):
        errors["details"] = "Details must be a map of strings"
    if errors:
        raise OpsError(422, "Request body is not processable. Please check the errors.", errors)
    alias = fields["alias"] or str(uuid.uuid4())
    now = store.clock()
    existing = store.open_alias(alias)
    if existing is not None:  # deduplicated: counted again, nothing else changes
        existing["count"] += 1
        existing["lastOccurredAt"] = existing["updatedAt"] = now
        if fields["note"]:
            existing["notes"].append({"note": fields["note"], "owner": fields["user"], "createdAt": now})
        return _accepted(store.outcome("Create", existing, alias, True, "Alert is deduplicated"))
    alert_id = f"{uuid.uuid4()}-{int(time.time() * 1000)}"
    alert = {
        "id": alert_id,
        "tinyId": str(next(store._tiny)),
        "alias": alias,
        "message": message[:130],
        "description": fields["description"],
        "status": "open",
        "acknowledged": False,
        "isSeen": False,
        "snoozed": False,
        "tags": [t[:50] for t in tags][:20],
        "extraProperties": dict(details),
        "entity": fields["entity"],
        "source": fields["source"] or request.remote or "",
        "owner": "",
        "priority": priority,
        "count": 1,
        "createdAt": now,
        "updatedAt": now,
        "lastOccurredAt": now,
        "integration": {"id": "sim-integration", "name": "API", "type": "API"},
        "notes": [{"note": fields["note"], "owner": fields["user"], "createdAt": now}] if fields["note"] else [],
        "closeNote": "",
        "report": {},
    }
    store.alerts[alert_id] = alert
    return _accepted(store.outcome("Create", alert, alias, True, "Created alert"))


async def _action(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["action"]
    if name not in ("acknowledge", "close", "notes"):
        raise OpsError(404, f"POST {request.path} is not served")
    store.writable()
    kind = request.query.get("identifierType", "id")
    if kind not in ("id", "alias", "tiny"):
        raise OpsError(422, "Request body is not processable. Please check the errors.", {"identifierType": "invalid"})
    body = await _body(request, required=name == "notes")
    errors: dict[str, str] = {}
    user, note, _ = (_text(body, k, errors) for k in ("user", "note", "source"))
    if name == "notes" and not note.strip() and "note" not in errors:
        errors["note"] = "Note can not be empty."
    if errors:
        raise OpsError(422, "Request body is not processable. Please check the errors.", errors)
    identifier = request.match_info["identifier"]
    alert = store.find(identifier, kind)
    verb = VERBS[name]
    alias = alert["alias"] if alert else identifier if kind == "alias" else ""
    if alert is None:  # accepted all the same: the request's status says what became of it
        return _accepted(store.outcome(verb, None, alias, False, "Alert does not exist"))
    done, status = store.apply(alert, name, user, note)
    return _accepted(store.outcome(verb, alert, alias, done, status))


def _public(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k not in ("notes", "closeNote")}


def _terms(query: str) -> list[tuple[str, str, str]]:
    """A search query's terms as (field, operator, value); 422 for what the simulator does not understand."""
    terms = []
    for term in [t.strip() for t in re.split(r"\s+AND\s+", query.strip(), flags=re.IGNORECASE) if t.strip()]:
        timed = _QUERY_TIME.match(term)
        if timed:
            terms.append((timed[1], timed[2], timed[3]))
            continue
        found = _QUERY_TERM.match(term)
        if not found:
            raise OpsError(422, f"Invalid query: {term[:80]}")
        name, quoted, bare = found.groups()
        terms.append((name, ":", re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare))
    return terms


_COMPARE = {">=": int.__ge__, ">": int.__gt__, "<=": int.__le__, "<": int.__lt__}


def _matches(alert: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for name, operator, value in terms:
        if operator != ":":
            if not _COMPARE[operator](epoch_ms(alert[name]), int(value)):
                return False
            continue
        shown = str(alert[name]).lower() if name == "acknowledged" else str(alert[name])
        if shown != (value.lower() if name == "acknowledged" else value):
            return False
    return True


def _number(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or int(raw) > most:
        raise OpsError(422, f"{name} must be a number from 0 to {most}")
    return int(raw)


async def _list(request: web.Request) -> web.Response:
    store = request.app[STORE]
    terms = _terms(request.query.get("query", ""))
    found = [a for a in store.alerts.values() if _matches(a, terms)]
    sort = request.query.get("sort", "createdAt")
    if sort not in ("createdAt", "updatedAt", "tinyId", "alias", "message", "status"):
        raise OpsError(422, f"sort {sort[:40]!r} is not supported")
    found.sort(key=lambda a: (int(a[sort]) if sort == "tinyId" else a[sort], int(a["tinyId"])))
    if request.query.get("order", "desc") == "desc":
        found.reverse()
    offset, size = _number(request, "offset", 0, 20000), _number(request, "size", 20, 100)
    page = found[offset : offset + size]
    links: dict[str, str] = {}
    if offset + size < len(found):
        links["next"] = f"/v1/alerts?offset={offset + size}&size={size}"
    return web.json_response({"values": [_public(a) for a in page], "links": links})


async def _get(request: web.Request) -> web.Response:
    alert = request.app[STORE].alerts.get(request.match_info["id"])
    if alert is None:
        raise OpsError(404, "Alert does not exist")
    return web.json_response(_public(alert))


async def _notes(request: web.Request) -> web.Response:
    """An alert's notes, `order` asc or desc (default), `limit` at most 100, after the note whose `offset`
    is given (`direction=next`; the opaque offset is `<createdAt ms>_<sequence>`)."""
    alert = request.app[STORE].alerts.get(request.match_info["id"])
    if alert is None:
        raise OpsError(404, "Alert does not exist")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc") or request.query.get("direction", "next") != "next":
        raise OpsError(422, "order must be asc or desc and direction next")
    notes = [
        {
            "note": n["note"],
            "owner": n["owner"],
            "createdAt": n["createdAt"],
            "offset": f"{epoch_ms(n['createdAt'])}_{k}",
        }
        for k, n in enumerate(alert["notes"])
    ]
    if order == "desc":
        notes.reverse()
    after = request.query.get("offset", "")
    if after:
        at = next((k for k, n in enumerate(notes) if n["offset"] == after), None)
        if at is None:
            raise OpsError(422, f"offset {after[:40]!r} is not a note of this alert")
        notes = notes[at + 1 :]
    limit = _number(request, "limit", 20, 100)
    page = notes[:limit]
    links: dict[str, str] = {}
    if len(notes) > limit and page:
        links["next"] = f"/v1/alerts/{alert['id']}/notes?offset={page[-1]['offset']}&direction=next&order={order}"
    return web.json_response({"values": page, "links": links})


async def _request(request: web.Request) -> web.Response:
    found = request.app[STORE].outcomes.get(request.match_info["request_id"])
    if found is None:
        raise OpsError(404, "Request does not exist")
    return web.json_response(found)


async def _integration_request(request: web.Request) -> web.Response:
    found = request.app[STORE].outcomes.get(request.match_info["request_id"])
    if found is None:
        raise OpsError(404, "Request does not exist")
    data = {"success": found["isSuccess"], **found}
    return web.json_response({"data": data, "took": 0.002, "requestId": str(uuid.uuid4())})


async def _all(request: web.Request) -> web.Response:
    return web.json_response({"alerts": list(request.app[STORE].alerts.values())})


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests})


def _requests_of(request: web.Request) -> list[dict[str, Any]]:
    return request.app[STORE].requests


def run(host: str = "127.0.0.1", port: int = 8085, user: str = "admin", password: str = "admin") -> None:
    """Serve until interrupted: the API key and the API token are `password`, the email `user`."""
    web.run_app(make_app(api_key=password, email=user, api_token=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jsm-ops-simulator", description="A local JSM Operations alert API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--user", default="admin", help="the account email of the REST API")
    parser.add_argument("--password", default="admin", help="the integration's API key and the API token")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.user, args.password)
    return 0


__all__ = ["CLOUD_ID", "FAULTS", "STORE", "OpsStore", "main", "make_app", "run"]

if __name__ == "__main__":
    raise SystemExit(main())
