"""The adapter registry: source kinds and desk kinds, found through Python entry points.

A plugin package declares, in its own `pyproject.toml`:

    [project.entry-points."alert_ticket_bridge.sources"]
    mytool = "my_package.source:ADAPTER"          # a `SourceAdapter`
    [project.entry-points."alert_ticket_bridge.desks"]
    mydesk = "my_package.desk:MyDeskConfig"       # a pydantic model with kind: Literal["mydesk"]

The built-in adapters are registered the same way, in this distribution's `pyproject.toml`. Each
group is read once per process, when a mapping is first validated; the entry's name is the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from bridge.core.errors import ConfigError
from bridge.core.source import SourceAdapter

SOURCES_GROUP = "alert_ticket_bridge.sources"
DESKS_GROUP = "alert_ticket_bridge.desks"
AUTOMATION_GROUP = "alert_ticket_bridge.automation"
UPSTREAMS_GROUP = "alert_ticket_bridge.upstreams"


def _load(group: str, check: Callable[[str, Any], str | None]) -> Mapping[str, Any]:
    found: dict[str, Any] = {}
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            value = entry.load()
        except Exception as exc:  # a broken plugin must name itself, not fail as an ImportError deep inside
            raise ConfigError(f"plugin {entry.name!r} ({entry.value}) in {group} cannot be loaded: {exc}") from exc
        problem = check(entry.name, value)
        if problem:
            raise ConfigError(f"plugin {entry.name!r} ({entry.value}) in {group}: {problem}")
        found[entry.name] = value
    if not found:
        raise ConfigError(
            f"no adapters registered in the entry-point group {group}: install the package "
            "(pip install alert-ticket-bridge, or pip install -e . in a checkout) so its entry points exist"
        )
    return MappingProxyType(found)


def _check_source(name: str, value: Any) -> str | None:
    if not isinstance(value, SourceAdapter):
        return f"is a {type(value).__name__}, not a SourceAdapter"
    if value.kind != name:
        return f"its kind is {value.kind!r}; the entry point's name must be the kind"
    return None


def _check_desk(name: str, value: Any) -> str | None:
    field = getattr(value, "model_fields", {}).get("kind")
    if field is None or not callable(getattr(value, "build", None)):
        return "is not a pydantic model with a `kind` field and a build(name, session) method"
    if getattr(field.annotation, "__args__", None) != (name,):
        return f"its `kind` must be Literal[{name!r}], the entry point's name"
    return None


@cache
def sources() -> Mapping[str, SourceAdapter]:
    """Every registered source kind -> its adapter."""
    return _load(SOURCES_GROUP, _check_source)


@cache
def desks() -> Mapping[str, type[Any]]:
    """Every registered desk kind -> its config model (a pydantic model; see `bridge.core.desk.DeskSettings`)."""
    return _load(DESKS_GROUP, _check_desk)


def _check_upstream(name: str, value: Any) -> str | None:
    if not callable(getattr(value, "model_validate", None)) or not callable(getattr(value, "build", None)):
        return "is not a pydantic model with a build(name, session) method (bridge.core.sync.UpstreamSettings)"
    return None


@cache
def upstreams() -> Mapping[str, type[Any]]:
    """Every registered upstream -> its settings model, by the source kind it acknowledges
    (bridge.core.sync.UpstreamSettings); empty when none is installed."""
    try:
        return _load(UPSTREAMS_GROUP, _check_upstream)
    except ConfigError as exc:
        if "no adapters registered" in str(exc):
            return MappingProxyType({})
        raise


def _check_runner(name: str, value: Any) -> str | None:
    field = getattr(value, "model_fields", {}).get("kind")
    if field is None or not callable(getattr(value, "build", None)):
        return "is not a pydantic model with a `kind` field and a build(name, session) method"
    if getattr(field.annotation, "__args__", None) != (name,):
        return f"its `kind` must be Literal[{name!r}], the entry point's name"
    return None


@cache
def runners() -> Mapping[str, type[Any]]:
    """Every registered automation runner kind -> its settings model (bridge.core.automation.RunnerSettings);
    empty when none is installed."""
    try:
        return _load(AUTOMATION_GROUP, _check_runner)
    except ConfigError as exc:
        if "no adapters registered" in str(exc):
            return MappingProxyType({})
        raise


def source(kind: str) -> SourceAdapter:
    """The adapter of a registered kind; a ConfigError naming the known kinds otherwise."""
    known = sources()
    if kind not in known:
        raise ConfigError(f"unknown source kind {kind!r}; known: {', '.join(known)}")
    return known[kind]


def configured(kind: str, options: Mapping[str, Any]) -> SourceAdapter:
    """The adapter for `kind` with its options validated and, where verify needs them, bound to it.

    For start-up, once per configured source: the registered adapter verifies with default options only.
    """
    adapter = source(kind)
    try:
        if adapter.options is not None:
            adapter.options.model_validate(dict(options))
        elif options:
            raise ConfigError(f"source kind {kind!r} takes no options")
        return adapter.bind(options) if adapter.bind else adapter
    except ValidationError as exc:
        raise ConfigError(f"options for source kind {kind!r}: {exc}") from exc
