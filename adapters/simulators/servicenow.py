"""A faithful local ServiceNow Table API: the wire format, auth, errors and rate limits of a real instance.

Follows ServiceNow's docs: "Table API" (https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html),
"REST API HTTP response codes" and "Inbound REST API rate limiting" (under
https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/): Basic auth and OAuth bearer tokens from
`/oauth_token.do` (servicenow_oauth), string values, `{"result": ...}` and `{"error": ...,
"status": "failure"}` envelopes, 201 + Location, encoded queries, paging headers, journal fields,
the resolve data policy, Event Management's `/api/global/em/jsonv2` (servicenow_em), the
platform's request size limit (400 above `max_payload` bytes), and the shared fault switches
(`adapters.simulators.faults`).

Test and CLI hooks, outside the vendor API:

    GET  /_sim/records    {"incidents": [{"record": {...}, "journal": [{...}, ...]}, ...]} creation order
    GET  /_sim/events     {"events": [...em_event rows], "alerts": [...em_alert rows]}
    GET  /_sim/requests   {"requests": [{"method", "path", "query", "body", "status"}, ...]}
    GET|POST /_sim/faults, POST /_sim/reset   see adapters.simulators.faults
    POST /_sim/human/{sys_id}  {"user": "jdoe", "changes": {"state": "6", ...}}: a person's change
                          in the UI (`ServiceNowStore.act_as_human`); answers the record
    POST /_sim/push       {"url", "headers"?}: push every later update as the Business Rule of
                          deploy/snippets/servicenow/ does (`business_rule_body`); {"url": ""} stops

In-process: `app[STORE]` is the `ServiceNowStore`, `app[EVENTS]` the `EventManagement`,
`app[OAUTH]` the `OAuthServer`, `app[FAULTS]` the `Faults`, `app[PUSH]` the `Pusher` (its
`target(url, headers)`, `deliveries`, `drained()`). Every update is pushed, the integration user's
too, as the Business Rule would: telling them apart is the receiver's job.
As a process: `bridge simulate servicenow --port P`, or `python -m adapters.simulators.servicenow`;
the OAuth client is `bridge-client` / `client-s3cret`.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.pusher import Pusher
from adapters.simulators.requestlog import recorder
from adapters.simulators.servicenow_em import EVENTS, TABLES, EventManagement, jsonv2
from adapters.simulators.servicenow_oauth import DEFAULT_CLIENT, OAUTH, OAuthServer, token_endpoint
from adapters.simulators.servicenow_query import parse
from adapters.simulators.servicenow_store import (
    CLOSE_CODES,
    INCIDENT_FIELDS,
    REFERENCES,
    ServiceNowError,
    ServiceNowStore,
    not_found,
)

STORE = web.AppKey("servicenow_store", ServiceNowStore)
PUSH = web.AppKey("servicenow_push", Pusher)
_CREDENTIALS = web.AppKey("servicenow_credentials", tuple[str, str])
_MAX_PAYLOAD = web.AppKey("servicenow_max_payload", int)

WRITABLE = frozenset({"incident", "problem", "change_request"})  # tables the integration user may write
_TABLE_PATHS = ("/api/now/table/{table}", "/api/now/{version:v1|v2}/table/{table}")
_DEFAULT_LIMIT = 10000


def make_app(
    *,
    user: str = "admin",
    password: str = "admin",
    close_codes: Sequence[str] = CLOSE_CODES,
    priority_3_3: str = "4",
    faults: Faults | None = None,
    oauth_clients: Mapping[str, str] | None = None,
    client_credentials: bool = True,
    token_ttl_s: float = 1799.0,
    max_payload: int = 10485760,
) -> web.Application:
    """One simulated instance with empty tables, the given admin credentials and OAuth clients."""
    store = ServiceNowStore(user=user, close_codes=tuple(close_codes), priority_3_3=priority_3_3)
    events = EventManagement()
    clients = dict(oauth_clients) if oauth_clients is not None else dict([DEFAULT_CLIENT])
    oauth = OAuthServer(clients, user, password, client_credentials=client_credentials, token_ttl_s=token_ttl_s)

    push = Pusher()

    def reset() -> None:
        store.reset()
        events.reset()
        oauth.reset()
        push.reset()

    # Outermost first: log what the client sent and got, then faults, then auth, then the API.
    app = web.Application(
        middlewares=[recorder(_is_api, _requests_of), _vendor_errors], client_max_size=max_payload + (1 << 20)
    )
    app[STORE] = store
    app[PUSH] = push
    store.on_update.append(lambda after, before, rows: push.push(business_rule_body(after, before, rows, push)))
    app.on_cleanup.append(lambda _: push.aclose())
    app[EVENTS] = events
    app[OAUTH] = oauth
    app[_CREDENTIALS] = (user, password)
    app[_MAX_PAYLOAD] = max_payload
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=reset)
    app.middlewares.append(_authenticate)
    app.router.add_post("/oauth_token.do", token_endpoint)
    app.router.add_post("/api/global/em/jsonv2", jsonv2)
    for path in _TABLE_PATHS:
        app.router.add_get(path, _list)
        app.router.add_post(path, _create)
        app.router.add_get(path + "/{sys_id}", _read)
        app.router.add_patch(path + "/{sys_id}", _update)
        app.router.add_put(path + "/{sys_id}", _update)
        app.router.add_delete(path + "/{sys_id}", _delete)
    app.router.add_get("/_sim/records", _records)
    app.router.add_get("/_sim/events", _events)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/human/{sys_id}", _human)
    app.router.add_post("/_sim/push", _push_target)
    return app


# -- the Business Rule's push ---------------------------------------------------------------------------


def business_rule_body(
    record: Mapping[str, str], before: Mapping[str, str], rows: Sequence[Mapping[str, str]], push: Pusher
) -> dict[str, Any]:
    """What deploy/snippets/servicenow/alert_bridge_sync.js sends for one update of an incident."""
    entry = rows[-1] if rows else None
    return {
        "table": "incident",
        "sys_id": record["sys_id"],
        "number": record["number"],
        "url": f"{push.instance}/nav_to.do?uri=incident.do?sys_id={record['sys_id']}",
        "state": record["state"],
        "previous_state": before.get("state", ""),
        "assigned_to": record["assigned_to"],
        "previous_assigned_to": before.get("assigned_to", ""),
        "sys_updated_on": record["sys_updated_on"],
        "sys_updated_by": record["sys_updated_by"],
        "sys_mod_count": record["sys_mod_count"],
        "correlation_id": record["correlation_id"],
        "correlation_display": record["correlation_display"],
        "journal": None
        if entry is None
        else {k: entry[k] for k in ("sys_id", "element", "value", "sys_created_by", "sys_created_on")},
    }


# -- vendor wording of the injected faults -------------------------------------------------------


def _error(error: ServiceNowError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers, dumps=_dumps)


def _unauthorized() -> web.Response:
    return _error(
        ServiceNowError(401, "User Not Authenticated", "Required to provide Auth information"),
        {"WWW-Authenticate": 'BASIC realm="Service-now"'},
    )


def _rate_limited(retry_after: int) -> web.Response:
    # Inbound REST rate limiting (https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/inbound-REST-API-rate-limiting.html):
    # Retry-After plus the X-RateLimit-* headers.
    headers = {
        "Retry-After": str(retry_after),
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Reset": str(int(time.time()) + retry_after),
        "X-RateLimit-Rule": "b6a0e2a1c3a3201000f5dfc4e1d2b0a5",
    }
    detail = "Rate limit of 10 requests per hour for Table API exceeded"
    return _error(ServiceNowError(429, "Rate limit exceeded", detail), headers)


def _unavailable() -> web.Response:
    # [INFERRED] wording: node or semaphore exhaustion answers 503 in the platform's envelope.
    return _error(ServiceNowError(503, "Service Unavailable", "The instance is temporarily unavailable"))


FAULT_ANSWERS = FaultAnswers(unavailable=_unavailable, rate_limited=_rate_limited, auth_expired=_unauthorized)


# -- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def _vendor_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn a ServiceNowError raised anywhere below, or an unrouted API path, into the vendor envelope."""
    try:
        return await handler(request)
    except ServiceNowError as exc:
        return _error(exc)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        if not _is_api(request):
            raise
        return _error(ServiceNowError(400, "Requested URI does not represent any resource", None))


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth with the instance's credentials, or a live Bearer token from `/oauth_token.do`."""
    if not _is_api(request):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        if not request.app[OAUTH].valid(header[7:]):
            return _unauthorized()
    elif _basic_credentials(header) != request.app[_CREDENTIALS]:
        return _unauthorized()
    if request.content_length is not None and request.content_length > request.app[_MAX_PAYLOAD]:
        detail = (
            f"Rejected large REST payload with content-length = {request.content_length} bytes."
            f" Max allowed: {request.app[_MAX_PAYLOAD]} bytes."
        )
        return _error(ServiceNowError(400, "Exception while reading request", detail))
    return await handler(request)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header (RFC 7617), or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return (user, password) if colon else None


