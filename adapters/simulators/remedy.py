"""A faithful local BMC Remedy / Helix ITSM AR System REST API.

Follows BMC's AR System REST API docs
(https://docs.bmc.com/docs/ars91/en/login-information-609071516.html,
https://docs.bmc.com/docs/ars91/en/entry-formname-609071438.html): `/api/jwt/login` (form-encoded,
answers the raw token as text/plain) and `/api/jwt/logout` (204); `Authorization: AR-JWT <token>` on
every `/api/arsys/v1` call, tokens that expire after `token_ttl_s` (401 afterwards); the forms
`HPD:IncidentInterface_Create` (POST only), `HPD:IncidentInterface` and `HPD:Help Desk` (GET, PUT),
`HPD:WorkLog` (GET, POST), with `:` and spaces sent literally or %-encoded; separate Request ID and
Incident Number sequences and the composite `id|id` on the interface form; `fields=values(...)`,
`q=` qualifications (adapters.simulators.remedy_qual), `sort`, `offset`/`limit` with `_links.next`;
201 + Location, 204 on PUT; the workflow rules of adapters.simulators.remedy_store; AR error lists;
and the shared fault switches (AR System has no rate limit of its own: the 429 is a gateway's).

Test and CLI hooks: `GET /_sim/records` (incidents with their work logs), `GET /_sim/requests`,
`/_sim/faults`, `/_sim/reset`, `POST /_sim/human/{Request ID}` `{"user", "values"?, "work_log"?}`
(a person's change, `RemedyStore.act_as_human`). AR System pushes nothing: clients poll.
In-process: `app[STORE]`, `app[TOKENS]` (`expire_all()`, `logins`,
`logouts`). As a process: `bridge simulate remedy --port P`.
"""

from __future__ import annotations

import argparse
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.remedy_qual import QualificationError, parse
from adapters.simulators.remedy_store import (
    ENUMS,
    INCIDENT_FIELDS,
    WORKLOG_FIELDS,
    RemedyError,
    RemedyStore,
    missing_entry,
)
from adapters.simulators.requestlog import recorder

CREATE_FORM, INTERFACE_FORM, HELP_DESK_FORM, WORKLOG_FORM = (
    "HPD:IncidentInterface_Create",
    "HPD:IncidentInterface",
    "HPD:Help Desk",
    "HPD:WorkLog",
)
_FIELDS_PARAM = re.compile(r"values\((.*)\)", re.DOTALL)


@dataclass
class Tokens:
    """Issued JWTs and their expiry; the login and logout counts, for tests."""

    user: str
    password: str
    ttl_s: float = 3600.0
    clock: Callable[[], float] = time.time
    live: dict[str, float] = field(default_factory=dict)
    logins: int = 0
    logouts: int = 0

    def issue(self) -> str:
        self.logins += 1
        # Shaped like a JWT (header.claims.signature); clients treat it as opaque.
        token = "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(32) + "." + secrets.token_urlsafe(24)
        self.live[token] = self.clock() + self.ttl_s
        return token

    def valid(self, token: str) -> bool:
        return self.clock() < self.live.get(token, 0.0)

    def expire_all(self) -> None:
        self.live = dict.fromkeys(self.live, 0.0)

    def reset(self) -> None:
        self.live.clear()
        self.logins = self.logouts = 0


STORE = web.AppKey("remedy_store", RemedyStore)
TOKENS = web.AppKey("remedy_tokens", Tokens)


def make_app(
    *, user: str = "Bridge", password: str = "bridge", token_ttl_s: float = 3600.0, faults: Faults | None = None
) -> web.Application:
    store, tokens = RemedyStore(user=user), Tokens(user, password, token_ttl_s)

    def reset() -> None:
        store.reset()
        tokens.reset()

    app = web.Application(middlewares=[recorder(_is_api, _requests_of, keep_body=_is_form_api), _vendor_errors])
    app[STORE], app[TOKENS] = store, tokens
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=reset)
    app.middlewares.append(_authenticate)
    app.router.add_post("/api/jwt/login", _login)
    app.router.add_post("/api/jwt/logout", _logout)
    app.router.add_get("/api/arsys/v1/entry/{form}", _list)
    app.router.add_post("/api/arsys/v1/entry/{form}", _create)
    app.router.add_get("/api/arsys/v1/entry/{form}/{entry}", _read)
    app.router.add_put("/api/arsys/v1/entry/{form}/{entry}", _update)
    app.router.add_get("/_sim/records", _records)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/human/{entry}", _human)
    return app


