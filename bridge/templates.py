"""Jinja2 templates for incident keys and ticket fields, rendered in a sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.models import Alert

_ENV = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """Compile once; raises ValueError naming the problem (the config loader adds file and line)."""
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise ValueError(f"template does not compile: {exc}") from exc


def render(source: str, context: Mapping[str, Any]) -> str:
    try:
        return compile_template(source).render(context).strip()
    except TemplateError as exc:
        raise ValueError(f"template {source!r} failed: {exc}") from exc


def alert_context(alert: Alert | Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """What a template sees: the alert's fields at top level and as `alert`, plus `extra`."""
    data = alert.model_dump(mode="json") if isinstance(alert, Alert) else dict(alert)
    return {**data, "alert": data, **extra}
