"""The mapping format ops teams write: sources, desks, routes, policies, ticket templates.

Validated whole at start-up (pydantic, extra="forbid"); every error names file, key path and line.
Secrets come from `${VAR}` (or `${VAR:-default}`) and `<secret>_file:` keys, never from the YAML.
This module and the CLI entry are the only places that read the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError

from bridge.core import plugins
from bridge.core.desk import DeskSettings
from bridge.core.errors import ConfigError, Problem
from bridge.core.matchers import Matcher, parse_matchers
from bridge.core.models import Severity
from bridge.core.policy import (
    DEFAULT_NOTES,
    Correlate,
    Duration,
    Lifecycle,
    MatcherText,
    Note,
    Ownership,
    Storm,
    Strict,
    Ticket,
    Topology,
    parse_duration,
)
from bridge.core.secrets import configured
from bridge.core.tuning import Tuning

__all__ = ["DeskConfig", "Duration", "Heartbeat", "MappingConfig", "Ownership", "Route", "SourceConfig", "load"]
__all__ += ["parse_duration"]
Path_ = tuple[str | int, ...]  # a key path: mapping keys and list indices


class _RegisteredDesks:
    """Validates a desk section as the union of every registered desk kind's config model, told
    apart by `kind`; read from the registry when the mapping model is first built (it defers)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        models = tuple(plugins.desks().values())
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 (a runtime tuple of types)
        return handler.generate_schema(Annotated[union, Field(discriminator="kind")])


DeskConfig = Annotated[DeskSettings, _RegisteredDesks]


class SourceConfig(Strict):
    kind: str
    # Bearer token (Alertmanager, generic), HMAC secret (Grafana, Splunk Observability) or URL token
    # (Splunk Enterprise), by kind. Empty: the source is open and start-up logs a warning.
    secret: SecretStr | None = None
    max_body: int = Field(1 << 20, gt=0, description="bytes; larger bodies get 413")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        known = plugins.sources()
        if kind not in known:
            raise ValueError(unknown("source kind", kind, known) + f" (known: {', '.join(sorted(known))})")
        return kind

    @model_validator(mode="after")
    def _valid_options(self) -> SourceConfig:
        model = plugins.sources()[self.kind].options
        if model is not None:
            try:
                model.model_validate(self.options)
            except ValidationError as exc:  # each error at its own key, under `options`
                details: list[Any] = [{**e, "loc": ("options", *e["loc"])} for e in exc.errors()]
                raise ValidationError.from_exception_data(exc.title, details) from None
        elif self.options:
            raise ValueError(f"source kind {self.kind!r} takes no options")
        return self

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class Route(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # What incidents know the route by (`<id>:<key hash>:<epoch>`); default: its name. A route renamed
    # with its old name as `id` keeps its open incidents and their tickets.
    id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$")
    match: list[MatcherText] = Field(default_factory=list)  # Alertmanager matchers, all must match
    sources: list[str] = Field(default_factory=list)  # source names; empty = any
    desk: str
    continue_: bool = Field(False, alias="continue")
    identity: list[str] | None = None  # alert fields (`name`, `labels.host`) replacing the source's identity
    correlate: Correlate = Correlate()
    tickets: Literal["per_group", "per_alert"] = "per_group"  # per_alert ignores correlate.by
    topology: Topology | None = None
    storm: Storm | None = None
    lifecycle: Lifecycle = Lifecycle()
    ticket: Ticket = Ticket()
    # Which follow-ups become ticket notes (identical repeats never do); default all but `summary`.
    notes: list[Note] = Field(default_factory=lambda: list(DEFAULT_NOTES))

    @model_validator(mode="before")
    @classmethod
    def _id_is_the_name_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("id") and isinstance(data.get("name"), str):
            return {**data, "id": data["name"]}
        return data

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]

    @model_validator(mode="after")
    def _hold_without_threshold(self) -> Route:
        if self.topology and self.topology.hold and self.lifecycle.threshold:
            raise PydanticCustomError(
                "hold_and_threshold",
                "{message}",
                {
                    "message": "topology.hold and lifecycle.threshold cannot go together: a held incident opens "
                    "when its hold ends, a threshold's when enough alerts came",
                    "at": ("topology", "hold"),
                },
            )
        return self


class DeskLimit(Strict):
    """A rate limit shared by every replica (a token bucket in Redis), for desks that throttle."""

    per_second: float = Field(gt=0)
    burst: int = Field(1, ge=1)