# -- vendor wording of the injected faults -------------------------------------------------------


def _error(error: RemedyError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


def _auth_failed(appended: str | None = None) -> web.Response:
    return _error(RemedyError(401, 623, "Authentication failed", appended))


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: _error(
        RemedyError(503, 90, "Cannot establish a network connection to the AR System server", "arserver:0")
    ),
    rate_limited=lambda seconds: _error(
        RemedyError(429, 9093, "Too many requests, try again later", None),  # [INFERRED] a gateway's answer
        {"Retry-After": str(seconds)},
    ),
    auth_expired=_auth_failed,
)


# -- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def _vendor_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RemedyError as exc:
        return _error(exc)
    except QualificationError as exc:
        return _error(RemedyError(400, exc.number, exc.text, exc.appended))
    except web.HTTPMethodNotAllowed:
        if not request.path.startswith("/api/"):
            raise
        return _error(RemedyError(405, 8940, "The operation is not supported on this form", request.path))


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/arsys/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "AR-JWT" or not request.app[TOKENS].valid(token):
        return _auth_failed()
    return await handler(request)


# -- JWT -----------------------------------------------------------------------------------------


async def _login(request: web.Request) -> web.Response:
    tokens = request.app[TOKENS]
    form = await request.post()
    if (form.get("username"), form.get("password")) != (tokens.user, tokens.password):
        return _auth_failed(str(form.get("username", "")))
    return web.Response(text=tokens.issue(), content_type="text/plain")


async def _logout(request: web.Request) -> web.Response:
    tokens = request.app[TOKENS]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "AR-JWT" or token not in tokens.live:
        return _auth_failed()
    del tokens.live[token]
    tokens.logouts += 1
    return web.Response(status=204)


# -- forms ---------------------------------------------------------------------------------------


def _form(request: web.Request, *allowed: str) -> str:
    form = request.match_info["form"]
    if form not in (CREATE_FORM, INTERFACE_FORM, HELP_DESK_FORM, WORKLOG_FORM):
        raise RemedyError(404, 303, "Form does not exist on server", form)
    if form not in allowed:
        raise web.HTTPMethodNotAllowed(request.method, [])
    return form


def _rows(store: RemedyStore, form: str) -> tuple[list[dict[str, Any]], frozenset[str]]:
    if form == WORKLOG_FORM:
        return list(store.worklogs), WORKLOG_FIELDS
    if form == INTERFACE_FORM:
        composite = [r | {"Request ID": f"{r['Request ID']}|{r['Request ID']}"} for r in store.incidents.values()]
        return composite, INCIDENT_FIELDS
    if form == HELP_DESK_FORM:
        return list(store.incidents.values()), INCIDENT_FIELDS
    return [], frozenset({"Request ID", "Incident Number", "Incident_Entry_ID", "Create Date"})


def _project(values: Mapping[str, Any], wanted: str | None, known: frozenset[str]) -> dict[str, Any]:
    if not wanted:
        return dict(values)
    match = _FIELDS_PARAM.fullmatch(wanted.strip())
    names = [n.strip() for n in match.group(1).split(",")] if match else []
    unknown = next((n for n in names if n not in known), None)
    if unknown is not None:
        raise RemedyError(400, 314, "Field does not exist on current form", unknown)
    return {n: values.get(n) for n in names}


def _entry(request: web.Request, form: str, values: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    entry_id = str(values.get("Request ID", ""))
    href = f"{request.url.origin()}/api/arsys/v1/entry/{form}/{entry_id}"
    return {"values": _project(values, request.query.get("fields"), known), "_links": {"self": [{"href": href}]}}


async def _list(request: web.Request) -> web.Response:
    store = request.app[STORE]
    form = _form(request, CREATE_FORM, INTERFACE_FORM, HELP_DESK_FORM, WORKLOG_FORM)
    rows, known = _rows(store, form)
    test = parse(request.query.get("q", ""), sorted(known), ENUMS)
    found = [row for row in rows if test(row)]
    for spec in reversed([s.strip() for s in request.query.get("sort", "").split(",") if s.strip()]):
        name, _, direction = spec.rpartition(".")
        if name not in known or direction.lower() not in ("asc", "desc"):
            raise RemedyError(400, 314, "Field does not exist on current form", spec)
        found.sort(key=_sort_key(name), reverse=direction.lower() == "desc")
    offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 100))
    page = found[offset : offset + limit]
    links: dict[str, Any] = {"self": [{"href": str(request.url)}]}
    if offset + limit < len(found):
        links["next"] = [{"href": str(request.url.update_query(offset=str(offset + limit)))}]
    entries = [_entry(request, form, row, known) for row in page]
    return web.json_response({"entries": entries, "_links": links})


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: str(row.get(name) or "")


