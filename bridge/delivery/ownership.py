"""Field ownership: which ticket fields the bridge keeps writing after open, so human edits survive.

The bridge remembers, per incident epoch, the value it last wrote to each field (`w:<epoch>:<field>`
in the incident's state hash). A `sync_until_edited` field is rewritten only while the desk still
shows that value; once a human has changed it, the bridge says so in a note and stops
(`edited:<epoch>:<field>`). `append_note` fields are never rewritten: their changes become note
lines. `create_only` (the default) fields are written on open only; `never` fields not at all.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.typing import EncodableT

from bridge.core import keys
from bridge.core.config import Ownership, Route
from bridge.core.desk import Desk, TicketRef
from bridge.core.templates import render
from bridge.runtime.scripts import Redis


def owner(route: Route, field: str) -> Ownership:
    return route.ticket.ownership.get(field, Ownership.CREATE_ONLY)


def open_fields(route: Route, context: dict[str, Any], overlay: dict[str, str] | None = None) -> dict[str, str]:
    """The fields written on open: every template but the `never` ones. Raises ValueError on a bad render."""
    templates = {**route.ticket.fields, **(overlay or {})}
    return {name: render(t, context) for name, t in templates.items() if owner(route, name) is not Ownership.NEVER}


def written(epoch: str, fields: dict[str, str]) -> dict[EncodableT, EncodableT]:
    """The state-hash entries that remember what the bridge wrote to each field."""
    return {f"w:{epoch}:{name}": value for name, value in fields.items()}


async def remember(redis: Redis, ik: keys.IncidentKeys, epoch: str, fields: dict[str, str]) -> None:
    if fields:
        await redis.hset(ik.state, mapping=written(epoch, fields))


async def sync(
    redis: Redis, ik: keys.IncidentKeys, desk: Desk, ref: TicketRef, route: Route, epoch: str, context: dict[str, Any]
) -> list[str]:
    """Bring the owned fields up to date; returns note lines about what changed or was left alone."""
    owned = {
        name: t
        for name, t in route.ticket.fields.items()
        if owner(route, name) in (Ownership.SYNC_UNTIL_EDITED, Ownership.APPEND_NOTE)
    }
    if not owned:
        return []
    names = list(owned)
    stored = await redis.hmget(ik.state, [f"w:{epoch}:{n}" for n in names] + [f"edited:{epoch}:{n}" for n in names])
    written = {n: _s(v) for n, v in zip(names, stored[: len(names)], strict=True)}
    edited = {n for n, v in zip(names, stored[len(names) :], strict=True) if v}
    lines: list[str] = []
    updates: dict[str, str] = {}
    remembered: dict[str, str] = {}
    current: dict[str, str] | None = None
    for name, template in owned.items():
        value = render(template, context)
        if value == written[name] or name in edited:
            continue
        if owner(route, name) is Ownership.APPEND_NOTE:
            lines.append(f"{name}: {written[name] or '(empty)'} -> {value}")
            remembered[name] = value
            continue
        if current is None:
            current = dict((await desk.state(ref)).fields)
        if name in current and current[name] != written[name]:
            await redis.hset(ik.state, f"edited:{epoch}:{name}", 1)
            lines.append(f"{name} was changed in the desk; the bridge no longer updates it")
            change = {"at": int(time.time() * 1000), "decision": "DESK_CHANGE", "field": name, "epoch": epoch}
            await redis.lpush(ik.audit, orjson.dumps({**change, "reason": f"{name} was changed in the desk"}))
            continue
        updates[name] = value
    if updates:
        await desk.update(ref, updates)
        remembered.update(updates)
    await remember(redis, ik, epoch, remembered)
    return lines


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
