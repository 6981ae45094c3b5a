"""The status page's forms: login and logout, silences (list, create, expire) and dead letters (list,
retry, drop). Every change goes through the function the admin API calls for it, and is refused to the
viewer token by the guard (bridge.admin.ui)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.admin import api, openapi
from bridge.admin.openapi import SilenceRequest
from bridge.admin.ui import auth
from bridge.admin.ui.render import SESSION_KEY, UiError, page
from bridge.core import keys
from bridge.core.errors import PayloadError
from bridge.delivery import dlq
from bridge.engine.silences import Silences
from bridge.runtime.context import RUNTIME, Runtime

log = structlog.get_logger("bridge.admin.ui")
LETTERS_SHOWN = 50
HOME = "/ui/incidents"
LOGIN_BURST = 10  # refused logins an address may make at once ...
LOGIN_REFILL_S = 30  # ... and one more every this many seconds; then every login is refused (429) until then


def _rt(request: web.Request) -> Runtime:
    return request.config_dict[RUNTIME]


def _session(request: web.Request) -> auth.Session:
    session: auth.Session = request[SESSION_KEY]
    return session


def safe_next(target: str) -> str:
    """Where to go after the login: a page of the status page, never another site."""
    if target.startswith("/ui/") and not target.startswith("/ui//") and "\\" not in target and len(target) < 2000:
        return target
    return HOME


# --- login -----------------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    rt = _rt(request)
    if auth.read(rt, request.cookies.get(auth.COOKIE)) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next", HOME)))
    return _login_page(request, 200, "")


def _login_page(request: web.Request, status: int, error: str) -> web.Response:
    nonce = auth.login_nonce()
    response = page(
        request, "login.html", status, error=error, enabled=auth.enabled(_rt(request)), login_csrf=nonce,
        next=safe_next(request.query.get("next", HOME)),
    )  # fmt: skip
    auth.set_cookie(response, request, auth.LOGIN_COOKIE, nonce, 900)
    return response


async def login(request: web.Request) -> web.Response:
    rt = _rt(request)
    form = await request.post()
    given, expected = str(form.get("csrf", "")), request.cookies.get(auth.LOGIN_COOKIE, "")
    if not expected or not auth.same(expected, given):
        return _login_page(request, 403, "The form expired or did not come from this page: try again.")
    if not auth.enabled(rt):
        return _login_page(request, 403, "The status page is off: start the bridge with BRIDGE_ADMIN_TOKEN set.")
    remote = request.remote or ""
    blocked_ms = int(await rt.redis.pttl(keys.login_blocked(remote)))
    if blocked_ms > 0:
        return _too_many(request, blocked_ms)
    role = auth.role_of(rt, str(form.get("token", "")))
    if role is None:
        log.info("ui_login_refused", remote=remote)
        wait_ms = await rt.scripts.take_token(
            "", rt.clock(), 1 / LOGIN_REFILL_S, LOGIN_BURST, key=keys.login_failures(remote)
        )
        if wait_ms:  # out of refused logins: none at all, the right token's included, until one is back
            await rt.redis.set(keys.login_blocked(remote), 1, px=wait_ms)
            log.warning("ui_login_blocked", remote=remote, seconds=round(wait_ms / 1000))
            return _too_many(request, wait_ms)
        return _login_page(request, 401, "That token is neither the admin token nor the viewer token.")
    log.info("ui_login", role=role, remote=request.remote)
    response = see_other(safe_next(str(form.get("next", HOME))))
    auth.set_cookie(response, request, auth.COOKIE, auth.issue(rt, role), auth.SESSION_S)
    response.del_cookie(auth.LOGIN_COOKIE, path="/ui")
    return response


def _too_many(request: web.Request, wait_ms: int) -> web.Response:
    seconds = max(1, -(-wait_ms // 1000))
    response = _login_page(request, 429, f"Too many refused logins from this address: try again in {seconds} s.")
    response.headers["Retry-After"] = str(seconds)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session in this browser (the cookie goes; a copy of it stays valid until it expires or the
    token changes: sessions are not stored)."""
    log.info("ui_logout", role=_session(request).role)
    response = see_other("/ui/login")
    response.del_cookie(auth.COOKIE, path="/ui")
    return response


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# --- silences --------------------------------------------------------------------------------------


