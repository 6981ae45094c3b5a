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
from aiohttp.web_protocol import RequestPayloadError

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
    source it posts to, worked out at its first line (`RequestFields`); both are unbound after it,
    as the next request on a kept-alive connection runs in the same task."""
    with logs.lazily(RequestFields(request)):
        try:
            return await handler(request)
        except RequestError as exc:
            log.info("request_refused", status=exc.status, error=exc.code, detail=exc.detail, path=request.path)
            return json_response(exc.body(), exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_response({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.text or ""}, exc.status)
        except (RequestPayloadError, ConnectionResetError) as exc:
            return _unreadable(request, exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("redis_unavailable", error=str(exc), path=request.path)
            return json_response({"error": "unavailable", "detail": "state store unreachable, retry later"}, 503)
        except Exception:
            log.exception("request_failed", path=request.path)
            return json_response({"error": "internal", "detail": "internal error, see the bridge's log"}, 500)


class RequestFields:
    """A request's log fields: its id and the source it posts to, made at the first line logged."""

    __slots__ = ("_fields", "_request")

    def __init__(self, request: web.Request) -> None:
        self._request: web.Request | None = request
        self._fields: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        request = self._request
        if request is not None:  # once: the id must be the same on each line
            self._request = None
            self._fields["request_id"] = request.headers.get("X-Request-Id") or f"{random.getrandbits(64):016x}"
            source = request.match_info.get("source")
            if source:
                self._fields["source"] = source
        return self._fields


def _unreadable(request: web.Request, exc: Exception) -> web.Response:
    """A body that could not be read: encoded as it says it is not (`Content-Encoding: gzip` on bytes
    that are not gzip), or cut short by a client that hung up. The sender's problem (400), in one line;
    a client that left gets no answer anyway."""
    cause = exc.__cause__ or exc
    if request.transport is None or request.transport.is_closing():
        log.info("request_aborted", path=request.path, detail=f"the client hung up: {_first_line(cause)}")
    else:
        log.info("request_refused", status=400, error="bad_payload", detail=_first_line(cause), path=request.path)
    detail = f"the body could not be read: {_first_line(cause)}"
    response = json_response({"error": "bad_payload", "detail": detail}, 400)
    # The rest of that body cannot be read either: aiohttp would try to drain it after the answer and
    # log the same error again as a traceback. The body ends here, and so does the connection.
    request.content.feed_eof()
    response.force_close()
    return response


def _first_line(exc: BaseException) -> str:
    said = getattr(exc, "message", None)  # aiohttp's HTTP errors: their own words, without the status
    text = " ".join(str(said if isinstance(said, str) and said else exc).split()) or type(exc).__name__
    return text[:200]
