"""The status page's HTML: the Jinja2 environment over `templates/` (autoescaped: alert text is data,
never markup), the filters the templates use, and the one way a page leaves (`page`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jinja2
import orjson
from aiohttp import web

from bridge.admin.ui.auth import Session
from bridge.runtime.context import RUNTIME

SESSION_KEY = web.RequestKey("ui_session", Session)  # the request's session, set by the guard
# Pages are documents, not applications: no script runs, styles come from our own sheet, forms post
# here only, and no other site may frame them.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class UiError(Exception):
    """A request the page refuses, with what to tell the person (the status it answers)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def when(ms: Any) -> str:
    """A stored time (ms) as UTC, e.g. 2026-12-04 12:31:05; "" for none."""
    if not isinstance(ms, int) or ms <= 0:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(ms: Any) -> str:
    """A duration (ms) in two units at most: 45s, 3m 12s, 2h 5m, 4d 3h."""
    if not isinstance(ms, int) or ms < 0:
        return ""
    s = ms // 1000
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // subsize}{sub}"
    return f"{s}s"


def web_link(url: Any) -> str:
    """`url` if it is an http(s) link (a ticket's), else "": a `javascript:` URL is never a link."""
    if not isinstance(url, str) or len(url) > 2000:
        return ""
    return url if urlsplit(url).scheme in ("http", "https") else ""


def as_text(value: Any) -> str:
    """A stored value as text: strings as they are, anything else as compact JSON (cut at 2,000 chars)."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 2000 else text[:2000] + "…"


def pretty(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode()


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("bridge.admin.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=when, span=span, web_link=web_link, as_text=as_text, pretty=pretty)


def render(name: str, **context: Any) -> str:
    return ENV.get_template(name).render(**context)


def page(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    """A page from its template, with the session (for the nav and the forms' CSRF token) and the headers
    every page has."""
    session: Session | None = request.get(SESSION_KEY)
    body = render(name, session=session, now_ms=request.config_dict[RUNTIME].clock(), path=request.path, **context)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(HEADERS)
    return response