async def silences_page(request: web.Request, status: int = 200, **form: Any) -> web.Response:
    rt = _rt(request)
    now = rt.clock()
    views = [s.view(now) for s in await Silences(rt.redis, rt.bad_record).list()]
    order = {"active": 0, "pending": 1, "expired": 2}
    views.sort(key=lambda v: (order.get(str(v["status"]), 3), -int(v["starts_at"])))  # type: ignore[call-overload]
    defaults = {"matchers": "", "duration": "2h", "comment": "", "error": ""}
    return page(
        request, "silences.html", status, silences=views, created=request.query.get("created", ""),
        expired=request.query.get("expired", ""), form={**defaults, **form},
    )  # fmt: skip


async def create_silence(request: web.Request) -> web.StreamResponse:
    """The form's matchers (one a line), duration and comment, validated as `POST /api/v1/silences` is."""
    rt = _rt(request)
    form = await request.post()
    text = str(form.get("matchers", ""))
    duration, comment = str(form.get("duration", "")).strip(), str(form.get("comment", ""))
    kept = {"matchers": text, "duration": duration, "comment": comment}
    matchers = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        body = SilenceRequest.model_validate(
            {"matchers": matchers, "duration": duration or None, "comment": comment,
             "created_by": f"status page ({_session(request).role})"}
        )  # fmt: skip
        silence = await api.make_silence(rt, body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "form"
        return await silences_page(request, 400, error=f"{where}: {first['msg']}", **kept)
    except PayloadError as exc:
        return await silences_page(request, 400, error=exc.detail, **kept)
    await Silences(rt.redis, rt.bad_record).add(silence)
    log.info("silence_created", silence=silence.id, matchers=silence.matchers, by=silence.created_by)
    raise web.HTTPSeeOther(f"/ui/silences?created={silence.id}")


async def expire_silence(request: web.Request) -> web.StreamResponse:
    rt = _rt(request)
    silence_id = request.match_info["id"]
    if not await Silences(rt.redis, rt.bad_record).expire(silence_id, rt.clock()):
        raise UiError(404, f"no silence {silence_id}")
    log.info("silence_expired", silence=silence_id, by="status page")
    raise web.HTTPSeeOther(f"/ui/silences?expired={silence_id}")


# --- dead letters ----------------------------------------------------------------------------------


async def letters_page(request: web.Request) -> web.Response:
    rt = _rt(request)
    kind = request.query.get("kind") or None
    after = request.query.get("after") or None
    if after is not None and not openapi.is_stream_id(after):
        raise UiError(400, "after must be a dead-letter id such as 1700000000000-0")
    if kind is not None and (len(kind) > 100 or not kind.replace("_", "").isalnum()):
        raise UiError(400, "kind must be a dead letter's kind, such as desk_rejected")
    letters = rt.masker.value(await dlq.list_letters(rt.redis, limit=LETTERS_SHOWN + 1, kind=kind, after=after))
    more = len(letters) > LETTERS_SHOWN
    letters = letters[:LETTERS_SHOWN]
    return page(
        request, "dead_letters.html", letters=letters, kind=kind or "", after=after or "",
        next=letters[-1]["id"] if more else "", done=request.query.get("done", ""),
        done_id=request.query.get("id", ""),
    )  # fmt: skip


def _letter_id(request: web.Request) -> str:
    letter_id = request.match_info["id"]
    if not openapi.is_stream_id(letter_id):
        raise UiError(404, f"no dead letter {letter_id}")
    return letter_id


async def retry_letter(request: web.Request) -> web.StreamResponse:
    rt = _rt(request)
    letter_id = _letter_id(request)
    outcome = await dlq.retry(rt.redis, letter_id, rt.clock(), rt.shards)
    if outcome is dlq.Retried.NOT_FOUND:
        raise UiError(404, f"no dead letter {letter_id}")
    if outcome is dlq.Retried.NOT_RETRYABLE:
        raise UiError(409, f"{letter_id} is not a desk or upstream call; fix the source or mapping, then drop it")
    log.info("dead_letter_retried", letter=letter_id, by="status page")
    raise web.HTTPSeeOther(f"/ui/dead-letters?done=retried&id={letter_id}")


async def drop_letter(request: web.Request) -> web.StreamResponse:
    rt = _rt(request)
    letter_id = _letter_id(request)
    if not await dlq.drop(rt.redis, letter_id):
        raise UiError(404, f"no dead letter {letter_id}")
    log.info("dead_letter_dropped", letter=letter_id, by="status page")
    raise web.HTTPSeeOther(f"/ui/dead-letters?done=dropped&id={letter_id}")
