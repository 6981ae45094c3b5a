"""The domain model: one normalised Alert for every source, one severity scale, decisions."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    """One scale for all sources, most severe first."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INFO = "info"
    OK = "ok"

    @property
    def rank(self) -> int:
        """0 for critical up to 5 for ok: lower is worse."""
        return _SEVERITY_ORDER.index(self)


_SEVERITY_ORDER = list(Severity)


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"


class DecisionKind(StrEnum):
    """What the Lua step decided for one alert (DESIGN §4)."""

    OPEN = "OPEN"
    PENDING = "PENDING"  # held until the route's threshold is met
    NOTE = "NOTE"
    RESOLVE_PENDING = "RESOLVE_PENDING"
    RESOLVE = "RESOLVE"
    REOPEN = "REOPEN"
    SUPPRESSED = "SUPPRESSED"
    FLAPPING = "FLAPPING"
    DUPLICATE = "DUPLICATE"


class Alert(BaseModel):
    """One alert from one monitoring tool, normalised. Frozen: adapters build it, nobody edits it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    kind: str
    identity: str
    name: str
    resource: str = ""
    severity: Severity = Severity.WARNING
    status: Status = Status.FIRING
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    links: list[str] = Field(default_factory=list)
    received_at: datetime
    raw: dict[str, Any] = Field(default_factory=dict)

    def occurrence(self) -> int:
        """Milliseconds of `starts_at` (else `received_at`): tells a re-fire from a repeat."""
        when = self.starts_at or self.received_at
        return int(when.timestamp() * 1000)

    def field(self, name: str) -> str:
        """A top-level field or `labels.x` / `annotations.x`, as a string ('' when absent)."""
        head, _, rest = name.partition(".")
        if head in ("labels", "annotations") and rest:
            return str(getattr(self, head).get(rest, ""))
        value = getattr(self, name, None)
        return "" if value is None else str(value)


def base36(number: int) -> str:
    """The epoch spelling apply_alert.lua uses: milliseconds in base 36."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = digits[digit] + out
        if not number:
            return out


def stable_hash(value: Any, *, version: str = "v1", length: int = 16) -> str:
    """Hash of canonical JSON with a version prefix, so a change of scheme never collides."""
    canon = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(version.encode() + b":" + canon).hexdigest()[:length]
