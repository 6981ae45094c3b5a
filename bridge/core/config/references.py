"""The mapping's cross-references: names it uses but does not define, at their key paths, with "did you mean".

Run on the raw mapping by the loader (every one reported, with its line) and on the validated one by
`MappingConfig` (the first raised as a `misreference`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import PydanticCustomError

Path_ = tuple[str | int, ...]  # a key path: mapping keys and list indices


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
    for section in ("limits", "sync"):
        for desk in names(section):
            if desk not in desks:
                found.append((unknown("desk", desk, desks), (section, desk)))
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


def misreference(message: str, at: Path_) -> PydanticCustomError:
    """A cross-reference error of the whole mapping that still knows which key it is about.

    pydantic locates a model validator's errors at the model itself; `at` carries the key path in
    the error's context so that the loader (`loading._located`) can name the key and its line, not line 1.
    """
    return PydanticCustomError("unknown_reference", "{message}", {"message": message, "at": at})
