"""The mapping format ops teams write: sources, desks, routes, policies, ticket templates.

Validated whole at start-up (pydantic, extra="forbid"); every error names file, key path and line.
Secrets come from `${VAR}` (or `${VAR:-default}`) and `<secret>_file:` keys, never from the YAML.
This module and the CLI entry are the only places that read the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError

from bridge.core import plugins
from bridge.core.desk import DeskSettings
from bridge.core.errors import ConfigError
from bridge.core.matchers import Matcher, parse_matchers
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
from bridge.core.tuning import Tuning

__all__ = ["DeskConfig", "Duration", "MappingConfig", "Ownership", "Route", "SourceConfig", "load", "parse_duration"]


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
            raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(sorted(known))}")
        return kind

    @model_validator(mode="after")
    def _valid_options(self) -> SourceConfig:
        model = plugins.sources()[self.kind].options
        if model is not None:
            model.model_validate(self.options)
        elif self.options:
            raise ValueError(f"source kind {self.kind!r} takes no options")
        return self

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class Route(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
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

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]


class DeskLimit(Strict):
    """A rate limit shared by every replica (a token bucket in Redis), for desks that throttle."""

    per_second: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class MappingConfig(Strict):
    model_config = ConfigDict(defer_build=True)  # the desk kinds come from the registry, on first use

    sources: dict[str, SourceConfig]
    desks: dict[str, DeskConfig]
    limits: dict[str, DeskLimit] = Field(default_factory=dict)  # desk name -> shared rate limit
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> MappingConfig:
        names = [r.name for r in self.routes]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _misreference(f"route name {name!r} is used twice", ("routes", index, "name"))
        for index, route in enumerate(self.routes):
            if route.desk not in self.desks:
                raise _misreference(f"route {route.name!r}: unknown desk {route.desk!r}", ("routes", index, "desk"))
            for item, source in enumerate(route.sources):
                if source not in self.sources:
                    raise _misreference(
                        f"route {route.name!r}: unknown source {source!r}", ("routes", index, "sources", item)
                    )
        for desk in self.limits:
            if desk not in self.desks:
                raise _misreference(f"limits: unknown desk {desk!r}", ("limits", desk))
        return self

    def route(self, name: str) -> Route | None:
        """The route of that name (an incident's outbox names its route), if still in the mapping."""
        return next((r for r in self.routes if r.name == name), None)


def _misreference(message: str, at: tuple[str | int, ...]) -> PydanticCustomError:
    """A cross-reference error of the whole mapping that still knows which key it is about.

    pydantic locates a model validator's errors at the model itself; `at` carries the key path in
    the error's context so that `_located` can name the key and its line, not line 1.
    """
    return PydanticCustomError("unknown_reference", "{message}", {"message": message, "at": at})


# --- loading -------------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = ("password", "secret", "token", "client_secret", "api_token")
Path_ = tuple[str | int, ...]


def load(paths: Sequence[str | Path], env: Mapping[str, str] | None = None) -> MappingConfig:
    """Load and validate one or more mapping files (merged: sources, desks, routes in file order)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {"sources": {}, "desks": {}, "limits": {}, "routes": []}
    origin: dict[Path_, tuple[str, Path_]] = {}  # merged path prefix -> (file, path in that file)
    lines: dict[str, dict[Path_, int]] = {}
    for raw_path in paths:
        path = str(raw_path)
        data, lines[path] = _read_yaml(path)
        data = _resolve(data, (), path, lines[path], env)
        if not isinstance(data, dict):
            raise ConfigError("a mapping file must be a YAML mapping", file=path)
        for section in ("sources", "desks", "limits"):
            for name, value in (data.pop(section, None) or {}).items():
                if name in merged[section]:
                    raise ConfigError(f"{section[:-1]} {name!r} defined twice", file=path, path=f"{section}.{name}")
                merged[section][name] = value
                origin[(section, name)] = (path, (section, name))
        for index, route in enumerate(data.pop("routes", None) or []):
            origin[("routes", len(merged["routes"]))] = (path, ("routes", index))
            merged["routes"].append(route)
        for key in data:
            raise ConfigError(f"unknown top-level key {key!r}", file=path, path=str(key), line=lines[path].get((key,)))
    try:
        return MappingConfig.model_validate(merged)
    except ValidationError as exc:
        raise _located(exc, merged, origin, lines, [str(p) for p in paths]) from None


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


def _resolve(value: Any, path: Path_, file: str, lines: dict[Path_, int], env: Mapping[str, str]) -> Any:
    """Substitute `${VAR}` in strings and read `<secret>_file` keys."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if key.endswith("_file") and key[: -len("_file")] in _SECRET_KEYS:
                target = key[: -len("_file")]
                file_name = _resolve(item, (*path, key), file, lines, env)
                try:
                    out[target] = Path(file_name).read_text().rstrip("\n")
                except OSError as exc:
                    raise ConfigError(
                        f"cannot read secret file {file_name!r}: {exc.strerror}",
                        file=file,
                        path=_dotted((*path, key)),
                        line=lines.get((*path, key)),
                    ) from exc
                continue
            out[key] = _resolve(item, (*path, key), file, lines, env)
        return out
    if isinstance(value, list):
        return [_resolve(item, (*path, i), file, lines, env) for i, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set (use ${{{name}:-}} to make it optional)",
                file=file,
                path=_dotted(path),
                line=lines.get(path),
            )

        return _ENV_REF.sub(substitute, value)
    return value


def _located(
    exc: ValidationError,
    data: Any,
    origin: dict[Path_, tuple[str, Path_]],
    lines: dict[str, dict[Path_, int]],
    files: list[str],
) -> ConfigError:
    error = exc.errors()[0]
    loc = _without_tags(tuple(error["loc"]) + tuple((error.get("ctx") or {}).get("at", ())), data)
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
    message = error["msg"].removeprefix("Value error, ")
    extra = len(exc.errors()) - 1
    if extra:
        message += f" (and {extra} more error{'s' if extra > 1 else ''})"
    return ConfigError(message, file=file, path=_dotted(local), line=lines[file].get(known))


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
