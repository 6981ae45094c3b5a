"""Ingress of the loop back: POST /desk-events/{desk} -> auth -> size -> content type -> the desk's
`parse_events` -> XADD (the `deskevents` stream) -> 202.

As /webhook/{source}: a change is answered 202 only once it is durable in Redis; the engine applies it
(bridge/engine/desk_events.py), on whichever replica reads it. Authenticated by the desk's `sync:` section
(a bearer token, or an HMAC-SHA256 of the body in a header); a desk without a secret takes no pushes
unless the bridge runs with --allow-unauthenticated.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

import structlog
from aiohttp import web

from bridge.core import keys
from bridge.core.errors import AuthError, PayloadError, TooLarge, UnsupportedMedia
from bridge.ingress.webhook import check_bearer, read_bounded
from bridge.runtime import durability, sync
from bridge.runtime.context import RUNTIME
from bridge.runtime.http import json_response

log = structlog.get_logger("bridge.ingress.desk_events")
CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded", "text/plain"})


async def desk_events(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = request.match_info["desk"]
    desk = runtime.desks.get(name)
    parse = getattr(desk, "parse_events", None)
    if desk is None or not callable(parse):
        detail = f"no desk named {name!r} is configured" if desk is None else f"desk {name!r} takes no pushed events"
        return json_response({"error": "unknown_desk", "detail": detail}, 404)
    settings = runtime.config.sync.get(name)
    secret = settings.secret_value() if settings else ""
    if not secret and not runtime.allow_unauthenticated:
        raise AuthError(f"desk {name!r} has no sync.secret: pushes are refused (or run with --allow-unauthenticated)")
    if secret and (settings is None or settings.auth == "bearer"):
        check_bearer(request.headers.get("Authorization", ""), secret)
    limit = settings.max_body if settings else 1 << 20
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"body of {length} bytes exceeds this desk's limit of {limit}")
    if request.content_type not in CONTENT_TYPES:
        raise UnsupportedMedia(f"Content-Type {request.content_type!r} not accepted; use application/json")
    body = await read_bounded(request, limit)
    if not body:
        raise PayloadError("empty body")
    if secret and settings is not None and settings.auth == "hmac":
        check_hmac(request.headers.get(settings.header, ""), body, secret)
    events = parse(body, request.headers)
    events = [e if e.desk == name else replace(e, desk=name) for e in events]
    pipe = runtime.redis.pipeline(transaction=False)
    sync.queue_events(pipe, events)
    waits = durability.queue_wait(pipe, runtime.tuning, [keys.DESK_EVENTS])  # on a cluster: its master's replicas
    replies = await runtime.scripts.execute(pipe)
    if waits:
        durability.replicated(replies[-waits:], runtime.tuning)
    for event in events:
        runtime.metrics.sync_received.labels(name, event.kind.value, "push").inc()
    log.debug("desk_events_accepted", desk=name, accepted=len(events))
    return json_response({"accepted": len(events)}, 202)


def check_hmac(header: str, body: bytes, secret: str) -> None:
    """The header holds the hex HMAC-SHA256 of the body under the secret (`sha256=` before it allowed)."""
    given = header.strip().removeprefix("sha256=").encode("utf-8", "surrogateescape")
    if not given:
        raise AuthError("missing signature header")
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(given.lower(), want):
        raise AuthError("signature does not match the body under this desk's sync.secret")