NAME = r"^[A-Za-z0-9_.-]+$"  # names that go into URLs and Redis keys: heartbeats


class HeartbeatAlerts(Strict):
    """Alerts that are a heartbeat's pings rather than alerts: an always-firing alert such as Prometheus's
    `Watchdog` stops arriving when the pipeline that sends it dies."""

    match: list[MatcherText] = Field(default_factory=lambda: ['alertname="Watchdog"'])  # all must match
    sources: list[str] = Field(default_factory=list)  # source names; empty = any

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]


class Heartbeat(Strict):
    """Something that must ping the bridge at least every `interval` (+ `grace`); when it does not, one
    ticket opens ("no heartbeat from prod-eu since 10:42"), and the next ping resolves it. Pinged by
    `POST|GET /heartbeat/<name>`, Opsgenie's `/opsgenie/<source>/v2/heartbeats/<name>/ping`, and the alerts
    `alerts` matches. Watched from its first ping; `key` labels tell pingers apart (one heartbeat each)."""

    interval: Duration = Field(gt=0)
    grace: Duration = 60.0  # more than the interval before it counts as missing
    desk: str | None = None  # the desk its ticket goes to, with `ticket` (fields, resolve note) ...
    route: str | None = None  # ... or a route: its desk, lifecycle and ticket fields take the heartbeat's alert
    ticket: Ticket | None = None
    severity: Severity = Severity.CRITICAL
    secret: SecretStr | None = None  # `Authorization: Bearer <secret>` on /heartbeat/<name>; empty: open
    key: list[str] = Field(default_factory=list)  # label names (query parameters on /heartbeat/<name>)
    alerts: HeartbeatAlerts | None = None  # alerts that ping it (default matcher: alertname="Watchdog")
    max_keys: int = Field(100, ge=1)  # distinct `key` label sets kept; pings of more are refused

    @model_validator(mode="after")
    def _desk_or_route(self) -> Heartbeat:
        if (self.desk is None) == (self.route is None):
            raise ValueError("a heartbeat needs either `desk` (with its `ticket`) or `route`")
        if self.route is not None and self.ticket is not None:
            raise ValueError("`ticket` goes with `desk`: with `route`, the route's ticket fields are used")
        return self

    def window_ms(self) -> int:
        """How long after a ping it expires (interval + grace), in ms."""
        return int((self.interval + self.grace) * 1000)

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class MappingConfig(Strict):
    model_config = ConfigDict(defer_build=True)  # the desk kinds come from the registry, on first use

    sources: dict[str, SourceConfig]
    desks: dict[str, DeskConfig]
    limits: dict[str, DeskLimit] = Field(default_factory=dict)  # desk name -> shared rate limit
    routes: list[Route] = Field(min_length=1)
    heartbeats: dict[str, Heartbeat] = Field(default_factory=dict)  # name -> heartbeat
    _from_env: frozenset[str] = PrivateAttr(default=frozenset())  # set by `load`: see `secrets`

    @model_validator(mode="after")
    def _references(self) -> MappingConfig:
        routes = [{"name": r.name, "desk": r.desk, "sources": r.sources} for r in self.routes]
        beats = {n: b.model_dump(include={"desk", "route", "alerts"}) for n, b in self.heartbeats.items()}
        found = misreferences(
            {"sources": self.sources, "desks": self.desks, "limits": self.limits, "routes": routes, "heartbeats": beats}
        )
        if found:
            message, at = found[0]
            raise _misreference(message, at)
        return self

    @model_validator(mode="after")
    def _ids_unique(self) -> MappingConfig:
        seen: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            first = seen.setdefault(route.id, index)
            if first != index and not (route.id == route.name == self.routes[first].name):  # (a name used twice)
                message = f"route id {route.id!r} is used twice (routes {self.routes[first].name!r} and {route.name!r})"
                raise PydanticCustomError(
                    "duplicate_route_id", "{message}", {"message": message, "at": ("routes", index, "id")}
                )
        return self

    @model_validator(mode="after")
    def _scopes(self) -> MappingConfig:
        """Routes sharing a `correlate.scope` share its owner's incidents: the others go to the same desk
        and leave the incidents' policy (topology, storm, threshold, flap) to the owner."""
        owners: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            scope = route.correlate.scope
            if not scope:
                continue
            first = owners.setdefault(scope, index)
            owner = self.routes[first]
            message, at = "", ("routes", index)  # type: tuple[str, tuple[str | int, ...]]
            if first == index:
                continue
            if route.desk != owner.desk:
                message, at = f"its desk must be {owner.desk!r}, the desk of the scope's owner", (*at, "desk")
            else:
                kept = [k for k in ("topology", "storm") if getattr(route, k) is not None]
                kept += [f"lifecycle.{k}" for k in ("threshold", "flap") if getattr(route.lifecycle, k) is not None]
                if kept:
                    message = f"{', '.join(kept)}: set on {owner.name!r}, which owns the scope's incidents"
            if message:
                text = f"route {route.name!r} shares scope {scope!r} with route {owner.name!r}: {message}"
                raise PydanticCustomError("scope", "{message}", {"message": text, "at": at})
        for index, route in enumerate(self.routes):
            for item, rule in enumerate(route.lifecycle.auto_resolve):
                for n, source in enumerate(rule.sources):
                    if source not in self.sources:
                        text = f"route {route.name!r}: " + unknown("source", source, self.sources)
                        where = ("routes", index, "lifecycle", "auto_resolve", item, "sources", n)
                        raise PydanticCustomError("unknown_source", "{message}", {"message": text, "at": where})
        return self

    def secrets(self) -> set[str]:
        """Every secret of the mapping (bridge.core.secrets.configured): the values that dead letters, the
        audit trail, the admin API and the log mask."""
        models = [*self.sources.values(), *self.desks.values(), *self.heartbeats.values()]
        return configured(models, self._from_env)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _heartbeat_names(self) -> MappingConfig:
        ids = {r.id for r in self.routes}
        for name, beat in self.heartbeats.items():
            message = ""
            if not re.fullmatch(NAME, name):
                message = "its name may hold letters, digits, '.', '_' and '-' only (it is in URLs)"
            elif beat.desk is not None and f"heartbeat.{name}" in ids:
                message = f"route id 'heartbeat.{name}' is this heartbeat's own: give that route another"
            if message:
                context = {"message": f"heartbeat {name!r}: {message}", "at": ("heartbeats", name)}
                raise PydanticCustomError("heartbeat_name", "{message}", context)
        return self

    @cached_property
    def heartbeat_routes(self) -> Mapping[str, Route]:
        """Heartbeat name -> the route its alert takes: the one it names, or, for a heartbeat with a desk,
        a route of its own (`heartbeat.<name>`: resolved as soon as it pings again, reopened within the hour)."""
        out: dict[str, Route] = {}
        for name, beat in self.heartbeats.items():
            if beat.route is not None:
                out[name] = next(r for r in self.routes if r.name == beat.route)
            else:
                own = {"name": f"heartbeat.{name}", "desk": beat.desk, "ticket": beat.ticket or Ticket()}
                out[name] = Route.model_validate({**own, "lifecycle": Lifecycle(resolve_after=0)})
        return out

    def route(self, name: str) -> Route | None:
        """The route of that name, if in the mapping."""
        return next((r for r in self.routes if r.name == name), None)

    def by_id(self, route_id: str) -> Route | None:
        """The route of that id (incidents and their outboxes name their route by it), if in the mapping;
        a heartbeat's own route too."""
        found = next((r for r in self.routes if r.id == route_id), None)
        return found or next((r for r in self.heartbeat_routes.values() if r.id == route_id), None)


