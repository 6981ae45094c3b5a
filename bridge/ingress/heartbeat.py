"""`POST|GET /heartbeat/{name}`: a ping of a heartbeat of the mapping (bridge/runtime/heartbeats.py).

Authenticated like a source: `Authorization: Bearer <secret>` when the heartbeat has a secret. Its
`key` labels come from the query string (`/heartbeat/prometheus?cluster=prod-eu`). Answered 202 once
the ping is in Redis: `{"heartbeat", "key", "outcome" (new, ok, recovered), "expires_at"}`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from bridge.ingress.webhook import check_bearer
from bridge.runtime import heartbeats
from bridge.runtime.context import RUNTIME
from bridge.runtime.http import json_response


async def ping(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = request.match_info["name"]
    beat = runtime.config.heartbeats.get(name)
    if beat is None:
        return json_response(
            {"error": "unknown_heartbeat", "detail": f"no heartbeat named {name!r} is configured"}, 404
        )
    secret = beat.secret_value()
    if secret:
        check_bearer(request.headers.get("Authorization", ""), secret)
    labels = heartbeats.key_labels(beat, request.query)
    [done] = await heartbeats.ping(runtime, [(name, labels)])
    if done.outcome == "full":
        detail = f"heartbeat {name!r} has {beat.max_keys} key label sets already (max_keys): this one is not watched"
        return json_response({"error": "too_many_keys", "detail": detail}, 422)
    expires = datetime.fromtimestamp(done.due_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    return json_response({"heartbeat": name, "key": labels, "outcome": done.outcome, "expires_at": expires}, 202)
