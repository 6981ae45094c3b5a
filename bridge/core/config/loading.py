"""Reading mapping files: YAML with each key's line, `${VAR}` / `${VAR:-default}` and `<secret>_file:`
resolved, several files merged, and every mistake reported at once with file, line and key path;
and the engine knobs and Redis URL from `BRIDGE_*` variables. With the CLI entry, the only reader of
the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from bridge.core import plugins
from bridge.core.config.mapping import MappingConfig
from bridge.core.config.references import Path_, misreferences, unknown
from bridge.core.config.registered import RegisteredDesks
from bridge.core.errors import ConfigError, Problem
from bridge.core.tuning import Tuning

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = ("password", "secret", "token", "client_secret", "api_token")
SECTIONS = ("sources", "desks", "limits", "sync", "routes", "heartbeats", "automation")


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

    merged: dict[str, Any] = {"sources": {}, "desks": {}, "limits": {}, "sync": {}, "routes": [], "heartbeats": {},
        "automation": {}}  # fmt: skip
    origin: dict[Path_, tuple[str, Path_]] = {}  # merged path prefix -> (file, path in that file)
    for path, raw in read:
        at = lines[path]
        data = _resolve(raw, (), path, at, env, found)
        for section in ("sources", "desks", "limits", "sync", "heartbeats", "automation"):
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
            if key.endswith("_file") and key[: -len("_file")] in SECRET_KEYS:
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
        if name in SECRET_KEYS:
            keys.append(f"{name}_file")
    return keys


def _step(node: Any, part: str | int) -> Any:
    """The type one key (or list index, or union tag) below `node`; None when there is none."""
    while True:  # Annotated[X, ...] -> X, X | None -> X
        if get_origin(node) is Annotated:
            node, *extra = get_args(node)
            if RegisteredDesks in extra:
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
