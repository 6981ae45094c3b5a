"""A local in-house ticketing API, the kind the generic webhook desk is for.

It stands for a typical small REST service (there is no vendor to be faithful to, so it is
faithful to the common shape): Bearer token auth; JSON errors `{"error": {"code", "message"}}`;

    POST  /api/tickets                 {"title", "description"?, "priority"? P1-P4, "correlation_id"?,
                                        "tags"? [..]} -> 201 {"ticket": {...}} + Location
    GET   /api/tickets?correlation_id= -> {"tickets": [...]} newest first (also ?status=)
    GET   /api/tickets/{id}            -> {"ticket": {...}}
    PATCH /api/tickets/{id}            {"status"? open|resolved|closed, "resolution"?, "comment"?,
                                        "title"?, ...} -> 200 {"ticket": {...}}; a comment is added to
                                        the comments; resolved needs a resolution (400); closed
                                        tickets are read-only (409)
    POST  /api/tickets/{id}/comments   {"body"} -> 201 {"comment": {...}}

    GET   /api/tickets/changes?since=<epoch ms>&cursor=&limit=
                                    -> {"events": [...], "next": "<cursor>" | null}: every change
                                       at or after `since`, oldest first (the loop back's poll)

Every change (create excepted) is also a change record in the generic desk's documented format
(adapters.desks.webhook: id, ticket, display, at, author, status, previous_status, comment,
assignee, correlation_id), kept for `/changes` and pushed as `{"events": [change]}` to the target
of `POST /_sim/push` `{"url", "headers"?}` (`app[PUSH]`). The API's changes are by `user` (the
token's owner, "bridge"); `POST /_sim/human/{id}` `{"user", "status"?, "comment"?, "assignee"?,
"resolution"?}` is a person's (`TicketStore.act_as_human`).

Unknown body keys are a 400 (`validation_failed`), an unknown id a 404, `read_only` a 403. Ticket
ids are integers; numbers read `T-0001`. The shared fault switches apply.
Test hooks: `GET /_sim/tickets`, `GET /_sim/requests`, `/_sim/faults`, `/_sim/reset`; in-process
`app[STORE]`. As a process: `bridge simulate webhook --port P` (the token is the password).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.pusher import Pusher
from adapters.simulators.requestlog import recorder

_FIELDS = frozenset({"title", "description", "priority", "correlation_id", "tags", "assignee"})
_PRIORITIES = frozenset({"P1", "P2", "P3", "P4"})
_STATUSES = frozenset({"open", "in_progress", "resolved", "closed", "cancelled"})


class TicketError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(message)

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status, headers=headers)


@dataclass
class TicketStore:
    read_only: bool = False
    user: str = "bridge"  # the API token's owner
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # the loop back's change records
    on_change: list[Any] = field(default_factory=list)  # callables taking each change record
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _comments: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changes: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        self.tickets.clear()
        self.requests.clear()
        self.changes.clear()
        self.read_only = False
        self._ids, self._comments, self._changes = itertools.count(1), itertools.count(1), itertools.count(1)

    def changed(self, ticket: dict[str, Any], previous: str, author: str, comment: str = "") -> None:
        """Keep (and push) one change record of `ticket`, whose status was `previous` before it."""
        record = {
            "id": f"chg-{next(self._changes)}",
            "ticket": str(ticket["id"]),
            "display": ticket["number"],
            "at": _now_ms(),
            "author": author,
            "status": ticket["status"],
            "previous_status": previous,
            "assignee": ticket["assignee"],
            "correlation_id": ticket["correlation_id"],
        } | ({"comment": comment} if comment else {})
        self.changes.append(record)
        for listener in self.on_change:
            listener(record)

    def act_as_human(self, raw_id: str, user: str, **change: str) -> dict[str, Any]:
        """A person's change: status (open, in_progress, resolved with a resolution, closed,
        cancelled), comment, assignee; the API's rules apply."""
        return apply_update(self, self.get(raw_id), dict(change), user)

    def get(self, raw: str) -> dict[str, Any]:
        ticket = self.tickets.get(int(raw)) if raw.isdigit() else None
        if ticket is None:
            raise TicketError(404, "not_found", f"ticket {raw} does not exist")
        return ticket

    def writable(self) -> None:
        if self.read_only:
            raise TicketError(403, "forbidden", "this token may not write tickets")


