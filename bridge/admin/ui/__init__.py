"""The status page at /ui: what the bridge is doing, in a browser, served by the bridge itself.

A sub-application of the same aiohttp app (mounted by `bridge.process.app.make_app`): Jinja2 templates
in `templates/`, one style sheet in `static/`, no script and no build step. Its pages render what the
admin API and the CLI answer, from the same functions (`bridge.admin.incidents`, `bridge.engine.silences`,
`bridge.delivery.dlq`, `bridge.runtime.heartbeats`, `bridge.admin.probes`); the noise per route comes
from `bridge.runtime.noise`.

Access (`auth`): nothing but the login page and the style sheet without a session; a session from the
admin token may change things (silences, dead letters), one from the viewer token only reads: its
forms are refused (403). Every POST carries the session's CSRF token.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

import redis.exceptions
import structlog
from aiohttp import web

from bridge.admin.ui import auth, forms, pages
from bridge.admin.ui.render import HEADERS, SESSION_KEY, UiError, page
from bridge.runtime.context import RUNTIME
from bridge.runtime.http import Handler

log = structlog.get_logger("bridge.admin.ui")
PREFIX = "/ui"
OPEN_PATHS = {PREFIX + "/login"}  # reachable without a session (and /ui/static/)
READ_ONLY_POSTS = {PREFIX + "/logout"}  # the POSTs a viewer may make


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, CSRF and roles; refusals and failures as pages that say what is wrong, never a trace."""
    try:
        if request.path in OPEN_PATHS or request.path.startswith(PREFIX + "/static/"):
            response = await handler(request)
            if request.path.startswith(PREFIX + "/static/"):
                response.headers.update({"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"})
            return response
        rt = request.config_dict[RUNTIME]
        session = auth.read(rt, request.cookies.get(auth.COOKIE))
        if session is None:
            target = request.path_qs if request.method == "GET" else PREFIX + "/incidents"
            return forms.see_other(f"{PREFIX}/login?next={quote(target, safe='')}")
        request[SESSION_KEY] = session
        if request.method == "POST":
            form = await request.post()
            if not auth.csrf_ok(session, str(form.get("csrf", ""))):
                raise UiError(
                    403, "This form's security token did not match your session: reload the page and try again."
                )
            if not session.may_change and request.path not in READ_ONLY_POSTS:
                raise UiError(
                    403,
                    "You are logged in with the viewer token, which only reads:"
                    " log in with the admin token to change things.",
                )
        return await handler(request)
    except UiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("redis_unavailable", error=str(exc), path=request.path)
        return page(request, "error.html", 503, message=f"Redis is unreachable, so this page cannot be read: {exc}")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("ui_request_failed", path=request.path)
        return page(
            request, "error.html", 500, message="Something failed on our side; the bridge's log has the details."
        )


async def home(request: web.Request) -> web.StreamResponse:
    return forms.see_other(PREFIX + "/incidents")


async def not_found(request: web.Request) -> web.StreamResponse:
    raise UiError(404, "No such page.")


def static_dir() -> Path:
    return Path(str(files("bridge.admin.ui") / "static"))


def make_ui() -> web.Application:
    ui = web.Application(middlewares=[guard], client_max_size=64 * 1024)  # forms are small
    r = ui.router
    r.add_get("/", home)
    r.add_get("/login", forms.login_form)
    r.add_post("/login", forms.login)
    r.add_post("/logout", forms.logout)
    r.add_get("/incidents", pages.incident_list)
    r.add_get("/incidents/{id}", pages.incident_detail)
    r.add_get("/noise", pages.noise_page)
    r.add_get("/silences", forms.silences_page)
    r.add_post("/silences", forms.create_silence)
    r.add_post("/silences/{id}/expire", forms.expire_silence)
    r.add_get("/dead-letters", forms.letters_page)
    r.add_post("/dead-letters/{id}/retry", forms.retry_letter)
    r.add_post("/dead-letters/{id}/drop", forms.drop_letter)
    r.add_get("/heartbeats", pages.heartbeats_page)
    r.add_get("/health", pages.health_page)
    r.add_static("/static", static_dir(), append_version=False)
    r.add_route("*", "/{tail:.*}", not_found)
    return ui


def mount(app: web.Application) -> None:
    app.router.add_get(PREFIX, home)
    app.add_subapp(PREFIX, make_ui())


__all__ = ["HEADERS", "PREFIX", "make_ui", "mount"]