def unknown(what: str, name: str, known: Iterable[str]) -> str:
    """`unknown <what> 'name'`, with `; did you mean 'x'?` when a known name is a near miss."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f"unknown {what} {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def misreferences(data: Mapping[str, Any]) -> list[tuple[str, Path_]]:
    """Names the mapping uses that it does not define (route -> desk or source, limits -> desk, heartbeat ->
    desk, route or source) and route names used twice, each with its key path; `data` may be the raw
    mapping, wrong shapes are skipped."""

    def names(section: str) -> list[str]:
        value = data.get(section)
        return [str(k) for k in value] if isinstance(value, Mapping) else []

    desks, sources = names("desks"), names("sources")
    routes = data.get("routes")
    routes = [r if isinstance(r, Mapping) else {} for r in routes] if isinstance(routes, list) else []
    found: list[tuple[str, Path_]] = []
    seen: set[str] = set()
    for index, route in enumerate(routes):
        name = route.get("name")
        if isinstance(name, str):
            if name in seen:
                found.append((f"route name {name!r} is used twice", ("routes", index, "name")))
            seen.add(name)
        label = f"route {name!r}: " if isinstance(name, str) else ""
        desk = route.get("desk")
        if isinstance(desk, str) and desk not in desks:
            found.append((label + unknown("desk", desk, desks), ("routes", index, "desk")))
        used = route.get("sources")
        for item, source in enumerate(used if isinstance(used, list) else []):
            if isinstance(source, str) and source not in sources:
                found.append((label + unknown("source", source, sources), ("routes", index, "sources", item)))
    for desk in names("limits"):
        if desk not in desks:
            found.append((unknown("desk", desk, desks), ("limits", desk)))
    beats = data.get("heartbeats")
    for name, beat in beats.items() if isinstance(beats, Mapping) else []:
        beat = beat if isinstance(beat, Mapping) else {}
        label = f"heartbeat {name!r}: "
        for key, known, what in (("desk", desks, "desk"), ("route", [r.get("name") for r in routes], "route")):
            if isinstance(beat.get(key), str) and beat[key] not in known:
                found.append(
                    (
                        label + unknown(what, beat[key], [k for k in known if isinstance(k, str)]),
                        ("heartbeats", name, key),
                    )
                )
        alerts = beat.get("alerts")
        used = alerts.get("sources") if isinstance(alerts, Mapping) else None
        for item, source in enumerate(used if isinstance(used, list) else []):
            if isinstance(source, str) and source not in sources:
                found.append(
                    (label + unknown("source", source, sources), ("heartbeats", name, "alerts", "sources", item))
                )
    return found


def _misreference(message: str, at: tuple[str | int, ...]) -> PydanticCustomError:
    """A cross-reference error of the whole mapping that still knows which key it is about.

    pydantic locates a model validator's errors at the model itself; `at` carries the key path in
    the error's context so that `_located` can name the key and its line, not line 1.
    """
    return PydanticCustomError("unknown_reference", "{message}", {"message": message, "at": at})


# --- loading -------------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = ("password", "secret", "token", "client_secret", "api_token")
SECTIONS = ("sources", "desks", "limits", "routes", "heartbeats")


class _Found:
    """The problems found while loading, each located in its own file. One reported at a key hides
    those found later at or under it (a missing variable would otherwise also be a bad URL)."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self._reported: set[tuple[str, Path_]] = set()
        self.from_env: set[str] = set()  # values sources and desks take from the environment or files

    def took(self, path: Path_, value: str) -> None:
        """A value at `path` came from the environment or a file: a secret, if in a source or desk (of a
        `url`, its path: a webhook URL may carry its token there; the rest of it is not secret)."""
        if path[:1] in (("sources",), ("desks",), ("heartbeats",)) and value:
            if path[-1:] != ("url",):
                self.from_env.add(value)
            elif len(urlsplit(value).path) >= 16:  # `/api/now` is no secret; `/hooks/T0B1X9...` may be
                self.from_env.add(urlsplit(value).path)

    def add(self, message: str, file: str, path: Path_ = (), line: int | None = None) -> None:
        if any((file, path[:n]) in self._reported for n in range(1, len(path) + 1)):
            return
        self.hide(file, path)
        self.problems.append(Problem(message, file, _dotted(path), line))

    def hide(self, file: str, path: Path_) -> None:
        """Report nothing more at or under `path` (its value stands in for one already reported)."""
        if path:
            self._reported.add((file, path))

    def raise_any(self) -> None:
        """One ConfigError with every problem so far, in file and line order; nothing if none."""
        if self.problems:
            order = {file: index for index, file in enumerate(self.files)}
            self.problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line or 0))
            raise ConfigError(problems=self.problems)


