"""Upkeep of the shared state, in the background of every bridge process, so that nothing in Redis
grows without bound and no request pays for reading it.

- Every `gauges_every_s`: the shared-state gauges of /metrics are read from Redis (`Metrics.refresh`,
  a bounded number of pages with the event loop free in between); a scrape only renders them.
- Every `upkeep_every_s`:
  - the incidents index: a base whose keys expired (a resolved incident `retention` after its end, a
    pending one after its threshold window) leaves the index once its last change is older than
    `retention`; open incidents stay, however old;
  - each desk's ticket index (the loop back's): a ticket whose incident's keys expired leaves it (a page
    per desk per pass);
  - silences that ended more than `retention` ago are deleted;
  - dead letters older than `dlq_max_age_ms` (or beyond `dlq_max_len`) are dropped, counted and
    logged (bridge.runtime.dead_letters; each write trims too).

Every replica runs it; each step is idempotent, so replicas doing it at once only repeat a little work.
docs/operations.md tables every key family and what bounds it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.exceptions
import structlog

from bridge.core import keys
from bridge.engine.silences import Silences
from bridge.runtime import dead_letters
from bridge.runtime.context import Runtime, wait_for_event

log = structlog.get_logger("bridge.admin.upkeep")
INDEX_PAGE = 500  # index entries looked at per round trip
INDEX_PAGES = 20  # per upkeep pass at most; the rest waits for the next pass


@dataclass(frozen=True, slots=True)
class Trimmed:
    index: int  # incident bases taken out of the index
    silences: int  # expired silences deleted
    dead_letters: int  # dead letters dropped (by length or age)


class Upkeep:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._refreshed: float | None = None  # loop time of the last refresh of the gauges
        self._ticket_cursors: dict[str, int] = {}  # desk -> where the ticket index's trim goes on (HSCAN)

    async def refresh(self) -> None:
        """Read the shared-state gauges from Redis now (the bridge does once before it is started)."""
        self._refreshed = asyncio.get_running_loop().time()
        await self.rt.metrics.refresh(self.rt.redis, self.rt.shards)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh the gauges every `gauges_every_s` (at once if never), trim every `upkeep_every_s`, until `stop`."""
        loop = asyncio.get_running_loop()
        trims_due = loop.time() + self.rt.tuning.upkeep_every_s  # start-up stays light
        while not stop.is_set():
            now = loop.time()
            gauges_due = self.rt.tuning.gauges_every_s + (now if self._refreshed is None else self._refreshed)
            if self._refreshed is None or now >= gauges_due:
                try:  # Redis away is handled inside (bridge_redis_up 0); the loop must not die of the rest
                    await self.refresh()
                except Exception:
                    log.exception("gauges_refresh_failed")
                gauges_due = now + self.rt.tuning.gauges_every_s
            if now >= trims_due:
                try:
                    await self.trim()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    log.warning("upkeep_redis_unavailable", error=str(exc))
                except Exception:
                    log.exception("upkeep_failed")
                trims_due = now + self.rt.tuning.upkeep_every_s
            await wait_for_event(stop, max(0.0, min(gauges_due, trims_due) - loop.time()))

    async def trim(self) -> Trimmed:
        """One pass of the trims."""
        now = self.rt.clock()
        index = await self.trim_index(now)
        await self.trim_tickets()
        gone = await Silences(self.rt.redis).delete_expired(now, keep_ms=self.rt.tuning.retention_ms)
        if gone:
            log.info("silences_deleted", silences=list(gone), ended_before_ms=now - self.rt.tuning.retention_ms)
        async with self.rt.redis.pipeline(transaction=False) as pipe:
            dead_letters.trim(pipe, self.rt.tuning, now)
            replies = await pipe.execute()
        dropped = dead_letters.dropped(self.rt.metrics, replies)
        return Trimmed(index, len(gone), dropped)

    async def trim_tickets(self) -> int:
        """Take out of each desk's ticket index (the loop back's) the tickets whose incident is forgotten:
        its keys expired. A page of each index per pass, where the last pass stopped."""
        removed = 0
        for desk in self.rt.config.desks:
            key = keys.desk_tickets(desk)
            scanned: Any = await self.rt.redis.hscan(key, self._ticket_cursors.get(desk, 0), count=INDEX_PAGE)
            cursor, page = scanned
            self._ticket_cursors[desk] = cursor
            if not page:
                continue
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                for incident in page.values():
                    pipe.exists(keys.IncidentKeys(keys.base_of(_s(incident))).state)
                alive = await pipe.execute()
            gone = [ticket for ticket, exists in zip(page, alive, strict=True) if not exists]
            if gone:
                removed += int(await self.rt.redis.hdel(key, *gone))
        if removed:
            log.info("ticket_index_trimmed", removed=removed)
        return removed

    async def trim_index(self, now_ms: int) -> int:
        """Take out of the incidents index the bases last changed over `retention` ago whose keys are gone."""
        cutoff = now_ms - self.rt.tuning.retention_ms
        kept = removed = 0
        for _ in range(INDEX_PAGES):
            page: Any = await self.rt.redis.zrangebyscore(keys.INCIDENTS, "-inf", cutoff, start=kept, num=INDEX_PAGE)
            if not page:
                break
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                for base in page:
                    pipe.exists(keys.IncidentKeys(_s(base)).state)
                alive = await pipe.execute()
            gone = [base for base, exists in zip(page, alive, strict=True) if not exists]
            if gone:
                removed += int(await self.rt.redis.zrem(keys.INCIDENTS, *gone))
            kept += len(page) - len(gone)
            if len(page) < INDEX_PAGE:
                break
        if removed:
            log.info("incidents_index_trimmed", removed=removed, changed_before_ms=cutoff)
        return removed


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
