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
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from adapters.desks.servicenow import ServiceNowConfig
from adapters.sources import SOURCES
from bridge.errors import ConfigError
from bridge.matchers import Matcher, parse_matchers
from bridge.templates import compile_template
from bridge.tuning import Tuning

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `5m`, `1h30m`, `250ms` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {value!r}: use e.g. 30s, 5m, 1h30m, 250ms")
    return sum(float(n) * _UNITS[u] for n, u in parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]
DeskConfig = Annotated[ServiceNowConfig, Field(discriminator="kind")]  # adding a desk: one line here


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_template(value: str) -> str:
    compile_template(value)
    return value


Template = Annotated[str, BeforeValidator(lambda v: _check_template(str(v)))]


class SourceConfig(_Strict):
    kind: str
    # Bearer token (Alertmanager, generic), HMAC secret (Grafana, Splunk Observability) or URL token
    # (Splunk Enterprise), by kind. Empty: the source is open and start-up logs a warning.
    secret: SecretStr | None = None
    max_body: int = Field(1 << 20, gt=0, description="bytes; larger bodies get 413")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in SOURCES:
            raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(sorted(SOURCES))}")
        return kind

    @model_validator(mode="after")
    def _valid_options(self) -> SourceConfig:
        model = SOURCES[self.kind].options
        if model is not None:
            model.model_validate(self.options)
        elif self.options:
            raise ValueError(f"source kind {self.kind!r} takes no options")
        return self

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class Correlate(_Strict):
    # Templates over the alert whose rendered values form the incident key. Empty: one incident
    # per alert identity.
    by: list[Template] = Field(default_factory=list)


class Lifecycle(_Strict):
    resolve_after: Duration = 300.0  # hold-down: all members clear this long before the ticket resolves
    reopen_within: Duration = 3600.0  # fires again within this after resolving: reopen; later: new ticket
    auto_resolve_after: Duration | None = None  # for sources that never send a clear


class Ticket(_Strict):
    # Desk field name -> template. Rendered on open; the desk adapter adds the correlation fields.
    fields: dict[str, Template] = Field(default_factory=dict)
    resolve_note: Template = "Resolved automatically: all alerts cleared for the hold-down period."


class Route(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: list[str] = Field(default_factory=list)  # Alertmanager matchers, all must match
    sources: list[str] = Field(default_factory=list)  # source names; empty = any
    desk: str
    continue_: bool = Field(False, alias="continue")
    identity: list[str] | None = None  # alert fields (`name`, `labels.host`) replacing the source's identity
    correlate: Correlate = Correlate()
    lifecycle: Lifecycle = Lifecycle()
    ticket: Ticket = Ticket()

    @field_validator("match")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_matchers(text)
        return value

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]


class MappingConfig(_Strict):
    sources: dict[str, SourceConfig]
    desks: dict[str, DeskConfig]
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> MappingConfig:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique: {names}")
        for route in self.routes:
            if route.desk not in self.desks:
                raise ValueError(f"route {route.name!r}: unknown desk {route.desk!r}")
            for source in route.sources:
                if source not in self.sources:
                    raise ValueError(f"route {route.name!r}: unknown source {source!r}")
        return self


# --- loading -------------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = ("password", "secret", "token", "client_secret", "api_token")
Path_ = tuple[str | int, ...]


def load(paths: Sequence[str | Path], env: Mapping[str, str] | None = None) -> MappingConfig:
    """Load and validate one or more mapping files (merged: sources, desks, routes in file order)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {"sources": {}, "desks": {}, "routes": []}
    origin: dict[Path_, tuple[str, Path_]] = {}  # merged path prefix -> (file, path in that file)
    lines: dict[str, dict[Path_, int]] = {}
    for raw_path in paths:
        path = str(raw_path)
        data, lines[path] = _read_yaml(path)
        data = _resolve(data, (), path, lines[path], env)
        if not isinstance(data, dict):
            raise ConfigError("a mapping file must be a YAML mapping", file=path)
        for section in ("sources", "desks"):
            for name, value in (data.pop(section, None) or {}).items():
                if name in merged[section]:
                    raise ConfigError(
                        f"{section[:-1]} {name!r} defined twice", file=path, path=f"{section}.{name}"
                    )
                merged[section][name] = value
                origin[(section, name)] = (path, (section, name))
        for index, route in enumerate(data.pop("routes", None) or []):
            origin[("routes", len(merged["routes"]))] = (path, ("routes", index))
            merged["routes"].append(route)
        for key in data:
            raise ConfigError(
                f"unknown top-level key {key!r}", file=path, path=str(key), line=lines[path].get((key,))
            )
    try:
        return MappingConfig.model_validate(merged)
    except ValidationError as exc:
        raise _located(exc, origin, lines, [str(p) for p in paths]) from None


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
    origin: dict[Path_, tuple[str, Path_]],
    lines: dict[str, dict[Path_, int]],
    files: list[str],
) -> ConfigError:
    error = exc.errors()[0]
    loc: Path_ = tuple(error["loc"])
    file, local = files[0], loc
    for size in (2, 1):
        if loc[:size] in origin:
            file, prefix = origin[loc[:size]]
            local = prefix + loc[size:]
            break
    # Walk the location through the file's keys; pydantic adds union tags that are not in the file.
    known: Path_ = ()
    for part in local:
        if (*known, part) in lines[file]:
            known = (*known, part)
    message = error["msg"].removeprefix("Value error, ")
    extra = len(exc.errors()) - 1
    if extra:
        message += f" (and {extra} more error{'s' if extra > 1 else ''})"
    return ConfigError(message, file=file, path=_dotted(local), line=lines[file].get(known))


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