def load(paths: Sequence[str | Path], env: Mapping[str, str] | None = None) -> MappingConfig:
    """Load and validate one or more mapping files (merged: sources, desks, routes in file order).

    Every mistake found is reported at once, in one ConfigError (`problems`); a file that cannot be
    read or parsed stops the load after the reading, as the rest would only be guesses.
    """
    env = os.environ if env is None else env
    files = [str(p) for p in paths]
    found = _Found(files)
    lines: dict[str, dict[Path_, int]] = {}
    read: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        try:
            data, lines[path] = _read_yaml(path)
        except ConfigError as exc:
            found.problems.extend(exc.problems)
            continue
        if not isinstance(data, dict):
            found.add("a mapping file must be a YAML mapping (sources:, desks:, routes:)", path)
            continue
        read.append((path, data))
    found.raise_any()

    merged: dict[str, Any] = {"sources": {}, "desks": {}, "limits": {}, "routes": [], "heartbeats": {}}
    origin: dict[Path_, tuple[str, Path_]] = {}  # merged path prefix -> (file, path in that file)
    for path, raw in read:
        at = lines[path]
        data = _resolve(raw, (), path, at, env, found)
        for section in ("sources", "desks", "limits", "heartbeats"):
            value = data.pop(section, None) or {}
            if not isinstance(value, dict):
                found.add(f"must be a mapping of names to {section}", path, (section,), at.get((section,)))
                continue
            for name, item in value.items():
                if name in merged[section]:
                    where = f" (first in {origin[(section, name)][0]})"
                    found.add(
                        f"{section[:-1]} {name!r} defined twice{where}", path, (section, name), at.get((section, name))
                    )
                    continue
                merged[section][name] = item
                origin[(section, name)] = (path, (section, name))
        routes = data.pop("routes", None) or []
        if not isinstance(routes, list):
            found.add("must be a list of routes (- name: ...)", path, ("routes",), at.get(("routes",)))
            routes = []
        for index, route in enumerate(routes):
            origin[("routes", len(merged["routes"]))] = (path, ("routes", index))
            merged["routes"].append(route)
        for key in data:
            found.add(unknown("top-level key", str(key), SECTIONS), path, (str(key),), at.get((key,)))

    def locate(message: str, loc: Path_) -> None:
        found.add(message, *_located(loc, merged, origin, lines, files))

    for message, loc in misreferences(merged):
        locate(message, loc)
    config: MappingConfig | None = None
    try:
        config = MappingConfig.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] != "unknown_reference":  # all of those were found just above
                locate(*_described(error, merged))
    found.raise_any()
    assert config is not None
    config._from_env = frozenset(found.from_env)
    return config


