"""A local Icinga 2 REST API, the part the loop back uses: acknowledge-problem, remove-acknowledgement, add-comment.

Faithful to https://icinga.com/docs/icinga-2/latest/doc/12-icinga2-api/ and its code (lib/remote/
actionshandler.cpp, lib/icinga/apiactions.cpp, lib/remote/httpserverconnection.cpp, as of v2.15):

- Basic auth; a wrong or missing one is 401 with `WWW-Authenticate: Basic realm="Icinga 2"` and, when the
  client accepts JSON, `{"error": 401, "status": "Unauthorized. Please check your user credentials."}`.
- A POST without `Accept: application/json` is 400 with an HTML body.
- `POST /v1/actions/<action>`: parameters from the query string and the JSON body, merged; the objects by the
  simple filter (`type` and `host`/`hosts` or `service`/`services`, a service named `<host>!<service>`);
  `filter` expressions are not evaluated by the simulator (400). No such object: 404 `{"error": 404, "status":
  "No objects found."}`; an unknown action: 404 `"Action '<name>' does not exist."`.
- One result `{"code", "status"}` per object; the HTTP status from them: the one 2xx code when all
  succeeded, the one error code when there is one kind, else 500.
- acknowledge-problem: 400 result without author or comment; 409 when the object is OK/UP ("Service h!s is
  OK."), already acknowledged ("... is already acknowledged.") or the expiry is not in the future.

Objects are seeded by tests (`app[STORE].add(...)`, or `POST /_sim/objects` `{"host", "service"?, "state"}`);
`GET /_sim/objects` shows them with their acknowledgement and comments; `GET /_sim/requests` the calls.
The shared fault switches apply. As a process: `bridge simulate icinga2 --port P` (user and password).
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.requestlog import recorder

_ACTIONS = ("acknowledge-problem", "remove-acknowledgement", "add-comment")


@dataclass
class IcingaStore:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # full name -> object
    requests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, host: str, service: str = "", state: int = 2) -> dict[str, Any]:
        """A host (state 0 UP, 1 DOWN) or service (0 OK .. 3 UNKNOWN) object; its host is made UP if missing."""
        if service and host not in self.objects:
            self.add(host, state=0)
        name = f"{host}!{service}" if service else host
        obj: dict[str, Any] = {"name": name, "type": "Service" if service else "Host", "state": state}
        obj |= {"acknowledgement": 0, "acknowledgement_expiry": 0, "ack": None, "comments": []}
        self.objects[name] = obj
        return obj

    def reset(self) -> None:
        self.objects.clear()
        self.requests.clear()


STORE = web.AppKey("icinga_store", IcingaStore)
_AUTH = web.AppKey("icinga_auth", list)  # [the Authorization header it takes]: `set_password` changes it


def _error(code: int, status: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "status": status}, status=code, headers=headers)


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: _error(503, "Shutting down."),
    rate_limited=lambda s: _error(429, "Too many requests.", {"Retry-After": str(s)}),
    auth_expired=lambda: _error(401, "Unauthorized. Please check your user credentials."),
)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def set_password(app: web.Application, user: str, password: str) -> None:
    """The API user's password changed (as an operator would fix it) while the simulator runs."""
    app[_AUTH][0] = _basic(user, password)


def make_app(*, user: str = "root", password: str = "icinga", faults: Faults | None = None) -> web.Application:
    store = IcingaStore()
    app = web.Application(middlewares=[recorder(lambda r: r.path.startswith("/v1/"), lambda r: r.app[STORE].requests)])
    app[STORE] = store
    app[_AUTH] = [_basic(user, password)]
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=store.reset)
    app.middlewares.append(_authenticate)
    app.router.add_post("/v1/actions/{action}", _action)
    app.router.add_get("/_sim/objects", _objects)
    app.router.add_post("/_sim/objects", _add_object)
    app.router.add_get("/_sim/requests", _requests)
    return app


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    wants_json = request.headers.get("Accept") == "application/json"
    if request.headers.get("Authorization") != request.app[_AUTH][0]:
        headers = {"WWW-Authenticate": 'Basic realm="Icinga 2"'}
        if wants_json:
            return _error(401, "Unauthorized. Please check your user credentials.", headers)
        body = "<h1>Unauthorized. Please check your user credentials.</h1>"
        return web.Response(status=401, text=body, content_type="text/html", headers=headers)
    if request.method != "GET" and not wants_json:
        body = "<h1>Accept header is missing or not set to 'application/json'.</h1>"
        return web.Response(status=400, text=body, content_type="text/html")
    return await handler(request)


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if raw:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(
                text=orjson.dumps({"error": 400, "status": "Invalid request body: Error: lexical error"}).decode(),
                content_type="application/json",
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text='{"error":400,"status":"Invalid request body"}', content_type="application/json"
            )
        params.update(body)
    return params