STORE = web.AppKey("tickets_store", TicketStore)
PUSH = web.AppKey("tickets_push", Pusher)
_TOKEN = web.AppKey("tickets_token", str)


def make_app(*, token: str = "ticket-token", faults: Faults | None = None) -> web.Application:
    store = TicketStore()
    app = web.Application(middlewares=[recorder(lambda r: r.path.startswith("/api/"), _requests_of), _errors])
    app[STORE], app[_TOKEN] = store, token
    push = Pusher()
    app[PUSH] = push
    store.on_change.append(lambda record: push.push({"events": [record]}))
    app.on_cleanup.append(lambda _: push.aclose())
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=store.reset)
    app.middlewares.append(_authenticate)
    app.router.add_post("/api/tickets", _create)
    app.router.add_get("/api/tickets", _list)
    app.router.add_get("/api/tickets/changes", _changes)
    app.router.add_get("/api/tickets/{id}", _read)
    app.router.add_patch("/api/tickets/{id}", _update)
    app.router.add_post("/api/tickets/{id}/comments", _comment)
    app.router.add_get("/_sim/tickets", _all)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/human/{id}", _human)
    app.router.add_post("/_sim/push", _push_target)
    return app


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: TicketError(503, "unavailable", "try again later").response(),
    rate_limited=lambda s: TicketError(429, "rate_limited", "too many requests").response({"Retry-After": str(s)}),
    auth_expired=lambda: TicketError(401, "unauthorized", "token expired or invalid").response(),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TicketError as exc:
        return exc.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if not request.path.startswith("/api/"):
            raise
        return TicketError(exc.status, "no_route", f"{request.method} {request.path} is not served").response()


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.headers.get("Authorization") != f"Bearer {request.app[_TOKEN]}":
        return TicketError(401, "unauthorized", "token expired or invalid").response()
    return await handler(request)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _now_ms() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise TicketError(400, "bad_json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise TicketError(400, "bad_json", "the body must be a JSON object")
    return body


def _check(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise TicketError(400, "validation_failed", f"unknown fields: {', '.join(unknown)}")
    if "priority" in body and body["priority"] not in _PRIORITIES:
        raise TicketError(400, "validation_failed", "priority must be one of P1, P2, P3, P4")
    if "tags" in body and not (isinstance(body["tags"], list) and all(isinstance(t, str) for t in body["tags"])):
        raise TicketError(400, "validation_failed", "tags must be a list of strings")
    wrong = [k for k, v in body.items() if k != "tags" and not isinstance(v, str)]
    if wrong:
        raise TicketError(400, "validation_failed", f"{', '.join(wrong)} must be strings")


async def _create(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.writable()
    body = await _body(request)
    _check(body, _FIELDS)
    if not str(body.get("title", "")).strip():
        raise TicketError(400, "validation_failed", "title is required")
    ticket_id = next(store._ids)
    when = _now()
    ticket = {"description": "", "priority": "P3", "correlation_id": "", "tags": [], "assignee": ""} | body
    ticket |= {"id": ticket_id, "number": f"T-{ticket_id:04d}", "status": "open", "resolution": ""}
    ticket |= {"created_at": when, "updated_at": when, "comments": []}
    store.tickets[ticket_id] = ticket
    location = f"{request.url.origin()}/api/tickets/{ticket_id}"
    return web.json_response({"ticket": ticket}, status=201, headers={"Location": location})


async def _list(request: web.Request) -> web.Response:
    store = request.app[STORE]
    found = [
        t
        for t in reversed(store.tickets.values())
        if all(str(t.get(k)) == v for k, v in request.query.items() if k in ("correlation_id", "status"))
    ]
    return web.json_response({"tickets": found})


async def _read(request: web.Request) -> web.Response:
    return web.json_response({"ticket": request.app[STORE].get(request.match_info["id"])})


async def _update(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.writable()
    ticket = store.get(request.match_info["id"])
    body = await _body(request)
    return web.json_response({"ticket": apply_update(store, ticket, body, store.user)})


def apply_update(store: TicketStore, ticket: dict[str, Any], body: dict[str, Any], author: str) -> dict[str, Any]:
    _check(body, _FIELDS | {"status", "resolution", "comment"})
    if ticket["status"] == "closed":
        raise TicketError(409, "closed", f"ticket {ticket['number']} is closed")
    status = body.get("status", ticket["status"])
    if status not in _STATUSES:
        raise TicketError(400, "validation_failed", "status must be " + ", ".join(sorted(_STATUSES)))
    if status == "resolved" and ticket["status"] != "resolved" and not body.get("resolution"):
        raise TicketError(400, "validation_failed", "resolution is required to resolve a ticket")
    previous = ticket["status"]
    comment = body.pop("comment", "")
    ticket.update(body)
    if comment:
        ticket["comments"].append({"id": next(store._comments), "body": comment, "created_at": _now()})
    if status == "open":
        ticket["resolution"] = ""
    ticket["updated_at"] = _now()
    store.changed(ticket, previous, author, comment)
    return ticket


async def _comment(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.writable()
    ticket = store.get(request.match_info["id"])
    body = await _body(request)
    if set(body) != {"body"} or not isinstance(body["body"], str) or not body["body"].strip():
        raise TicketError(400, "validation_failed", 'a comment is {"body": non-empty text}')
    comment = {"id": next(store._comments), "body": body["body"], "created_at": _now()}
    ticket["comments"].append(comment)
    store.changed(ticket, ticket["status"], store.user, body["body"])
    return web.json_response({"comment": comment}, status=201)


async def _changes(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        since = int(request.query.get("since") or 0)
        start = int(request.query.get("cursor") or 0)
        limit = max(1, min(500, int(request.query.get("limit") or 100)))
    except ValueError:
        raise TicketError(400, "validation_failed", "since, cursor and limit are integers") from None
    found = [c for c in store.changes if _ms(c["at"]) >= since]
    page = found[start : start + limit]
    more = start + limit < len(found)
    return web.json_response({"events": page, "next": str(start + limit) if more else None})


def _ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


async def _human(request: web.Request) -> web.Response:
    body = await _body(request)
    user = body.pop("user", None)
    if not isinstance(user, str):
        raise TicketError(400, "validation_failed", 'send {"user": "...", "status"?, "comment"?, "assignee"?}')
    return web.json_response({"ticket": request.app[STORE].act_as_human(request.match_info["id"], user, **body)})


async def _push_target(request: web.Request) -> web.Response:
    body = await _body(request)
    headers = body.get("headers") or {}
    request.app[PUSH].target(str(body.get("url", "")), {str(k): str(v) for k, v in headers.items()})
    return web.json_response({"url": request.app[PUSH].url})


async def _all(request: web.Request) -> web.Response:
    return web.json_response({"tickets": list(request.app[STORE].tickets.values())})


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests})


def run(host: str = "127.0.0.1", port: int = 8084, user: str = "admin", password: str = "ticket-token") -> None:
    """Serve until interrupted; `password` is the Bearer token (`user` is not used)."""
    web.run_app(make_app(token=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tickets-simulator", description="A local in-house ticketing API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8084)
    parser.add_argument("--password", default="ticket-token", help="the Bearer token")
    args = parser.parse_args(argv)
    run(args.host, args.port, password=args.password)
    return 0


__all__ = ["FAULTS", "PUSH", "STORE", "TicketStore", "apply_update", "main", "make_app", "run"]

if __name__ == "__main__":
    raise SystemExit(main())


def _requests_of(request: web.Request) -> list[dict[str, Any]]:
    return request.app[STORE].requests
