"""The request log every simulator keeps, so tests can assert the exact calls a desk received."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


def recorder(
    applies: Callable[[web.Request], bool],
    log: Callable[[web.Request], list[dict[str, Any]]],
    keep_body: Callable[[web.Request], bool] = lambda request: True,
) -> Middleware:
    """A middleware appending {method, path, query, body, status} for each request `applies` to;
    `status` is None while an answer is withheld (a fault switch holding it). `keep_body` false
    (a login form with a password) records the body as None."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not applies(request):
            return await handler(request)
        raw = await request.read() if keep_body(request) else b""
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": body,
            "status": None,
        }
        log(request).append(entry)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            entry["status"] = exc.status
            raise
        entry["status"] = response.status
        return response

    return record
