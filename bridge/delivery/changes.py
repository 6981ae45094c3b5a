"""Change-aware tickets (route `change:`): before a ticket opens, is an approved change under way on the
alert's configuration item? The desk's answer (`Desk.change_covering`, optional) is kept in Redis for the
route's `cache_ttl`, so every replica shares it and a burst of incidents on one CI asks the desk once.

Fails open: a desk that cannot be asked (an error, a timeout, its breaker open) or a CI that cannot be
rendered gives `Checked.failed`, and the ticket opens as if no change were known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from bridge.core import keys
from bridge.core.desk import ChangeRef, Desk
from bridge.core.errors import DeskError
from bridge.core.policy import ChangeCheck
from bridge.core.templates import render
from bridge.delivery.guard import DeskGuard
from bridge.runtime.context import Runtime

log = structlog.get_logger("bridge.delivery.changes")
NONE = b"none"  # the cached answer "no covering change"
MAX_CI = 200  # characters of a CI name sent to the desk; a longer one is a template gone wrong


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of one check: the covering change (None when none covers now), the CI asked about,
    whether the check failed (and why), and whether the shared cache answered."""

    ci: str
    change: ChangeRef | None = None
    failed: str = ""
    cached: bool = False
    asked: bool = False  # a check was made at all (the route renders a CI, the desk knows its changes)


class ChangeChecks:
    def __init__(self, runtime: Runtime, guard: DeskGuard) -> None:
        self.rt = runtime
        self.guard = guard

    async def covering(self, desk: Desk, spec: ChangeCheck, context: dict[str, Any]) -> Checked:
        """The approved change that covers now on the CI `spec.ci` renders to, from the cache or the desk."""
        ask = getattr(desk, "change_covering", None)
        if ask is None:
            return Checked("")
        try:
            ci = render(spec.ci, context).strip()
        except ValueError as exc:
            return self._failed(desk, "", f"the route's change.ci does not render: {exc}")
        if not ci:
            return Checked("")
        if len(ci) > MAX_CI or "\n" in ci:
            return self._failed(desk, ci[:MAX_CI], "the configuration item's name is too long or has a line break")
        now = self.rt.clock()
        key = keys.change_cache(desk.name, ci)
        raw = await self.rt.redis.get(key)
        if raw is not None:
            self.rt.metrics.change_checks.labels(desk.name, "hit").inc()
            change = _decode(raw)
            if change is not None and not _covers(change, now):
                change = None  # kept past its window's end: it covers now no more
            return Checked(ci, change, cached=True, asked=True)
        self.rt.metrics.change_checks.labels(desk.name, "miss").inc()
        try:
            change = await self.guard.once(desk, "change_covering", ask(ci, now))
        except DeskError as exc:
            return self._failed(desk, ci, str(exc))
        except Exception as exc:  # a plugin's bug must not hold tickets back either: fail open, loudly
            log.exception("change_check_crashed", desk=desk.name, ci=ci)
            return self._failed(desk, ci, f"{type(exc).__name__}: {exc}")
        value = NONE if change is None else orjson.dumps(_encode(change))
        await self.rt.redis.set(key, value, px=max(1, int(spec.cache_ttl * 1000)))
        return Checked(ci, change, asked=True)

    def _failed(self, desk: Desk, ci: str, reason: str) -> Checked:
        self.rt.metrics.change_checks.labels(desk.name, "failed").inc()
        log.warning("change_check_failed", desk=desk.name, ci=ci, error=reason)
        return Checked(ci, failed=reason, asked=True)


def held_until(change: ChangeRef, spec: ChangeCheck, now_ms: int) -> int:
    """When a ticket held by `change` is looked at again: when its window ends, or sooner, once the cached
    answer has expired (a change closed early ends the hold too); at least a second from now."""
    ttl_ms = int(spec.cache_ttl * 1000)
    end = change.end_ms + 1000 if change.end_ms else now_ms + ttl_ms
    return max(now_ms + 1000, min(end, now_ms + ttl_ms + 100))


def describe(change: ChangeRef) -> str:
    """A change as notes and the audit trail name it: its number, summary and planned window."""
    name = change.display or change.id
    text = f"{name} ({change.summary})" if change.summary else name
    if change.start_ms and change.end_ms:
        text += f", planned {_utc(change.start_ms)} to {_utc(change.end_ms)} UTC"
    return text


def _covers(change: ChangeRef, now_ms: int) -> bool:
    return (not change.start_ms or change.start_ms <= now_ms) and (not change.end_ms or now_ms <= change.end_ms)


def _encode(change: ChangeRef) -> list[Any]:
    return [change.id, change.display, change.url, change.start_ms, change.end_ms, change.summary]


def _decode(raw: bytes | str) -> ChangeRef | None:
    if raw in (NONE, NONE.decode()):
        return None
    try:
        ident, display, url, start, end, summary = orjson.loads(raw)
        return ChangeRef(str(ident), str(display), str(url), int(start), int(end), str(summary))
    except (ValueError, TypeError):
        return None  # unreadable (written by another version): taken as no change until the key expires


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


async def audit(rt: Runtime, ik: keys.IncidentKeys, incident: str, outcome: str, checked: Checked, reason: str) -> None:
    """An audit entry of what a change check did to an open (decision CHANGE): suppressed, annotated,
    check_failed, ended (the hold ended, the ticket opened), cleared (no ticket: cleared during the change)."""
    change = checked.change
    entry = {
        "at": rt.clock(),
        "decision": "CHANGE",
        "outcome": outcome,
        "change": (change.display or change.id) if change else "",
        "ci": checked.ci,
        "reason": rt.masker.text(reason),
        "incident": incident,
    }
    pipe = rt.redis.pipeline(transaction=False)
    pipe.lpush(ik.audit, orjson.dumps(entry))
    pipe.ltrim(ik.audit, 0, rt.scripts.audit_cap - 1)
    await rt.scripts.execute(pipe)
