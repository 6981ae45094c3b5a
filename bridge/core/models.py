"""The domain model: one normalised Alert for every source, one severity scale, decisions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# The times the bridge takes from outside (an alert's start and end, a follow-up's, a silence's) lie
# within these, so that every stored one reads back: Redis's Lua writes a number of 15 digits or more
# as `2.53402300799e+14`, which it cannot parse again; milliseconds before the year 3000 have 14.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_TIME_MS = int(LATEST.timestamp() * 1000)


def in_range(value: datetime) -> datetime:
    """`value` if it lies from 1970 to 2999 (naive: as UTC); ValueError naming it otherwise."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware < LATEST:
        raise ValueError(f"time {value.isoformat()} is out of range: from 1970 to 2999 only")
    return value


Moment = Annotated[datetime, AfterValidator(in_range)]  # a datetime from outside, range-checked


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
    """What the Lua step (bridge/runtime/lua/apply_alert.lua) decided for one alert."""

    OPEN = "OPEN"
    PENDING = "PENDING"  # held until the route's threshold is met
    NOTE = "NOTE"
    RESOLVE_PENDING = "RESOLVE_PENDING"
    RESOLVE = "RESOLVE"
    REOPEN = "REOPEN"
    SUPPRESSED = "SUPPRESSED"
    FLAPPING = "FLAPPING"
    DUPLICATE = "DUPLICATE"
    MOVED = "MOVED"  # its incident was adopted by its topology parent: the alert runs there instead


class FollowUpKind(StrEnum):
    """What a notification about a problem says besides its state: news for the ticket."""

    ACKNOWLEDGEMENT = "acknowledgement"
    COMMENT = "comment"  # a comment, a custom notification, another update by a human
    FLAPPING_START = "flapping_start"
    FLAPPING_STOP = "flapping_stop"
    DOWNTIME_START = "downtime_start"
    DOWNTIME_END = "downtime_end"

    @property
    def note(self) -> str:
        """The route's `notes:` entry that takes it: acknowledgement, comment, flapping or downtime."""
        return self.value.split("_", 1)[0]


_FOLLOW_UP_WORDS = {
    FollowUpKind.ACKNOWLEDGEMENT: "Acknowledged",
    FollowUpKind.COMMENT: "Comment",
    FollowUpKind.FLAPPING_START: "Flapping started",
    FollowUpKind.FLAPPING_STOP: "Flapping stopped",
    FollowUpKind.DOWNTIME_START: "Scheduled downtime started",
    FollowUpKind.DOWNTIME_END: "Scheduled downtime ended",
}


class FollowUp(BaseModel):
    """A follow-up on an alert (an acknowledgement, a comment, flapping, downtime), as the source said it.

    `at` is when the tool sent it, where it says (Nagios `$TIMET$`): two acknowledgements with the same
    words at different times are two follow-ups, one notification sent twice is one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FollowUpKind
    author: str = ""
    comment: str = ""
    at: Moment | None = None

    def text(self) -> str:
        """The note line: `Acknowledged by alice: restarting the pool`."""
        by = f" by {self.author}" if self.author else ""
        said = f": {self.comment}" if self.comment else ""
        return f"{_FOLLOW_UP_WORDS[self.kind]}{by}{said}"


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
    starts_at: Moment | None = None
    ends_at: Moment | None = None
    links: list[str] = Field(default_factory=list)
    event: FollowUp | None = None  # what a follow-up notification says (an acknowledgement, a comment, ...)
    received_at: Moment
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
