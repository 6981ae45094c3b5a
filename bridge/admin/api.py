"""The admin API under /api/v1: incidents, silences and dead letters, behind a bearer token.

A sub-application mounted by `bridge.process.app.make_app`; errors leave through the same JSON
middleware as the rest. Its OpenAPI document is built in `bridge.admin.openapi` and served, without
auth, at /api/v1/openapi.json. The answers are those of `bridge.admin.incidents`,
`bridge.engine.silences` and `bridge.delivery.dlq`, the functions the CLI prints, so the API and
`bridge incidents|silences|dlq` agree.

Auth: `Authorization: Bearer <BRIDGE_ADMIN_TOKEN>`. With no token configured the API answers 403
`admin_api_disabled` (no credential could succeed, so 401's "authenticate and retry" would be a
lie); a missing or wrong token is 401 with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.admin import incidents, openapi
from bridge.admin.openapi import ResolveRequest, SilenceRequest
from bridge.core.config import parse_duration
from bridge.core.errors import AuthError, PayloadError, RequestError
from bridge.delivery import dlq
from bridge.engine.silences import Silence, Silences, new_silence
from bridge.runtime.context import RUNTIME, Runtime

log = structlog.get_logger("bridge.admin.api")
PREFIX = "/api/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class NotFound(RequestError):
    status, code = 404, "not_found"


class Conflict(RequestError):
    status, code = 409, "conflict"


class Disabled(RequestError):
    status, code = 403, "admin_api_disabled"


# --- helpers ---------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _runtime(request: web.Request) -> Runtime:
    return request.config_dict[RUNTIME]


async def _body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    raw = await request.read()
    if not raw.strip() and optional:
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PayloadError(f"{where}: {first['msg']}") from None


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    # ASCII digits only: str.isdigit() also takes '²' and '٣', which int() refuses or reads otherwise.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= 1000:
        raise PayloadError("limit must be an integer from 1 to 1000")
    return int(raw)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise PayloadError(f"{name} must be one of {', '.join(allowed)}")
    return value


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == PREFIX + "/openapi.json":
        return await handler(request)
    token = _runtime(request).admin_token
    if not token:
        raise Disabled(
            "the admin API is off: start the bridge with BRIDGE_ADMIN_TOKEN set, "
            "then send 'Authorization: Bearer <token>'"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )
    if not ok:
        answer = AuthError("send 'Authorization: Bearer <BRIDGE_ADMIN_TOKEN>'").body()
        response = _json(answer, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge-admin"'
        return response
    return await handler(request)


# --- incidents -------------------------------------------------------------------------------------


async def list_incidents(request: web.Request) -> web.Response:
    rt = _runtime(request)
    state = _choice(request, "state", openapi.INCIDENT_STATES)
    found = await incidents.list_incidents(
        rt.redis, state=state, route=request.query.get("route") or None, limit=_limit(request),
        bad_record=rt.bad_record,
    )  # fmt: skip
    return _json(found)


async def show_incident(request: web.Request) -> web.Response:
    rt = _runtime(request)
    found = await incidents.show_incident(rt.redis, request.match_info["id"], rt.bad_record)
    if found is None:
        raise NotFound(f"no incident {request.match_info['id']}")
    return _json(rt.masker.value(found))  # also what was stored before its secrets were masked


async def resolve_incident(request: web.Request) -> web.Response:
    rt = _runtime(request)
    body = await _body(request, ResolveRequest, optional=True)
    incident = request.match_info["id"]
    done = await incidents.resolve_incident(
        rt.redis, rt.scripts, incident, now_ms=rt.clock(), retention_ms=_retention(rt, incident),
        note=body.note, who=body.by or "api", shards=rt.shards,
    )  # fmt: skip
    if done.outcome == "not_found":
        raise NotFound(f"no incident {incident}")
    if not done.ok:
        raise Conflict(f"{done.incident} was not resolved: {done.outcome.replace('_', ' ')}")
    log.info("incident_resolved_by_hand", incident=done.incident, by=body.by or "api")
    return _json({"incident": done.incident, "outcome": done.outcome, "outbox": done.outbox_len}, 202)


def _retention(rt: Runtime, incident: str) -> int:
    """Keys of the resolved incident outlive its route's reopen window, as the timers' do."""
    route = incident.split(":", 1)[0]  # the route's id
    retired = rt.retired.get(route)
    found = rt.config.by_id(route) or (retired.route() if retired else None)
    reopen = found.lifecycle.reopen_within if found else 0.0
    return rt.tuning.retention_ms + int(reopen * 1000)


# --- silences --------------------------------------------------------------------------------------


async def list_silences(request: web.Request) -> web.Response:
    rt = _runtime(request)
    status = _choice(request, "status", openapi.SILENCE_STATES)
    now = rt.clock()
    views = [s.view(now) for s in await Silences(rt.redis, rt.bad_record).list()]
    return _json([v for v in views if status is None or v["status"] == status])


async def create_silence(request: web.Request) -> web.Response:
    rt = _runtime(request)
    silence = await make_silence(rt, await _body(request, SilenceRequest))
    await Silences(rt.redis, rt.bad_record).add(silence)
    log.info("silence_created", silence=silence.id, matchers=silence.matchers, by=silence.created_by)
    return _json(silence.view(rt.clock()), 201)


async def make_silence(rt: Runtime, body: SilenceRequest) -> Silence:
    """The silence a request asks for, validated; PayloadError saying what is wrong. The status page's
    form makes its silences with this too, so both refuse the same matchers in the same words."""
    try:
        duration = parse_duration(body.duration) if body.duration is not None else None
        silence = await asyncio.to_thread(  # its regexes compile off the event loop
            functools.partial(
                new_silence, body.matchers, now_ms=rt.clock(), duration_s=duration, starts_at=body.starts_at,
                ends_at=body.ends_at, comment=body.comment, created_by=body.created_by,
            )
        )  # fmt: skip
    except ValidationError as exc:
        raise PayloadError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    return silence


async def show_silence(request: web.Request) -> web.Response:
    rt = _runtime(request)
    found = await Silences(rt.redis, rt.bad_record).get(request.match_info["id"])
    if found is None:
        raise NotFound(f"no silence {request.match_info['id']}")
    return _json(found.view(rt.clock()))


async def expire_silence(request: web.Request) -> web.Response:
    rt = _runtime(request)
    silence_id = request.match_info["id"]
    if not await Silences(rt.redis, rt.bad_record).expire(silence_id, rt.clock()):
        raise NotFound(f"no silence {silence_id}")
    log.info("silence_expired", silence=silence_id)
    return _json({"id": silence_id, "expired": True})


# --- dead letters ----------------------------------------------------------------------------------


async def list_letters(request: web.Request) -> web.Response:
    rt = _runtime(request)
    kind = request.query.get("kind") or None
    after = request.query.get("after") or None
    if after is not None and not openapi.is_stream_id(after):
        raise PayloadError("after must be a dead-letter id such as 1700000000000-0")
    return _json(rt.masker.value(await dlq.list_letters(rt.redis, limit=_limit(request), kind=kind, after=after)))


def _letter_id(request: web.Request) -> str:
    letter_id = request.match_info["id"]
    if not openapi.is_stream_id(letter_id):
        raise NotFound(f"no dead letter {letter_id}")
    return letter_id


async def show_letter(request: web.Request) -> web.Response:
    letter_id = _letter_id(request)
    rt = _runtime(request)
    found = await dlq.get_letter(rt.redis, letter_id)
    if found is None:
        raise NotFound(f"no dead letter {letter_id}")
    return _json(rt.masker.value(found))


async def retry_letter(request: web.Request) -> web.Response:
    rt = _runtime(request)
    letter_id = _letter_id(request)
    outcome = await dlq.retry(rt.redis, letter_id, rt.clock(), rt.shards)
    if outcome is dlq.Retried.NOT_FOUND:
        raise NotFound(f"no dead letter {letter_id}")
    if outcome is dlq.Retried.NOT_RETRYABLE:
        raise Conflict(f"{letter_id} is not a desk or upstream call; fix the source or mapping, then drop it")
    log.info("dead_letter_retried", letter=letter_id)
    return _json({"id": letter_id, "outcome": outcome.value}, 202)


async def drop_letter(request: web.Request) -> web.Response:
    letter_id = _letter_id(request)
    if not await dlq.drop(_runtime(request).redis, letter_id):
        raise NotFound(f"no dead letter {letter_id}")
    log.info("dead_letter_dropped", letter=letter_id)
    return _json({"id": letter_id, "dropped": True})


async def openapi_document(request: web.Request) -> web.Response:
    return _json(openapi.document())


ROUTES: list[tuple[Literal["GET", "POST", "DELETE"], str, Handler]] = [
    ("GET", "/openapi.json", openapi_document),
    ("GET", "/incidents", list_incidents),
    ("GET", "/incidents/{id}", show_incident),
    ("POST", "/incidents/{id}/resolve", resolve_incident),
    ("GET", "/silences", list_silences),
    ("POST", "/silences", create_silence),
    ("GET", "/silences/{id}", show_silence),
    ("DELETE", "/silences/{id}", expire_silence),
    ("GET", "/dlq", list_letters),
    ("GET", "/dlq/{id}", show_letter),
    ("POST", "/dlq/{id}/retry", retry_letter),
    ("DELETE", "/dlq/{id}", drop_letter),
]


def make_api() -> web.Application:
    """The /api/v1 sub-application; the runtime is found through the parent app."""
    api = web.Application(middlewares=[bearer_auth])
    for method, path, handler in ROUTES:
        api.router.add_route(method, path, handler)
    return api


def mount(app: web.Application) -> None:
    app.add_subapp(PREFIX, make_api())