# -- Table API -----------------------------------------------------------------------------------


def _rows(request: web.Request, table: str) -> tuple[list[dict[str, str]], frozenset[str]]:
    if table in TABLES:
        return request.app[EVENTS].rows(table)
    return request.app[STORE].rows(table)


async def _list(request: web.Request) -> web.Response:
    table = request.match_info["table"]
    rows, known = _rows(request, table)
    query = parse(request.query.get("sysparm_query", ""), known)
    plain = {k: v for k, v in request.query.items() if not k.startswith("sysparm_") and k in known}
    matched = [row for row in query.select(rows) if all(row.get(k) == v for k, v in plain.items())]
    offset = _number(request.query.get("sysparm_offset"), 0)
    limit = _number(request.query.get("sysparm_limit"), _DEFAULT_LIMIT) or _DEFAULT_LIMIT
    page = matched[offset : offset + limit]
    if not page and request.match_info.get("version") == "v1":
        raise not_found()  # v1 answers an empty result with 404; v2 (the default) with []
    headers = {"X-Total-Count": str(len(matched))}
    if request.query.get("sysparm_suppress_pagination_header") != "true":
        headers["Link"] = _links(request, offset, limit, len(matched))
    result = [_render(request, row, table) for row in page]
    return web.json_response({"result": result}, headers=headers, dumps=_dumps)


