"""A local Zabbix JSON-RPC API, the part the loop back uses: `event.acknowledge` (and `apiinfo.version`).

Faithful to https://www.zabbix.com/documentation/current/en/manual/api and its frontend code (api_jsonrpc.php,
CJsonRpc, CEvent::acknowledge):

- `POST /api_jsonrpc.php`, Content-Type `application/json-rpc` (or `application/json`, `application/
  jsonrequest`); any other is 412 with no body. Every JSON-RPC answer is HTTP 200; an error is
  `{"jsonrpc": "2.0", "error": {"code", "message", "data"}, "id"}`.
- Auth: an API token as `Authorization: Bearer <token>` (6.4+), or the request's `auth` member (before 7.2;
  `version="7.2"` refuses it as -32600 "unexpected parameter \"auth\""). A wrong or missing token:
  -32602 "Invalid params." / "Not authorized.".
- event.acknowledge: `eventids` (string or list) and `action` (bitmask 1 close, 2 acknowledge, 4 message,
  8 severity, 16 unacknowledge, 32 suppress, 64 unsuppress, 128/256 rank) required; acknowledge together with
  unacknowledge, or an unknown bit, is -32602; `message` required (non-empty) with 4 and at most 2,048
  characters; any unknown, non-problem or hidden event id refuses the whole call with -32500 "Application
  error." / "No permissions to referred object or it does not exist!". Acknowledging an acknowledged event
  (or unacknowledging one that is not) is skipped, not an error. Answer: `{"eventids": [...]}`.

Events are seeded by tests (`app[STORE].add(eventid)`, or `POST /_sim/events` `{"eventid"}`); `GET
/_sim/events` shows them with their updates (`acknowledges`); `GET /_sim/requests` the calls (without the
token). The shared fault switches apply. As a process: `bridge simulate zabbix --port P` (the password is
the API token).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from adapters.simulators.faults import FAULTS, FaultAnswers, Faults, install
from adapters.simulators.requestlog import recorder

_CONTENT_TYPES = frozenset({"application/json-rpc", "application/json", "application/jsonrequest"})
_ALL_BITS = 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 | 256
MAX_MESSAGE = 2048


@dataclass
class ZabbixStore:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, eventid: str, *, value: int = 1, visible: bool = True) -> dict[str, Any]:
        """A trigger event: value 1 a problem (0 an OK event, which cannot be updated)."""
        event = {"eventid": eventid, "value": value, "acknowledged": 0, "acknowledges": [], "visible": visible}
        self.events[eventid] = event
        return event

    def reset(self) -> None:
        self.events.clear()
        self.requests.clear()


STORE = web.AppKey("zabbix_store", ZabbixStore)
_TOKEN = web.AppKey("zabbix_token", str)
_VERSION = web.AppKey("zabbix_version", str)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str) -> None:
        self.code, self.message, self.data = code, message, data
        super().__init__(data)


def _invalid(data: str) -> RpcError:
    return RpcError(-32602, "Invalid params.", data)


def _answer(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


FAULT_ANSWERS = FaultAnswers(
    unavailable=lambda: web.Response(status=503, text="<html><body>503 Service Unavailable</body></html>"),
    rate_limited=lambda s: web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(s)}),
    auth_expired=lambda: _answer(
        {"jsonrpc": "2.0", "error": {"code": -32602, "message": "Invalid params.", "data": "Not authorized."}, "id": 1}
    ),
)


def make_app(*, token: str = "zabbix-token", version: str = "7.0", faults: Faults | None = None) -> web.Application:
    store = ZabbixStore()
    app = web.Application(
        middlewares=[recorder(lambda r: r.path == "/api_jsonrpc.php", lambda r: r.app[STORE].requests)]
    )
    app[STORE], app[_TOKEN], app[_VERSION] = store, token, version
    install(app, faults if faults is not None else Faults(), FAULT_ANSWERS, on_reset=store.reset)
    app.router.add_post("/api_jsonrpc.php", _rpc)
    app.router.add_get("/_sim/events", _events)
    app.router.add_post("/_sim/events", _add_event)
    app.router.add_get("/_sim/requests", _requests)
    return app


async def _rpc(request: web.Request) -> web.Response:
    if request.content_type not in _CONTENT_TYPES:
        return web.Response(status=412)
    request_id: Any = None
    try:
        try:
            call = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise RpcError(
                -32700, "Parse error.", "Invalid JSON. An error occurred on the server while parsing the JSON text."
            ) from None
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or not isinstance(call.get("method"), str):
            raise RpcError(-32600, "Invalid request.", 'Invalid parameter "/": the parameter "jsonrpc" is missing.')
        request_id = call.get("id")
        if "auth" in call and request.app[_VERSION] >= "7.2":
            raise RpcError(-32600, "Invalid request.", 'Invalid parameter "/": unexpected parameter "auth".')
        for entry in request.app[STORE].requests[-1:]:
            if isinstance(entry.get("body"), dict) and "auth" in entry["body"]:
                entry["body"]["auth"] = "********"  # the record never keeps the token
        method = call["method"]
        if method == "apiinfo.version":
            return _answer({"jsonrpc": "2.0", "result": request.app[_VERSION] + ".0", "id": request_id})
        bearer = request.headers.get("Authorization", "")
        given = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else call.get("auth")
        if given != request.app[_TOKEN]:
            raise _invalid("Not authorized.")
        if method != "event.acknowledge":
            raise RpcError(-32601, "Method not found.", f'Incorrect API "{method.split(".")[0]}".')
        result = _acknowledge(request.app[STORE], call.get("params"))
        return _answer({"jsonrpc": "2.0", "result": result, "id": request_id})
    except RpcError as exc:
        error = {"code": exc.code, "message": exc.message, "data": exc.data}
        return _answer({"jsonrpc": "2.0", "error": error, "id": request_id})


def _acknowledge(store: ZabbixStore, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise _invalid('Invalid parameter "/": an array or object is expected.')
    unknown = sorted(set(params) - {"eventids", "action", "message", "severity", "suppress_until", "cause_eventid"})
    if unknown:
        raise _invalid(f'Invalid parameter "/": unexpected parameter "{unknown[0]}".')
    if "eventids" not in params:
        raise _invalid('Invalid parameter "/": the parameter "eventids" is missing.')
    if "action" not in params:
        raise _invalid('Invalid parameter "/": the parameter "action" is missing.')
    raw_ids = params["eventids"] if isinstance(params["eventids"], list) else [params["eventids"]]
    ids = [str(i) for i in raw_ids]
    if not ids or not all(i.isdigit() for i in ids):
        raise _invalid('Invalid parameter "/eventids/1": a number is expected.')
    action = params["action"]
    if not isinstance(action, int) or action <= 0 or action & ~_ALL_BITS:
        raise _invalid(f'Invalid parameter "/action": value must be one of 1-{_ALL_BITS}.')
    if action & 2 and action & 16:
        raise _invalid('Invalid parameter "/action": value must be one of 2, 16.')
    message = params.get("message", "")
    if action & 4:
        if not isinstance(message, str) or message == "":
            raise _invalid('Invalid parameter "/message": cannot be empty.')
        if len(message) > MAX_MESSAGE:
            raise _invalid('Invalid parameter "/message": value is too long.')
    events = [store.events.get(i) for i in dict.fromkeys(ids)]
    if any(e is None or e["value"] != 1 or not e["visible"] for e in events):
        raise RpcError(-32500, "Application error.", "No permissions to referred object or it does not exist!")
    for event in events:
        assert event is not None
        if action & 2:
            event["acknowledged"] = 1
        if action & 16:
            event["acknowledged"] = 0
        event["acknowledges"].append({"action": action, "message": message if action & 4 else ""})
    return {"eventids": [int(i) for i in dict.fromkeys(ids)]}


async def _events(request: web.Request) -> web.Response:
    return web.json_response({"events": list(request.app[STORE].events.values())})


async def _add_event(request: web.Request) -> web.Response:
    body = await request.json()
    event = request.app[STORE].add(str(body["eventid"]), value=int(body.get("value", 1)))
    return web.json_response(event, status=201)


async def _requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STORE].requests})


def run(host: str = "127.0.0.1", port: int = 8090, user: str = "Admin", password: str = "zabbix-token") -> None:
    """Serve until interrupted; `password` is the API token (`user` is not used)."""
    web.run_app(make_app(token=password), host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zabbix-simulator", description="A local Zabbix event.acknowledge API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--password", default="zabbix-token", help="the API token")
    args = parser.parse_args(argv)
    run(args.host, args.port, password=args.password)
    return 0


__all__ = ["FAULTS", "STORE", "ZabbixStore", "main", "make_app", "run"]

if __name__ == "__main__":
    raise SystemExit(main())
