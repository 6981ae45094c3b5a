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
from bridge.core.models import Alert
from bridge.core.routing import match_labels
from bridge.runtime.scripts import Redis

MAX_MATCHERS = 64  # per silence


class Silence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    matchers: list[str] = Field(min_length=1, max_length=MAX_MATCHERS)
    starts_at: int  # ms
    ends_at: int  # ms
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
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cache: dict[Any, Silence] = {}

    async def add(self, silence: Silence) -> Silence:
        if silence.ends_at <= silence.starts_at:
            raise ValueError("a silence must end after it starts")
        await self.redis.hset(keys.SILENCES, silence.id, silence.model_dump_json())
        return silence

    async def list(self) -> list[Silence]:
        raw = await self.redis.hgetall(keys.SILENCES)
        return sorted((Silence.model_validate(orjson.loads(v)) for v in raw.values()), key=lambda s: s.starts_at)

    async def get(self, silence_id: str) -> Silence | None:
        raw = await self.redis.hget(keys.SILENCES, silence_id)
        return None if raw is None else Silence.model_validate(orjson.loads(raw))

    async def expire(self, silence_id: str, now_ms: int) -> bool:
        raw = await self.redis.hget(keys.SILENCES, silence_id)
        if raw is None:
            return False
        silence = Silence.model_validate(orjson.loads(raw))
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
        return [s for s in map(self._parsed, stored.values()) if s.active(now_ms)]

    async def delete_expired(self, now_ms: int, *, keep_ms: int = 0) -> Sequence[str]:
        """Delete the silences that ended more than `keep_ms` ago; their ids."""
        gone = [s.id for s in await self.list() if s.ends_at + keep_ms <= now_ms]
        if gone:
            await self.redis.hdel(keys.SILENCES, *gone)
        return gone

    def known(self, stored: Mapping[Any, Any]) -> bool:
        """Whether every silence as read was parsed before (then `active` compiles nothing)."""
        return all(raw in self._cache for raw in stored.values())

    def _parsed(self, raw: Any) -> Silence:
        """Parsed, its regexes compiled, once per stored version, not once per batch."""
        silence = self._cache.get(raw)
        if silence is None:
            if len(self._cache) > 1000:
                self._cache.clear()
            silence = Silence.model_validate(orjson.loads(raw))
            silence.parsed  # noqa: B018 (compiled now: `known` tells a caller whether this may take time)
            self._cache[raw] = silence
        return silence
