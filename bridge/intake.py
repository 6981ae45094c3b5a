"""The intake writer: the XADDs of concurrent webhook requests go to Redis in one pipelined round trip.

Each request hands over its entries and waits until Redis has answered for them, so nothing is
acknowledged before it is durable, exactly as with a pipeline per request. The entries of every
request that arrives in the same event-loop turn share one pipeline: a round trip through redis-py
costs far more client CPU than the commands in it (bench/README.md), and under load many requests
arrive per turn. Nothing waits for a batch to fill: the pipeline is sent at the end of the turn in
which its first entry arrived, and batches in flight do not wait for each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.store import Redis

Entry = tuple[str, Mapping[str, Any]]  # (stream key, fields)


class IntakeWriter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[Sequence[Entry], asyncio.Future[None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def add(self, entries: Sequence[Entry]) -> None:
        """XADD `entries`; returns once Redis has acknowledged all of them, raises what Redis raised."""
        if not entries:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((entries, done))
        await done

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[Entry], asyncio.Future[None]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entries, _ in batch:
                    for key, fields in entries:
                        pipe.xadd(key, fields)  # type: ignore[arg-type]
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        except Exception as exc:  # connection lost, timeout: every waiter answers 503 (or 500)
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        index = 0
        for entries, done in batch:
            mine = replies[index : index + len(entries)]
            index += len(entries)
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if done.done():  # its request was cancelled meanwhile
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
