"""The HTTP boundary every endpoint shares: JSON answers, and errors as `{"error", "detail"}`.

A refused request (`RequestError`) answers its own status; Redis unreachable answers 503 so the
sender retries; anything else is logged with its traceback and answers a plain 500, never the trace.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.exceptions
import structlog
from aiohttp import web

from bridge.core import logs
from bridge.core.errors import RequestError

log = structlog.get_logger("bridge.runtime.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"error", "detail"}`; nothing leaves as a traceback.

    The request's log lines carry its id (the sender's `X-Request-Id`, else a random one) and the
    source it posts to; both are unbound after it, as the next request on a kept-alive connection
    runs in the same task."""
    request_id = request.headers.get("X-Request-Id") or f"{random.getrandbits(64):016x}"  # not a secret
    source = request.match_info.get("source")
    with logs.bound(request_id=request_id, **({"source": source} if source else {})):
        try:
            return await handler(request)
        except RequestError as exc:
            log.info("request_refused", status=exc.status, error=exc.code, detail=exc.detail, path=request.path)
            return json_response(exc.body(), exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_response({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.text or ""}, exc.status)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("redis_unavailable", error=str(exc), path=request.path)
            return json_response({"error": "unavailable", "detail": "state store unreachable, retry later"}, 503)
        except Exception:
            log.exception("request_failed", path=request.path)
            return json_response({"error": "internal", "detail": "internal error, see the bridge's log"}, 500)