async def _read(request: web.Request) -> web.Response:
    table = request.match_info["table"]
    rows, _ = _rows(request, table)
    sys_id = request.match_info["sys_id"]
    row = next((r for r in rows if r.get("sys_id") == sys_id), None)
    if row is None:
        raise not_found()
    return web.json_response({"result": _render(request, row, table)}, dumps=_dumps)


async def _create(request: web.Request) -> web.Response:
    store = request.app[STORE]
    table = request.match_info["table"]
    _writable(store, table, "Insert")
    body = await _body(request)
    record = store.itsm.create(table, body) if store.itsm.knows(table) else store.create(body)
    location = f"{request.url.origin()}/api/now/table/{table}/{record['sys_id']}"
    return web.json_response(
        {"result": _render(request, record, table)},
        status=201,
        headers={"Location": location},
        dumps=_dumps,
    )


async def _update(request: web.Request) -> web.Response:
    store = request.app[STORE]
    table = request.match_info["table"]
    _writable(store, table, "Update")
    body = await _body(request)
    if store.itsm.knows(table):
        found = store.itsm.update(table, request.match_info["sys_id"], body)
        if found is None:
            raise not_found()
        record = found
    else:
        record = store.update(request.match_info["sys_id"], body)
    return web.json_response({"result": _render(request, record, table)}, dumps=_dumps)


async def _delete(request: web.Request) -> web.Response:
    store = request.app[STORE]
    _writable(store, request.match_info["table"], "Delete")
    store.delete(request.match_info["sys_id"])
    return web.Response(status=204)