def _read_yaml(path: str) -> tuple[Any, dict[Path_, int]]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {exc}", file=path, line=mark.line + 1 if mark else None) from exc
    lines: dict[Path_, int] = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node | None, path: Path_, out: dict[Path_, int]) -> None:
    if node is None:
        return
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _index_lines(value, (*path, key.value), out)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


def _resolve(value: Any, path: Path_, file: str, lines: dict[Path_, int], env: Mapping[str, str], found: _Found) -> Any:
    """Substitute `${VAR}` in strings and read `<secret>_file` keys; what cannot be is a problem
    (and an empty string meanwhile)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if key.endswith("_file") and key[: -len("_file")] in _SECRET_KEYS:
                target = key[: -len("_file")]
                file_name = _resolve(item, (*path, key), file, lines, env, found)
                try:
                    out[target] = Path(file_name).read_text().rstrip("\n")
                    found.took((*path, target), out[target])
                except OSError as exc:
                    where = (*path, key)
                    found.add(f"cannot read secret file {file_name!r}: {exc.strerror}", file, where, lines.get(where))
                    found.hide(file, (*path, target))
                    out[target] = ""
                continue
            out[key] = _resolve(item, (*path, key), file, lines, env, found)
        return out
    if isinstance(value, list):
        return [_resolve(item, (*path, i), file, lines, env, found) for i, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                if path[-1:] != ("url",):
                    found.took(path, env[name])
                return env[name]
            if default is not None:
                return default
            message = f"environment variable {name} is not set (use ${{{name}:-}} to make it optional)"
            found.add(message, file, path, lines.get(path))
            return ""

        resolved = _ENV_REF.sub(substitute, value)
        if path[-1:] == ("url",) and resolved != value:
            found.took(path, resolved)
        return resolved
    return value


def _described(error: Any, data: dict[str, Any]) -> tuple[str, Path_]:
    """A pydantic error in plain words, and the key path it is about (still with union tags)."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return unknown("key", str(loc[-1]), _keys_at(loc[:-1], data)), loc
    if kind == "missing":
        return f"missing required key {loc[-1]!r}", loc
    what = "desk kind" if loc[:1] == ("desks",) else "kind"
    if kind == "union_tag_invalid":
        known = [t.strip("'") for t in str(ctx.get("expected_tags", "")).split(", ")]
        return unknown(what, str(ctx.get("tag")), known) + f" (known: {', '.join(known)})", (*loc, "kind")
    if kind == "union_tag_not_found":
        return f"missing required key 'kind' (the {what}: one of {', '.join(plugins.desks())})", loc
    if kind == "too_short" and loc == ("routes",):
        return "no routes: a mapping needs at least one", loc
    return str(error["msg"]).removeprefix("Value error, "), (*loc, *ctx.get("at", ()))


