"""Silences and maintenance windows: Alertmanager matchers, a start, an end and a comment.

Stored in one Redis hash so every replica sees the same set. A silenced firing alert is recorded
(SUPPRESSED) but opens nothing; resolutions always flow, so incidents opened before can close.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.core import keys
from bridge.core.matchers import Matcher, matches_all, parse_matchers
from bridge.core.models import MAX_TIME_MS, Alert
from bridge.core.routing import match_labels
from bridge.runtime.bad_records import Reporter
from bridge.runtime.scripts import Redis

MAX_MATCHERS = 64  # per silence


class Silence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    matchers: list[str] = Field(min_length=1, max_length=MAX_MATCHERS)
    starts_at: int = Field(ge=0, le=MAX_TIME_MS)  # ms; before the year 3000, as every stored time
    ends_at: int = Field(ge=0, le=MAX_TIME_MS)  # ms
    comment: str = ""
    created_by: str = ""

    @field_validator("matchers")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        if sum(len(parse_matchers(text)) for text in value) > MAX_MATCHERS:
            raise ValueError(f"a silence has at most {MAX_MATCHERS} matchers")
        return value

    def active(self, now_ms: int) -> bool:
        return self.starts_at <= now_ms < self.ends_at

    def status(self, now_ms: int) -> str:
        """pending, active or expired, as Alertmanager says."""
        if now_ms < self.starts_at:
            return "pending"
        return "active" if now_ms < self.ends_at else "expired"

    def view(self, now_ms: int) -> dict[str, object]:
        """What the CLI prints and the API answers."""
        return {**self.model_dump(), "status": self.status(now_ms)}

    @cached_property
    def parsed(self) -> list[Matcher]:
        """The matchers, parsed (and their regexes compiled) once per silence."""
        return [m for text in self.matchers for m in parse_matchers(text)]

    @cached_property
    def regex_size(self) -> int:
        """RE2 instructions of its regexes: with a value's length, what bounds the work of matching it."""
        return sum(m.pattern.size for m in self.parsed if m.pattern is not None)

    def matches(self, alert: Alert) -> bool:
        return matches_all(self.parsed, match_labels(alert))


def new_silence(
    matchers: Sequence[str],
    *,
    now_ms: int,
    duration_s: float | None = None,
    starts_at: int | None = None,
    ends_at: int | None = None,
    comment: str = "",
    created_by: str = "",
) -> Silence:
    """A silence from `now` (or `starts_at`) for `duration_s` (or until `ends_at`), both in ms.

    Raises ValueError naming what is wrong. Its regexes are compiled here (milliseconds each at worst,
    holding the GIL): a server calls it off the event loop.
    """
    start = now_ms if starts_at is None else starts_at
    if ends_at is None:
        if duration_s is None:
            raise ValueError("a silence needs a duration or an end")
        ends_at = start + int(duration_s * 1000)
    if ends_at <= start:
        raise ValueError("a silence must end after it starts")
    if not 0 <= start < ends_at <= MAX_TIME_MS:
        raise ValueError("a silence must start after 1970 and end before the year 3000: its duration or end is too far")
    try:
        silence = Silence(
            matchers=list(matchers), starts_at=start, ends_at=ends_at, comment=comment, created_by=created_by
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    silence.parsed  # noqa: B018 (compiled now, where the caller chose to spend the time)
    return silence


def silenced(active: Sequence[Silence], alerts: Sequence[Alert]) -> set[int]:
    """Indices of the alerts that one of the `active` silences covers."""
    return {i for i, alert in enumerate(alerts) if any(s.matches(alert) for s in active)}


class Silences:
    """The silences hash. A stored silence that cannot be read is skipped wherever it is read, and
    reported to `bad_record` (log and counter) once; expiring it deletes it."""

    def __init__(self, redis: Redis, bad_record: Reporter | None = None) -> None:
        self.redis = redis
        self.bad_record = bad_record or Reporter()
        self._cache: dict[Any, Silence] = {}
        self._bad: set[Any] = set()  # stored versions that could not be read

    def _load(self, key: Any, raw: Any) -> Silence | None:
        """The stored silence, or None (reported) if it cannot be read."""
        try:
            return Silence.model_validate(orjson.loads(raw))
        except (ValueError, TypeError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
            self.bad_record("silence", _s(key), exc, raw)
            return None

    async def add(self, silence: Silence) -> Silence:
        if silence.ends_at <= silence.starts_at:
            raise ValueError("a silence must end after it starts")
        await self.redis.hset(keys.SILENCES, silence.id, silence.model_dump_json())
        return silence

    async def list(self) -> list[Silence]:
        raw = await self.redis.hgetall(keys.SILENCES)
        found = (self._load(k, v) for k, v in raw.items())
        return sorted((s for s in found if s is not None), key=lambda s: s.starts_at)

    async def get(self, silence_id: str) -> Silence | None:
        raw = await self.redis.hget(keys.SILENCES, silence_id)
        return None if raw is None else self._load(silence_id, raw)

    async def expire(self, silence_id: str, now_ms: int) -> bool:
        raw = await self.redis.hget(keys.SILENCES, silence_id)
        if raw is None:
            return False
        silence = self._load(silence_id, raw)
        if silence is None:  # unreadable: nothing to keep of it
            await self.redis.hdel(keys.SILENCES, silence_id)
            return True
        ended = silence.model_copy(update={"ends_at": min(silence.ends_at, now_ms)})
        await self.redis.hset(keys.SILENCES, silence_id, ended.model_dump_json())
        return True

    async def matching(self, alerts: Sequence[Alert], now_ms: int) -> set[int]:
        """Indices of the alerts that an active silence covers."""
        return self.covered(await self.redis.hgetall(keys.SILENCES), alerts, now_ms)

    def covered(self, stored: Mapping[Any, Any], alerts: Sequence[Alert], now_ms: int) -> set[int]:
        """As `matching`, from the silences hash as read (the engine reads it with its batch)."""
        active = self.active(stored, now_ms)
        return silenced(active, alerts) if active else set()

    def active(self, stored: Mapping[Any, Any], now_ms: int) -> Sequence[Silence]:
        """The silences active at `now_ms`, from the silences hash as read."""
        parsed = (self._parsed(k, v) for k, v in stored.items())
        return [s for s in parsed if s is not None and s.active(now_ms)]

    async def delete_expired(self, now_ms: int, *, keep_ms: int = 0) -> Sequence[str]:
        """Delete the silences that ended more than `keep_ms` ago; their ids."""
        gone = [s.id for s in await self.list() if s.ends_at + keep_ms <= now_ms]
        if gone:
            await self.redis.hdel(keys.SILENCES, *gone)
        return gone

    def known(self, stored: Mapping[Any, Any]) -> bool:
        """Whether every silence as read was parsed before (then `active` compiles nothing)."""
        return all(raw in self._cache or raw in self._bad for raw in stored.values())

    def _parsed(self, key: Any, raw: Any) -> Silence | None:
        """Parsed, its regexes compiled, once per stored version, not once per batch; None if unreadable."""
        silence = self._cache.get(raw)
        if silence is None:
            if raw in self._bad:
                return None
            if len(self._cache) > 1000:
                self._cache.clear()
                self._bad.clear()
            silence = self._load(key, raw)
            try:
                if silence is not None:
                    silence.parsed  # noqa: B018 (compiled now: `known` tells a caller whether this may take time)
            except ValueError as exc:  # stored by a version that took a regex this one refuses
                self.bad_record("silence", _s(key), exc, raw)
                silence = None
            if silence is None:
                self._bad.add(raw)
                return None
            self._cache[raw] = silence
        return silence


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
