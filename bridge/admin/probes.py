"""Liveness, readiness and the Prometheus endpoint of one bridge process."""

from __future__ import annotations

import redis.exceptions
from aiohttp import web

from bridge.runtime.context import RUNTIME
from bridge.runtime.http import json_response
from bridge.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        await runtime.redis.ping()
        if not await runtime.scripts.loaded():
            # Redis 7 keeps no script cache across a restart or failover (SCRIPT LOAD is not written
            # to the AOF nor replicated). The bridge itself recovers (redis-py reloads on NOSCRIPT),
            # so readiness loads them again instead of reporting unready until traffic arrives,
            # which it never would while the probe keeps this replica out of the load balancer.
            await runtime.scripts.load()
    except redis.exceptions.RedisError as exc:
        return json_response({"status": "unready", "detail": f"redis unavailable: {exc}"}, 503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; the shared-state gauges are read from Redis now, on scrape."""
    runtime = request.app[RUNTIME]
    body = await runtime.metrics.collect(runtime.redis)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def mount(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