_DESK_KINDS = object()  # `_step`'s mark for a desk section, told apart by its `kind` (the next part)


def _keys_at(loc: Path_, data: dict[str, Any]) -> list[str]:
    """The keys the model at `loc` (a pydantic error location, union tags included) takes."""
    node: Any = MappingConfig
    if loc[:1] == ("sources",) and loc[2:3] == ("options",):  # the model of the source's kind
        source = data["sources"].get(loc[1])
        adapter = plugins.sources().get(str(source.get("kind"))) if isinstance(source, dict) else None
        node, loc = (adapter.options if adapter else None), loc[3:]
    for part in loc:
        node = _step(node, part)
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return []
    keys: list[str] = []
    for name, field in node.model_fields.items():
        keys.append(field.alias or name)
        if name in _SECRET_KEYS:
            keys.append(f"{name}_file")
    return keys


def _step(node: Any, part: str | int) -> Any:
    """The type one key (or list index, or union tag) below `node`; None when there is none."""
    while True:  # Annotated[X, ...] -> X, X | None -> X
        if get_origin(node) is Annotated:
            node, *extra = get_args(node)
            if _RegisteredDesks in extra:
                node = _DESK_KINDS
        elif get_origin(node) in (Union, types.UnionType):
            options = [a for a in get_args(node) if a is not type(None)]
            node = options[0] if len(options) == 1 else None
        else:
            break
    if node is _DESK_KINDS:
        return plugins.desks().get(str(part))
    if isinstance(node, type) and issubclass(node, BaseModel):
        return next((f.annotation for n, f in node.model_fields.items() if part in (n, f.alias)), None)
    if get_origin(node) is dict:
        return get_args(node)[1]
    if get_origin(node) is list:
        return get_args(node)[0]
    return None


def _located(
    loc: Path_,
    data: Any,
    origin: dict[Path_, tuple[str, Path_]],
    lines: dict[str, dict[Path_, int]],
    files: list[str],
) -> tuple[str, Path_, int | None]:
    """A location in the merged mapping as (file, path in that file, line of the deepest key there)."""
    loc = _without_tags(loc, data)
    file, local = files[0], loc
    for size in (2, 1):
        if loc[:size] in origin:
            file, prefix = origin[loc[:size]]
            local = prefix + loc[size:]
            break
    # Walk the location through the file's keys as far as they go (a missing key is not in the file).
    known: Path_ = ()
    for part in local:
        if (*known, part) in lines[file]:
            known = (*known, part)
    return file, local, lines[file].get(known)


def _without_tags(loc: Path_, data: Any) -> Path_:
    """`loc` without the tags pydantic puts in for a discriminated union (`desks.x.servicenow.url`).

    A tag is the value of `kind` where the mapping has no key by that name; it is not in the file.
    """
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def tuning(env: Mapping[str, str] | None = None) -> Tuning:
    """Engine knobs from `BRIDGE_<FIELD>` variables (e.g. BRIDGE_CLAIM_IDLE_MS=60000); defaults otherwise."""
    env = os.environ if env is None else env
    defaults = Tuning()
    changes: dict[str, Any] = {}
    for spec in dataclasses.fields(Tuning):
        raw = env.get(f"BRIDGE_{spec.name.upper()}")
        if raw is not None:
            kind = type(getattr(defaults, spec.name))
            try:
                changes[spec.name] = kind(raw)
            except ValueError as exc:
                raise ConfigError(f"BRIDGE_{spec.name.upper()}={raw!r} is not a {kind.__name__}") from exc
    return dataclasses.replace(defaults, **changes)


def redis_url(env: Mapping[str, str] | None = None) -> str | None:
    """BRIDGE_REDIS_URL, or None for the embedded Redis."""
    return (os.environ if env is None else env).get("BRIDGE_REDIS_URL") or None