async def _read(request: web.Request) -> web.Response:
    store = request.app[STORE]
    form = _form(request, INTERFACE_FORM, HELP_DESK_FORM, WORKLOG_FORM)
    rows, known = _rows(store, form)
    wanted = request.match_info["entry"].split("|", 1)[0]
    row = next((r for r in rows if str(r["Request ID"]).split("|", 1)[0] == wanted), None)
    if row is None:
        raise missing_entry(request.match_info["entry"])
    return web.json_response(_entry(request, form, row, known))


async def _human(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RemedyError(400, 8960, "Invalid JSON in the request body", None) from None
    if not isinstance(body, dict) or not isinstance(body.get("user"), str):
        raise RemedyError(400, 8961, 'send {"user": "...", "values"?: {...}, "work_log"?: "..."}', None)
    values = body.get("values") or {}
    work_log = body.get("work_log") if isinstance(body.get("work_log"), str) else None
    record = request.app[STORE].act_as_human(request.match_info["entry"], body["user"], work_log=work_log, **values)
    return web.json_response({"values": record})


async def _values(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RemedyError(400, 8960, "Invalid JSON in the request body", None) from None
    values = body.get("values") if isinstance(body, dict) else None
    if not isinstance(values, dict):
        raise RemedyError(400, 8961, "The request body needs a values object", None)
    return values


async def _create(request: web.Request) -> web.Response:
    store = request.app[STORE]
    form = _form(request, CREATE_FORM, WORKLOG_FORM)
    values = await _values(request)
    origin = request.url.origin()
    if form == WORKLOG_FORM:
        log_id = store.add_worklog(values)
        return web.Response(status=201, headers={"Location": f"{origin}/api/arsys/v1/entry/{form}/{log_id}"})
    create_id, record = store.create(values)
    location = f"{origin}/api/arsys/v1/entry/{form}/{create_id}"
    if "fields" not in request.query:
        return web.Response(status=201, headers={"Location": location})
    shown = {
        "Request ID": create_id,
        "Incident Number": record["Incident Number"],
        "Incident_Entry_ID": record["Request ID"],
        "Create Date": record["Submit Date"],
    }
    _, known = _rows(store, CREATE_FORM)
    body = {"values": _project(shown, request.query["fields"], known), "_links": {"self": [{"href": location}]}}
    return web.json_response(body, status=201, headers={"Location": location})


async def _update(request: web.Request) -> web.Response:
    store = request.app[STORE]
    _form(request, INTERFACE_FORM, HELP_DESK_FORM)
    store.update(request.match_info["entry"], await _values(request))
    return web.Response(status=204)


# -- test hooks and running it -------------------------------------------------------------------


async def _records(request: web.Request) -> web.Response:
    store = request.app[STORE]
    shown = [
        {"values": r, "worklogs": [w for w in store.worklogs if w["Incident Number"] == r["Incident Number"]]}
        for r in store.incidents.values()
    ]
    return web.json_response({"incidents": shown})


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests})


def run(host: str = "127.0.0.1", port: int = 8083, user: str = "Bridge", password: str = "bridge") -> None:
    web.run_app(make_app(user=user, password=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remedy-simulator", description="A local Remedy AR System REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--user", default="Bridge")
    parser.add_argument("--password", default="bridge")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.user, args.password)
    return 0


__all__ = ["FAULTS", "STORE", "TOKENS", "RemedyStore", "main", "make_app", "run"]

if __name__ == "__main__":
    raise SystemExit(main())


def _requests_of(request: web.Request) -> list[dict[str, Any]]:
    return request.app[STORE].requests


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _is_form_api(request: web.Request) -> bool:
    return request.path.startswith("/api/arsys/")  # not /api/jwt/login: its form holds the password