def _writable(store: ServiceNowStore, table: str, verb: str) -> None:
    if table not in TABLES:
        store.rows(table)  # 400 for an unknown table
    if table not in WRITABLE or (verb == "Delete" and table != "incident") or store.acl_denied:
        detail = f"ACL Exception {verb} Failed due to security constraints"
        raise ServiceNowError(403, "Operation Failed", detail)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ServiceNowError(400, "Exception while reading request", f"Cannot decode: {exc}") from None
    if not isinstance(body, dict):
        raise ServiceNowError(400, "Exception while reading request", "The payload is not a JSON object")
    return body


def _render(request: web.Request, row: Mapping[str, str], table: str) -> dict[str, Any]:
    """A row as the API shows it: `sysparm_fields` applied, references as {"link", "value"}."""
    wanted = request.query.get("sysparm_fields")
    # a dot-walked field (`cmdb_ci.name`) is shown only when asked for, as the platform does
    names = [n for n in wanted.split(",") if n in row] if wanted else [n for n in row if "." not in n]
    links = table in WRITABLE and request.query.get("sysparm_exclude_reference_link") != "true"
    origin = request.url.origin()
    out: dict[str, Any] = {}
    for name in names:
        value = row[name]
        if links and value and name in REFERENCES:
            out[name] = {"link": f"{origin}/api/now/table/{REFERENCES[name]}/{value}", "value": value}
        else:
            out[name] = value
    return out


def _links(request: web.Request, offset: int, limit: int, total: int) -> str:
    def at(start: int) -> str:
        url = request.url.update_query(sysparm_offset=str(start), sysparm_limit=str(limit))
        return f"<{url}>"

    last = ((total - 1) // limit) * limit if total else 0
    parts = [f'{at(0)};rel="first"']
    if offset > 0:
        parts.append(f'{at(max(0, offset - limit))};rel="prev"')
    if offset + limit < total:
        parts.append(f'{at(offset + limit)};rel="next"')
    parts.append(f'{at(last)};rel="last"')
    return ",".join(parts)


def _number(text: str | None, default: int) -> int:
    try:
        return max(0, int(text)) if text is not None else default
    except ValueError:
        return default  # the platform ignores an unreadable paging parameter


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# -- test hooks ----------------------------------------------------------------------------------


async def _records(request: web.Request) -> web.Response:
    return web.json_response({"incidents": request.app[STORE].snapshot()}, dumps=_dumps)


async def _events(request: web.Request) -> web.Response:
    events = request.app[EVENTS]
    return web.json_response({"events": events.events, "alerts": events.alerts}, dumps=_dumps)


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests}, dumps=_dumps)


async def _human(request: web.Request) -> web.Response:
    body = await _body(request)
    changes = body.get("changes")
    if not isinstance(changes, dict) or not isinstance(body.get("user"), str):
        raise ServiceNowError(400, "Bad human change", 'send {"user": "...", "changes": {...}}')
    record = request.app[STORE].act_as_human(request.match_info["sys_id"], body["user"], **changes)
    return web.json_response({"result": record}, dumps=_dumps)


async def _push_target(request: web.Request) -> web.Response:
    body = await _body(request)
    headers = body.get("headers") or {}
    request.app[PUSH].target(str(body.get("url", "")), {str(k): str(v) for k, v in headers.items()})
    request.app[PUSH].instance = str(request.url.origin())
    return web.json_response({"url": request.app[PUSH].url})


# -- running it ----------------------------------------------------------------------------------


def run(host: str = "127.0.0.1", port: int = 8081, user: str = "admin", password: str = "admin") -> None:
    """Serve one simulated instance until interrupted."""
    web.run_app(make_app(user=user, password=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servicenow-simulator", description="A local ServiceNow Table API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.user, args.password)
    return 0


__all__ = [
    "EVENTS",
    "FAULTS",
    "INCIDENT_FIELDS",
    "OAUTH",
    "PUSH",
    "STORE",
    "EventManagement",
    "OAuthServer",
    "ServiceNowStore",
    "main",
    "make_app",
    "run",
]

if __name__ == "__main__":
    raise SystemExit(main())


def _requests_of(request: web.Request) -> list[dict[str, Any]]:
    return request.app[STORE].requests
