"""The Opsgenie door: Opsgenie's Alert API v2 under `/opsgenie/{source}/`, so that a tool with an
Opsgenie integration keeps it by changing its API URL to `http://<bridge>/opsgenie/<source>/`.

    POST /opsgenie/{source}/v2/alerts                              create
    POST /opsgenie/{source}/v2/alerts/{identifier}/{action}        close, acknowledge, unacknowledge, notes
    PUT  /opsgenie/{source}/v2/alerts/{identifier}/{action}        message, description, priority
    GET  /opsgenie/{source}/v2/alerts/requests/{requestId}         what became of a call (Zabbix asks)
    GET|POST|PUT /opsgenie/{source}/v2/heartbeats/{name}/ping      a ping of the mapping's heartbeat `name`
    POST /opsgenie/{source}/v1/json/nagios (or icinga2)            Opsgenie's Nagios and Icinga 2 integration
                                                                   scripts (nagios2opsgenie), for a source of
                                                                   kind nagios or icinga2

`{source}` names a source of kind `opsgenie`; its secret is the API key (`Authorization: GenieKey
<key>`). `identifierType` is `id` (the default: the `alertId` a request's status names), `alias`, or
`tiny` (not kept by the bridge: refused). The call is read by the source's parser
(adapters/sources/opsgenie.py); what the door keeps is one record per alias (`keys.opsgenie_alert`:
its last create and its status, living `retention` after its last call), since Opsgenie's calls other
than create name only the alias. Each call is in the intake stream before it is answered, as at
/webhook/{source}.

Answers are Opsgenie's, so clients that read them keep working: 202 `{result, took, requestId}`;
errors `{message, took, requestId}` (a 422 adds `errors`, field by field) with the bridge's own
`error` code beside them (as every refusal of the bridge has one), 503 when Redis is unreachable or,
with BRIDGE_WAIT_REPLICAS, the replicas did not have the call in time (senders retry 5xx). A
`requestId` carries what became of the call, so its status is answered without state: `alertId` is
the alias in URL-safe base64.
Reference: https://docs.opsgenie.com/docs/alert-api; opsgenie/opsgenie-python-sdk `opsgenie-oas.yml`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.exceptions
import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.core import keys
from bridge.core.errors import AuthError, PayloadError, TooLarge
from bridge.core.models import stable_hash
from bridge.core.source import ParseContext, Parsed
from bridge.ingress.webhook import enqueue, read_bounded
from bridge.runtime import durability, heartbeats
from bridge.runtime.context import RUNTIME, Runtime
from bridge.runtime.heartbeats import take_pings
from bridge.runtime.http import json_response

log = structlog.get_logger("bridge.ingress.opsgenie")
KIND = "opsgenie"
POST_ACTIONS = ("close", "acknowledge", "unacknowledge", "notes")
PUT_ACTIONS = ("message", "description", "priority")
UNPROCESSABLE = "Request body is not processable. Please check the errors."
# What a request's status says it did, by action (Opsgenie's request-status wording).
DONE = {
    "create": ("Create", "Created alert"),
    "close": ("Close", "Closed alert"),
    "acknowledge": ("Acknowledge", "Acknowledged alert"),
    "unacknowledge": ("UnAcknowledge", "Unacknowledged alert"),
    "notes": ("AddNote", "Added note"),
    "message": ("UpdateMessage", "Updated alert message"),
    "description": ("UpdateDescription", "Updated alert description"),
    "priority": ("UpdatePriority", "Updated alert priority"),
}
# The bridge's error code of each refusal (bridge.core.errors), beside Opsgenie's `message`.
CODES = {
    400: "bad_payload",
    401: "unauthorized",
    404: "not_found",
    413: "payload_too_large",
    422: "unprocessable",
    503: "unavailable",
}


@dataclass(slots=True)
class _Call:
    """One request to the door: for `took`, and the request id that carries its outcome."""

    started: float
    action: str = ""
    alias: str = ""
    ok: bool = True
    status: str = ""

    def answer(self, body: dict[str, Any], status: int) -> web.Response:
        took = round(time.perf_counter() - self.started, 3)
        return json_response({**body, "took": took, "requestId": self.request_id()}, status)

    def request_id(self) -> str:
        record = [self.action, self.alias, self.ok, self.status, int(time.time() * 1000)]
        return _b64(orjson.dumps(record))

    def refused(self, status: int, message: str, errors: dict[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"message": message, "error": CODES.get(status, "bad_request")}
        if errors:
            body["errors"] = errors
        return self.answer(body, status)


async def create(request: web.Request) -> web.Response:
    """POST v2/alerts."""
    return await _alert_call(request, "create")


async def action(request: web.Request) -> web.Response:
    """POST v2/alerts/{identifier}/{action} (close, acknowledge, unacknowledge, notes); PUT for the updates."""
    name = request.match_info["action"]
    known = PUT_ACTIONS if request.method == "PUT" else POST_ACTIONS
    if name not in known:
        call = _Call(time.perf_counter())
        return call.refused(
            404, f"{request.method} v2/alerts/{{identifier}}/{name} is not an alert action the bridge takes"
        )
    return await _alert_call(request, name)


async def request_status(request: web.Request) -> web.Response:
    """GET v2/alerts/requests/{requestId}: what became of a call, read from its id."""
    call = _Call(time.perf_counter())
    runtime = request.app[RUNTIME]
    refused = _check_source(runtime, request, call)
    if refused is not None:
        return refused
    try:
        action_, alias, ok, status, at = orjson.loads(_unb64(request.match_info["request_id"]))
        verb = DONE[action_][0]
        processed = datetime.fromtimestamp(int(at) / 1000, UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError, OverflowError, OSError):
        return call.refused(404, "Request does not exist")
    data = {
        "success": bool(ok),
        "action": verb,
        "processedAt": processed,
        "integrationId": request.match_info["source"],
        "isSuccess": bool(ok),
        "status": str(status),
        "alertId": _b64(str(alias).encode()),
        "alias": str(alias),
    }
    return call.answer({"data": data}, 200)


async def _alert_call(request: web.Request, name: str) -> web.Response:
    call = _Call(time.perf_counter(), action=name)
    runtime = request.app[RUNTIME]
    refused = _check_source(runtime, request, call)
    if refused is not None:
        return refused
    source_name = request.match_info["source"]
    source = runtime.config.sources[source_name]
    adapter = runtime.sources[source_name]
    try:
        body = await _read(request, source.max_body)
    except TooLarge as exc:
        return call.refused(413, exc.detail)
    now = datetime.now(UTC)
    secret = source.secret_value()
    if secret and adapter.verify is not None:
        try:
            adapter.verify(body, request.headers, request.query, secret, now)
        except AuthError:
            return call.refused(401, "Could not authenticate")
    if body.strip():
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return call.refused(400, "Invalid JSON body")
        if not isinstance(doc, dict):
            return call.refused(400, "Invalid JSON body: expected a JSON object")

    params = {"action": name}
    if name != "create":
        identifier_type = request.query.get("identifierType", "id")
        if identifier_type == "tiny":
            problem = "tiny ids are not kept by the bridge: use the alias (identifierType=alias)"
            return call.refused(422, UNPROCESSABLE, {"identifierType": problem})
        if identifier_type not in ("id", "alias"):
            return call.refused(422, UNPROCESSABLE, {"identifierType": "should be one of [id, alias, tiny]"})
        identifier = request.match_info["identifier"]
        alias = identifier if identifier_type == "alias" else _alias_of(identifier)
        call.alias = alias or identifier
    try:
        ctx = ParseContext(source=source_name, received_at=now, options=source.options, params=params)
        if name == "create":
            parsed = adapter.parse(body, request.content_type, request.headers, ctx)
            call.alias = parsed.alerts[0].identity if parsed.alerts else ""
        record = await _record(runtime, source_name, call.alias) if call.alias else {}
        if record:
            params.update(previous=record.get("a", ""), status=record.get("s", ""))
            ctx = ParseContext(source=source_name, received_at=now, options=source.options, params=params)
        if name != "create" or record:
            parsed = adapter.parse(body, request.content_type, request.headers, ctx)
    except PayloadError as exc:
        field, _, problem = exc.detail.partition(": ")
        return call.refused(422, UNPROCESSABLE, {field: problem or exc.detail})
    except ValidationError as exc:  # what the Alert model refuses, from the parser
        return call.refused(422, UNPROCESSABLE, {"body": str(exc.errors()[0]["msg"])})
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unavailable(call, request, exc)

    if name == "create" and parsed.alerts:  # an alert that is a heartbeat's ping (a Watchdog) pings it
        try:
            pinged = await take_pings(runtime, parsed)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            return _unavailable(call, request, exc)
        if not pinged.alerts:
            call.status = DONE[name][1]
            return call.answer({"result": "Request will be processed"}, 202)
    if not parsed.alerts:  # an alias the bridge does not know, or an alert already closed
        call.ok = False
        call.status = (
            "Alert is already closed."
            if record.get("s") == "resolved"
            else f"There is no open alert with alias [{call.alias}]"
        )
        log.info("opsgenie_call_ignored", action=name, alias=call.alias[:80], why=call.status)
        return call.answer({"result": "Request will be processed"}, 202)
    try:
        await _apply(runtime, source_name, name, parsed, record)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unavailable(call, request, exc)
    except durability.NotReplicated as exc:  # in Redis, not yet in enough replicas: the client sends again
        return call.refused(503, exc.detail)
    runtime.metrics.received(source_name, parsed)
    call.status = DONE[name][1]
    return call.answer({"result": "Request will be processed"}, 202)


async def heartbeat_ping(request: web.Request) -> web.Response:
    """GET|POST|PUT v2/heartbeats/{name}/ping: a ping of the mapping's heartbeat of that name
    (bridge/runtime/heartbeats.py), its `key` labels from the query string; authenticated by the source's key."""
    call = _Call(time.perf_counter(), action="ping")
    runtime = request.app[RUNTIME]
    refused = _check_source(runtime, request, call)
    if refused is not None:
        return refused
    source_name, name = request.match_info["source"], request.match_info["name"]
    source = runtime.config.sources[source_name]
    adapter = runtime.sources[source_name]
    secret = source.secret_value()
    if secret and adapter.verify is not None:
        try:
            adapter.verify(b"", request.headers, request.query, secret, datetime.now(UTC))
        except AuthError:
            return call.refused(401, "Could not authenticate")
    beat = runtime.config.heartbeats.get(name)
    if beat is None:
        return call.refused(404, f"Heartbeat with name [{name}] does not exist")
    try:
        [done] = await heartbeats.ping(runtime, [(name, heartbeats.key_labels(beat, request.query))])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unavailable(call, request, exc)
    if done.outcome == "full":
        return call.refused(422, UNPROCESSABLE, {"key": f"more than max_keys ({beat.max_keys}) key label sets"})
    return call.answer({"result": "PONG - Heartbeat received"}, 202)


