"""Jinja2 templates for incident keys and ticket fields, rendered in a sandbox."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.core.models import Alert


class _Environment(ImmutableSandboxedEnvironment):
    def make_globals(self, d: Mapping[str, Any] | None) -> dict[str, Any]:
        """A template's globals as one plain dict, not Jinja's ChainMap over the environment's: every
        render copies them into its context, and copying a ChainMap (in Python, key by key) was half
        of a short template's render time. Nothing changes the environment's globals once set up."""
        return {**self.globals, **(d or {})}


def _path_segment(value: Any) -> str:
    """Each value a URL path template puts in, as one escaped path segment (`/`, `?`, `#` and `%` too)."""
    return quote("" if value is None else str(value), safe="")


_ENV = _Environment(autoescape=False, keep_trailing_newline=False)
# For URL paths: what the template writes stays as it is, what it puts in from values is escaped.
_PATH_ENV = _Environment(autoescape=False, keep_trailing_newline=False, finalize=_path_segment)
# `{{ labels.alertname }}`, optionally `| default('')`: most keys and many fields are only that.
_PLAIN = re.compile(
    r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*(?:\|\s*default\(\s*(?:''|\"\")\s*\)\s*)?\}\}", re.ASCII
)


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """Compile once; raises ValueError naming the problem (the config loader adds file and line)."""
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise ValueError(f"template does not compile: {exc}") from exc


@lru_cache(maxsize=4096)
def _plain_path(source: str) -> tuple[str, ...] | None:
    match = _PLAIN.fullmatch(source.strip())
    return tuple(match.group(1).split(".")) if match else None


def _lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """What Jinja renders for a plain `{{ a.b.c }}` through nested dicts, or None to let Jinja decide
    (a name Jinja would look up as an attribute or among its globals, a step into a non-dict)."""
    value: Any = context
    for depth, part in enumerate(path):
        if type(value) is not dict or hasattr(dict, part):
            return None
        if part not in value:
            # A missing key renders as "" at the end of a path; earlier, Jinja raises.
            return "" if depth and depth == len(path) - 1 else None
        value = value[part]
    return str(value).strip()


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a template; a plain `{{ a.b }}` is looked up directly, with Jinja's result, at a
    tenth of the cost (tests/core/test_templates.py compares the two)."""
    path = _plain_path(source)
    if path is not None:
        text = _lookup(context, path)
        if text is not None:
            return text
    try:
        return compile_template(source).render(context).strip()
    except TemplateError as exc:
        raise ValueError(f"template {source!r} failed: {exc}") from exc


@lru_cache(maxsize=1024)
def compile_path_template(source: str) -> Template:
    """A URL path template: every value it puts in is escaped as one path segment."""
    try:
        return _PATH_ENV.from_string(source)
    except TemplateError as exc:
        raise ValueError(f"template does not compile: {exc}") from exc


def render_path(source: str, context: Mapping[str, Any]) -> str:
    """Render a URL path template so that no value can change the path's shape: each value is one
    escaped segment (a `../admin?x=1#` in alert text stays inside its segment), and a segment that
    is `.` or `..` is refused (ValueError), as a server or proxy would resolve it."""
    try:
        path = compile_path_template(source).render(context).strip()
    except TemplateError as exc:
        raise ValueError(f"template {source!r} failed: {exc}") from exc
    if any(segment in (".", "..") for segment in path.split("?", 1)[0].split("/")):
        raise ValueError(f"path {path[:200]!r} has a '.' or '..' segment: refused")
    return path


def alert_context(alert: Alert | Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """What a template sees: the alert's fields at top level and as `alert`, plus `extra`."""
    data = alert.model_dump(mode="json") if isinstance(alert, Alert) else dict(alert)
    return {**data, "alert": data, **extra}
