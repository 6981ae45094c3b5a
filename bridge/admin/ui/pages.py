"""The status page's read-only pages: incidents, one incident's timeline, noise per route, heartbeats and
health. Each renders what the admin API and the CLI answer, from the same functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.exceptions
from aiohttp import web

from bridge.admin import incidents, openapi, probes
from bridge.admin.ui import chart
from bridge.admin.ui.render import UiError, page, when
from bridge.core import keys
from bridge.delivery.guard import breaker_until
from bridge.runtime import heartbeats, noise
from bridge.runtime.context import RUNTIME, Runtime

PAGE_SIZE = 50
LOOK_AT = 1000  # index entries a page of the incidents list looks at, at most (filters that match little)
HEARTBEATS_SHOWN = 500


@dataclass(frozen=True, slots=True)
class RouteInfo:
    id: str
    name: str
    desk: str
    retired: bool = False


def routes_of(rt: Runtime) -> dict[str, RouteInfo]:
    """Every route incidents may name, by id: the mapping's, its heartbeats', and retired ones still live."""
    out = {r.id: RouteInfo(r.id, r.name, r.desk) for r in rt.config.routes}
    for r in rt.config.heartbeat_routes.values():
        out.setdefault(r.id, RouteInfo(r.id, r.name, r.desk))
    for rid, retired in rt.retired.items():
        last = retired.route()
        out.setdefault(rid, RouteInfo(rid, last.name, last.desk, retired=True))
    return out


def _rt(request: web.Request) -> Runtime:
    return request.config_dict[RUNTIME]


def _start(request: web.Request) -> int:
    raw = request.query.get("start", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise UiError(400, "start must be a position in the list (a whole number)")
    return int(raw)


async def incident_list(request: web.Request) -> web.Response:
    """Incidents, newest change first, filtered by state, route and desk; a page of PAGE_SIZE from `start`."""
    rt = _rt(request)
    known = routes_of(rt)
    desks = sorted({r.desk for r in known.values()} | set(rt.config.desks))
    state = request.query.get("state") or None
    route = request.query.get("route") or None
    desk = request.query.get("desk") or None
    errors = []
    if state is not None and state not in openapi.INCIDENT_STATES:
        errors.append(f"state must be one of {', '.join(openapi.INCIDENT_STATES)}")
    if route is not None and route not in known:
        errors.append(f"no route {route} in the mapping")
    if desk is not None and desk not in desks:
        errors.append(f"no desk {desk} in the mapping")
    context: dict[str, Any] = {
        "states": openapi.INCIDENT_STATES, "routes": known, "desks": desks,
        "state": state or "", "route": route or "", "desk": desk or "",
    }  # fmt: skip
    if errors:
        return page(request, "incidents.html", 400, errors=errors, found=None, **context)
    wanted: set[str] | None = None
    if route is not None or desk is not None:
        wanted = {r.id for r in known.values() if (route is None or r.id == route) and (desk is None or r.desk == desk)}
    found = await incidents.page_incidents(
        rt.redis, start=_start(request), limit=PAGE_SIZE, state=state, routes=wanted, look_at=LOOK_AT,
        bad_record=rt.bad_record,
    )  # fmt: skip
    return page(request, "incidents.html", errors=[], found=found, start=_start(request), **context)


async def incident_detail(request: web.Request) -> web.Response:
    """One incident: its members, its outbox and its audit trail, as `GET /api/v1/incidents/{id}` answers."""
    rt = _rt(request)
    incident = request.match_info["id"]
    found = await incidents.show_incident(rt.redis, incident, rt.bad_record)
    if found is None:
        raise UiError(404, f"no incident {incident} (it may have been resolved and expired)")
    found = rt.masker.value(found)
    route = routes_of(rt).get(str(found.get("route", "")))
    return page(request, "incident.html", incident=found, route=route)


async def noise_page(request: web.Request) -> web.Response:
    """Per route, over the last hour and the last day: alerts in, incidents, tickets, desk calls, and the
    compression (alerts per incident), as a table and a bar chart."""
    rt = _rt(request)
    counted = await noise.read(rt.redis, rt.clock())
    known = routes_of(rt)
    names = {rid: info.name for rid, info in known.items()}
    rows = []
    for rid in sorted(set(names) | set(counted), key=lambda r: names.get(r, r)):
        windows = counted.get(rid) or {w: dict.fromkeys(noise.FIGURES, 0) for w in ("hour", "day")}
        rows.append({"id": rid, "name": names.get(rid, rid), **windows})
    return page(request, "noise.html", rows=rows, charts={w: chart.bars(rows, w) for w in ("hour", "day")})


async def heartbeats_page(request: web.Request) -> web.Response:
    rt = _rt(request)
    beats = await heartbeats.read_all(rt.redis, limit=HEARTBEATS_SHOWN)
    now = rt.clock()
    return page(
        request, "heartbeats.html", beats=[b.view(now) for b in beats], capped=len(beats) >= HEARTBEATS_SHOWN,
        configured=sorted(rt.config.heartbeats),
    )  # fmt: skip


async def problems(rt: Runtime) -> list[dict[str, str]]:
    """What is wrong now, each `{"what", "detail", "level"}` (level: error or warning): readiness (Redis
    unreachable, still starting), a desk's breaker open, a rejected reload, dead letters waiting, expired
    heartbeats."""
    found: list[dict[str, str]] = []
    ready = await probes.readiness(rt)
    if ready["status"] != "ready":
        found.append({"what": "not ready", "detail": ready.get("detail", ""), "level": "error"})
    if rt.reload_error:
        found.append({
            "what": "mapping reload rejected",
            "detail": rt.reload_error + " (the mapping loaded before keeps running)", "level": "error",
        })  # fmt: skip
    if ready.get("redis") == "unreachable":
        return found  # nothing else can be read
    desks = sorted(rt.config.desks)
    try:
        async with rt.redis.pipeline(transaction=False) as pipe:
            for desk in desks:
                pipe.get(keys.desk_breaker(desk))
            pipe.xlen(keys.DLQ)
            *breakers, letters = await pipe.execute()
        beats = await heartbeats.read_all(rt.redis, limit=HEARTBEATS_SHOWN)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        found.append({"what": "Redis unreachable", "detail": str(exc), "level": "error"})
        return found
    now = rt.clock()
    for desk, raw in zip(desks, breakers, strict=True):
        until = breaker_until(raw, "")
        if until > now:
            found.append({
                "what": f"desk {desk}: circuit breaker open",
                "detail": f"its calls failed; others wait until {when(until)} UTC while one incident probes it",
                "level": "error",
            })  # fmt: skip
    if letters:
        found.append({"what": f"{letters} dead letter(s)", "detail": "see Dead letters: retry or drop each",
                      "level": "warning"})  # fmt: skip
    for beat in beats:
        if beat.expired:
            last = beat.view(now)["last_ping"]
            found.append(
                {"what": f"heartbeat {beat.id} expired", "detail": f"no ping since {last}", "level": "warning"}
            )
    return found


async def health_page(request: web.Request) -> web.Response:
    rt = _rt(request)
    found = await problems(rt)
    return page(request, "health.html", problems=found, desks=sorted(rt.config.desks))
