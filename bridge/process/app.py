"""The HTTP app of one bridge process: the webhook ingress beside the probes, the admin API and the status page."""

from __future__ import annotations

from aiohttp import web

from bridge.admin import api, probes, ui
from bridge.ingress import heartbeat, opsgenie
from bridge.ingress.desk_events import desk_events
from bridge.ingress.repeats import REPEATS, RepeatWindow
from bridge.ingress.webhook import webhook
from bridge.runtime.context import RUNTIME, Runtime
from bridge.runtime.http import errors_as_json


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=max_body(runtime))
    app[RUNTIME] = runtime
    app[REPEATS] = window = RepeatWindow(runtime.tuning.repeat_window_ms / 1000, runtime.tuning.repeat_window_max)
    runtime.metrics.repeat_window_entries.set_function(lambda: len(window))
    app.router.add_post("/webhook/{source}", webhook)
    app.router.add_post("/desk-events/{desk}", desk_events)  # the loop back, pushed (bridge/ingress/desk_events.py)
    # Opsgenie's Alert API for its clients (an API URL of http://<bridge>/opsgenie/<source>/)
    og = "/opsgenie/{source}/v2/alerts"
    app.router.add_post(og, opsgenie.create)
    app.router.add_post(og + "/", opsgenie.create)  # clients that join paths with a slash (Zabbix)
    app.router.add_get(og + "/requests/{request_id}", opsgenie.request_status)
    app.router.add_post(og + "/{identifier:.+}/{action}", opsgenie.action)
    app.router.add_put(og + "/{identifier:.+}/{action}", opsgenie.action)
    app.router.add_post("/opsgenie/{source}/v1/json/{integration}", opsgenie.integration)  # nagios2opsgenie
    for method in ("GET", "POST", "PUT"):
        app.router.add_route(method, "/opsgenie/{source}/v2/heartbeats/{name}/ping", opsgenie.heartbeat_ping)
    app.router.add_route("POST", "/heartbeat/{name}", heartbeat.ping)  # heartbeats (bridge/runtime/heartbeats.py)
    app.router.add_route("GET", "/heartbeat/{name}", heartbeat.ping)
    probes.mount(app)  # /healthz, /readyz, /metrics
    api.mount(app)  # /api/v1: the admin API
    ui.mount(app)  # /ui: the status page
    return app


def max_body(runtime: Runtime) -> int:
    bodies = [s.max_body for s in runtime.config.sources.values()] + [s.max_body for s in runtime.config.sync.values()]
    return max(bodies, default=1 << 20)