INTEGRATION_KINDS = ("nagios", "icinga2")


async def integration(request: web.Request) -> web.Response:
    """POST v1/json/{integration}: what Opsgenie's Nagios and Icinga 2 integration scripts post (their
    notification's fields as JSON, the API key among them as `apiKey`), to a source of kind nagios or
    icinga2, whose parser reads those names. Answered 200, as those scripts expect."""
    call = _Call(time.perf_counter(), action="create")
    runtime = request.app[RUNTIME]
    name = request.match_info["source"]
    source = runtime.config.sources.get(name)
    if source is None or source.kind not in INTEGRATION_KINDS:
        return call.refused(404, f"no source of kind nagios or icinga2 named {name!r} is configured")
    try:
        body = await _read(request, source.max_body)
    except TooLarge as exc:
        return call.refused(413, exc.detail)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return call.refused(400, "Invalid JSON body")
    if not isinstance(doc, dict):
        return call.refused(400, "Invalid JSON body: expected a JSON object")
    key = doc.pop("apiKey", "")
    secret = source.secret_value()
    given = key if isinstance(key, str) else ""
    if secret and not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
        return call.refused(401, "Could not authenticate")
    now = datetime.now(UTC)
    ctx = ParseContext(source=name, received_at=now, options=source.options)
    try:
        parsed = runtime.sources[name].parse(orjson.dumps(doc), "application/json", request.headers, ctx)
    except PayloadError as exc:
        return call.refused(422, UNPROCESSABLE, {"body": exc.detail})
    except ValidationError as exc:
        return call.refused(422, UNPROCESSABLE, {"body": str(exc.errors()[0]["msg"])})
    try:
        await enqueue(runtime, name, parsed)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unavailable(call, request, exc)
    except durability.NotReplicated as exc:
        return call.refused(503, exc.detail)
    runtime.metrics.received(name, parsed)
    call.status = DONE["create"][1]
    return call.answer({"result": "Request will be processed"}, 200)


