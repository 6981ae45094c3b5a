"""The ready marker between whatever appends to an outbox (`outbox.signal` after the append) and the
drain that empties it (its marker read before each read of the outbox, settle.lua at its end): in any
interleaving of their commands, work is never left without a marker, and a drain that ends leaves it
due at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime import outbox
from bridge.runtime.scripts import _source

BASE = "route:abc"
OUTBOX = keys.IncidentKeys(BASE).outbox
NOW, LEASE = 1_000_000, 30_000
Steps = Iterator[None]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield redis.Redis.from_url(server.url)
    server.stop()


def producer(r: redis.Redis, entry: str) -> Steps:
    """The engine (or a timer, or a resolve by hand): append, then signal in a later round trip."""
    yield
    r.rpush(OUTBOX, entry)
    yield
    pipe = r.pipeline(transaction=False)
    outbox.signal(pipe, {BASE: NOW}, keys.Shards())
    pipe.execute()


def drain(r: redis.Redis, settle: Any, delivered: list[bytes], ended: list[bool]) -> Steps:
    """Delivery's drain as it holds the lease, one Redis command per step (the commands of one of its
    round trips may interleave with other clients' commands)."""
    while True:
        yield
        seen = r.zscore(keys.READY, BASE)  # before the read
        yield
        read = r.lrange(OUTBOX, 0, -1)
        if read:  # the desk calls are made here
            delivered.extend(read)
            yield
            r.lpop(OUTBOX, len(read))
        yield
        left = r.llen(OUTBOX)  # lease.lua "advance": released when 0
        yield
        kept = settle(keys=[keys.READY], args=[BASE, "" if seen is None else int(seen)])
        if left:
            continue
        if kept:
            yield
            r.zadd(keys.READY, {BASE: NOW}, lt=True)
        ended.append(True)
        return


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    producers=st.integers(1, 3),
    schedule=st.lists(st.integers(0, 5), max_size=30),
    dies=st.booleans(),
)
def test_no_interleaving_leaves_work_without_a_marker(
    client: redis.Redis, producers: int, schedule: list[int], dies: bool
) -> None:
    client.flushall()
    client.rpush(OUTBOX, "first")
    client.zadd(keys.READY, {BASE: NOW + LEASE})  # claimed: a lease ahead
    settle = client.register_script(_source("settle.lua"))
    delivered: list[bytes] = []
    ended: list[bool] = []
    actors: list[Steps] = [drain(client, settle, delivered, ended)]
    actors += [producer(client, f"p{i}") for i in range(producers)]
    for pick in schedule:  # the interleaving drawn: the drain at 0 and 1, a producer else
        next(actors[max(0, pick - 1) % len(actors)], None)
    if dies:
        actors[0].close()  # the replica dies here: its drain goes no further
    for actor in actors:  # the rest runs to its end
        for _ in actor:
            pass

    left = client.llen(OUTBOX)
    marker = client.zscore(keys.READY, BASE)
    if left:
        assert marker is not None, "work in the outbox and no marker: no replica would ever deliver it"
    if ended and left:
        assert marker <= NOW + producers, "a drain that ended leaves the work that came after it due"
    if ended and not left:
        assert len(delivered) == producers + 1


def test_settle_removes_a_marker_only_where_it_has_not_moved(client: redis.Redis) -> None:
    client.flushall()
    settle = client.register_script(_source("settle.lua"))
    client.zadd(keys.READY, {BASE: NOW})
    assert settle(keys=[keys.READY], args=[BASE, NOW]) == 0 and client.zscore(keys.READY, BASE) is None
    client.zadd(keys.READY, {BASE: NOW})
    pipe = client.pipeline(transaction=False)
    outbox.signal(pipe, {BASE: NOW}, keys.Shards())  # moved by an append
    pipe.execute()
    assert settle(keys=[keys.READY], args=[BASE, NOW]) == 1 and client.zscore(keys.READY, BASE) == NOW + 1
    assert settle(keys=[keys.READY], args=[BASE, ""]) == 1  # none was seen: kept
    client.delete(keys.READY)
    assert settle(keys=[keys.READY], args=[BASE, NOW]) == 0  # none now: nothing to do