def _targets(store: IcingaStore, params: dict[str, Any]) -> list[dict[str, Any]]:
    kind = str(params.get("type", ""))
    if "filter" in params:
        raise web.HTTPBadRequest(
            text='{"error":400,"status":"the simulator evaluates no filter expressions"}',
            content_type="application/json",
        )
    names: list[str] = []
    for key, type_name in (("host", "Host"), ("service", "Service")):
        plural = key + "s"
        if key in params or plural in params:
            kind = kind or type_name
            if kind != type_name:
                return []
            one = params.get(key)
            many = params.get(plural, [])
            names += ([str(one)] if one is not None else []) + [
                str(n) for n in (many if isinstance(many, list) else [many])
            ]
    if kind not in ("Host", "Service"):
        return []
    if not names:  # no name: every object of the type (what Icinga does without a filter)
        return [o for o in store.objects.values() if o["type"] == kind]
    found = [store.objects.get(n) for n in names]
    if any(o is None or o["type"] != kind for o in found):
        return []  # Icinga: "Object does not exist" -> caught -> "No objects found."
    return [o for o in found if o is not None]


async def _action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in _ACTIONS:
        return _error(404, f"Action '{action}' does not exist.")
    params = await _params(request)
    targets = _targets(request.app[STORE], params)
    if not targets:
        return _error(404, "No objects found.")
    results = [_ACT[action](obj, params) for obj in targets]
    ok = {r["code"] for r in results if 200 <= r["code"] < 300}
    bad = {r["code"] for r in results if not 200 <= r["code"] < 300}
    status = 500
    if len(ok) == 1 and not bad:
        status = next(iter(ok))
    elif len(bad) == 1:
        status = next(iter(bad))
    elif len(ok) >= 2 and not bad:
        status = 200
    return web.json_response({"results": results}, status=status)


def _acknowledge(obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    name, is_service = obj["name"], obj["type"] == "Service"
    if "author" not in params or "comment" not in params:
        return {"code": 400, "status": "Acknowledgements require author and comment."}
    expiry = float(params.get("expiry", 0) or 0)
    if "expiry" in params and expiry <= time.time():
        return {"code": 409, "status": f"Acknowledgement 'expiry' timestamp must be in the future for object {name}"}
    if obj["state"] == 0:
        return {
            "code": 409,
            "status": f"{'Service' if is_service else 'Host'} {name} is {'OK' if is_service else 'UP'}.",
        }
    if obj["acknowledgement"]:
        return {"code": 409, "status": f"{'Service ' if is_service else 'Host '}{name} is already acknowledged."}
    sticky = bool(params.get("sticky", False))
    obj["acknowledgement"], obj["acknowledgement_expiry"] = (2 if sticky else 1), expiry
    obj["ack"] = {key: params.get(key) for key in ("author", "comment", "sticky", "notify", "persistent", "expiry")}
    obj["comments"].append({"entry_type": 4, "author": params["author"], "text": params["comment"]})
    return {"code": 200, "status": f"Successfully acknowledged problem for object '{name}'."}


def _remove(obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    obj["acknowledgement"], obj["acknowledgement_expiry"], obj["ack"] = 0, 0, None
    obj["comments"] = [c for c in obj["comments"] if c["entry_type"] != 4]
    return {"code": 200, "status": f"Successfully removed acknowledgement for object '{obj['name']}'."}


def _comment(obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if "author" not in params or "comment" not in params:
        return {"code": 400, "status": "Comments require author and comment."}
    comment_name = f"{obj['name']}!sim-{len(obj['comments']) + 1}"
    obj["comments"].append({"entry_type": 1, "author": params["author"], "text": params["comment"]})
    return {"code": 200, "legacy_id": len(obj["comments"]), "name": comment_name,
            "status": f"Successfully added comment '{comment_name}' for object '{obj['name']}'."}  # fmt: skip


_ACT = {"acknowledge-problem": _acknowledge, "remove-acknowledgement": _remove, "add-comment": _comment}


async def _objects(request: web.Request) -> web.Response:
    return web.json_response({"objects": list(request.app[STORE].objects.values())})


async def _add_object(request: web.Request) -> web.Response:
    body = await request.json()
    obj = request.app[STORE].add(str(body["host"]), str(body.get("service", "")), int(body.get("state", 2)))
    return web.json_response(obj, status=201)


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests})


def run(host: str = "127.0.0.1", port: int = 5665, user: str = "root", password: str = "icinga") -> None:
    """Serve until interrupted (plain http: the bridge's TLS is tested against the desk simulators)."""
    web.run_app(make_app(user=user, password=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="icinga2-simulator", description="A local Icinga 2 actions API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5665)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default="icinga")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.user, args.password)
    return 0


__all__ = ["FAULTS", "STORE", "IcingaStore", "main", "make_app", "run"]

if __name__ == "__main__":
    raise SystemExit(main())