def _check_source(runtime: Runtime, request: web.Request, call: _Call) -> web.Response | None:
    name = request.match_info["source"]
    source = runtime.config.sources.get(name)
    if source is None:
        return call.refused(404, f"no source named {name!r} is configured")
    if source.kind != KIND:
        return call.refused(404, f"source {name!r} is of kind {source.kind!r}: it takes POST /webhook/{name}")
    return None


async def _read(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"body of {length} bytes exceeds this source's limit of {limit}")
    return await request.read() if length is not None else await read_bounded(request, limit)


async def _record(runtime: Runtime, source: str, alias: str) -> dict[str, str]:
    """The door's record of an alias: `a` (its last create's Alert JSON), `s` (its status); {} if none."""
    found: dict[Any, Any] = await runtime.redis.hgetall(_key(source, alias))
    return {_s(k): _s(v) for k, v in found.items()}


async def _apply(runtime: Runtime, source: str, name: str, parsed: Parsed, record: dict[str, str]) -> None:
    """The alert into the intake stream and the record updated, in one round trip (bridge/runtime/batch.py);
    with BRIDGE_WAIT_REPLICAS, NotReplicated unless that many replicas have them (as at /webhook)."""
    alert = parsed.alerts[0]
    key = _key(source, alert.identity)
    pipe = runtime.redis.pipeline(transaction=False)
    stream = runtime.shards.intake_for(alert.identity)
    pipe.xadd(stream, {"a": alert.model_dump_json()})
    kept: dict[Any, Any] = {"s": alert.status.value}
    if name == "create" or name in PUT_ACTIONS or not record:
        kept["a"] = alert.model_copy(update={"event": None}).model_dump_json()
    pipe.hset(key, mapping=kept)
    pipe.pexpire(key, runtime.tuning.retention_ms)
    waits = durability.queue_wait(pipe, runtime.tuning, [stream])  # last: it covers every write before it
    replies = await runtime.scripts.execute(pipe)
    if waits:
        durability.replicated(replies[-waits:], runtime.tuning)


def _unavailable(call: _Call, request: web.Request, exc: Exception) -> web.Response:
    log.warning("redis_unavailable", error=str(exc), path=request.path)
    return call.refused(503, "state store unreachable, retry later")


def _key(source: str, alias: str) -> str:
    return keys.opsgenie_alert(source, stable_hash(alias, version="opsgenie", length=24))


def _alias_of(alert_id: str) -> str:
    """The alias an `alertId` stands for; "" for an id the bridge did not give."""
    try:
        return _unb64(alert_id).decode()
    except (ValueError, binascii.Error):
        return ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
