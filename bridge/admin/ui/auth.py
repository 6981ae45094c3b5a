"""Who may see the status page: a login with the admin token (may change things) or the viewer token
(reads only), a signed session cookie, and a CSRF token on every form.

The cookie is `<role>.<expiry s>.<nonce>.<signature>`, signed with HMAC-SHA256 under a key derived from
the role's token, so that every replica of the bridge accepts it without sharing a secret of its own,
and changing a token ends its sessions. It is HttpOnly, SameSite=Strict, Secure when the request came
over https (or a proxy says so in X-Forwarded-Proto), and lasts SESSION_S. Each form carries
`csrf`, an HMAC of the session's nonce under the same key (the login form, before any session, a
double-submitted random value in a cookie of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from bridge.runtime.context import Runtime

Role = Literal["admin", "viewer"]
COOKIE = "bridge_ui"
LOGIN_COOKIE = "bridge_ui_login"  # the login form's double-submitted CSRF value
SESSION_S = 8 * 3600
_KEY_LABEL = b"alert-ticket-bridge status page session v1"


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    nonce: str
    csrf: str

    @property
    def may_change(self) -> bool:
        return self.role == "admin"


def _token(rt: Runtime, role: str) -> str:
    return rt.admin_token if role == "admin" else rt.viewer_token if role == "viewer" else ""


def _key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8", "surrogateescape"), _KEY_LABEL, hashlib.sha256).digest()


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def enabled(rt: Runtime) -> bool:
    """Whether anyone can log in: with neither token set, the status page is off."""
    return bool(rt.admin_token or rt.viewer_token)


def role_of(rt: Runtime, given: str) -> Role | None:
    """The role a token given at the login form grants, compared in constant time; None if neither."""
    raw = given.strip().encode("utf-8", "surrogateescape")
    found: Role | None = None
    for role in ("admin", "viewer"):
        token = _token(rt, role)
        if token and hmac.compare_digest(raw, token.encode("utf-8", "surrogateescape")) and found is None:
            found = role
    return found


def issue(rt: Runtime, role: Role, now_s: float | None = None) -> str:
    """A new session cookie's value for `role`."""
    expires = int((time.time() if now_s is None else now_s) + SESSION_S)
    text = f"{role}.{expires}.{secrets.token_hex(16)}"
    return f"{text}.{_sign(_key(_token(rt, role)), text)}"


def read(rt: Runtime, value: str | None, now_s: float | None = None) -> Session | None:
    """The session a cookie holds, if its signature holds under its role's current token and it has not
    expired."""
    if not value or len(value) > 200:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] not in ("admin", "viewer") or not parts[1].isdigit():
        return None
    role, expires, nonce, signature = parts
    token = _token(rt, role)
    if not token:
        return None
    key = _key(token)
    if not hmac.compare_digest(signature, _sign(key, f"{role}.{expires}.{nonce}")):
        return None
    if int(expires) <= (time.time() if now_s is None else now_s):
        return None
    return Session(role, nonce, _sign(key, "csrf." + nonce))  # type: ignore[arg-type]


def csrf_ok(session: Session, given: str) -> bool:
    return same(session.csrf, given)


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two strings (tokens, CSRF values)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"), given.encode("utf-8", "surrogateescape"))


def secure(request: web.Request) -> bool:
    """Whether the browser reached us over https (directly, or through a proxy that says so)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/ui", httponly=True, samesite="Strict", secure=secure(request)
    )


def login_nonce() -> str:
    return secrets.token_hex(16)
