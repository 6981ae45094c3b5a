"""Liveness, readiness and the Prometheus endpoint of one bridge process."""

from __future__ import annotations

import redis.exceptions
from aiohttp import web

from bridge.runtime.context import RUNTIME, Runtime
from bridge.runtime.http import json_response
from bridge.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readiness(runtime: Runtime) -> dict[str, str]:
    """Whether this process is ready: `{"status": "ready"}`, or unready with `redis` and `detail` (the
    reason). /readyz answers it; the status page's health says the same."""
    try:
        await runtime.redis.ping()
        if runtime.not_ready:  # started listening, still waiting to reach Redis: it answers now
            runtime.redis_answered.set()  # so the start tries again at once rather than after its backoff
            return {"status": "unready", "redis": "ok", "detail": "starting: Redis answers now"}
        if not await runtime.scripts.loaded():
            # Redis 7 keeps no script cache across a restart or failover (SCRIPT LOAD is not written
            # to the AOF nor replicated). The bridge itself recovers (redis-py reloads on NOSCRIPT),
            # so readiness loads them again instead of reporting unready until traffic arrives,
            # which it never would while the probe keeps this replica out of the load balancer.
            await runtime.scripts.load()
    except redis.exceptions.RedisError as exc:
        detail = runtime.not_ready or f"Redis is unreachable: {exc}"
        return {"status": "unready", "redis": "unreachable", "detail": detail}
    return {"status": "ready"}


async def readyz(request: web.Request) -> web.Response:
    """200 once started and Redis answers; 503 with the reason otherwise."""
    said = await readiness(request.app[RUNTIME])
    return json_response(said, 200 if said["status"] == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, from memory: the shared-state gauges are read from Redis in the background
    (bridge.admin.upkeep), so a scrape costs Redis nothing however many incidents there are."""
    runtime = request.app[RUNTIME]
    body = runtime.metrics.collect()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def mount(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
