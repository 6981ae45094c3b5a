"""Shared round trips (bridge/runtime/batch.py): the pipelines of one event-loop turn go to Redis together, and
each caller gets exactly what its own pipeline would have got."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.batch import Batcher
from bridge.runtime.scripts import Scripts


class Counting(Batcher):
    """The real batcher, counting the round trips it makes."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client, Scripts(client).load)
        self.round_trips = 0

    async def _run(self, commands: list[Any]) -> list[Any]:
        self.round_trips += 1
        return await super()._run(commands)


async def test_pipelines_of_one_turn_share_a_round_trip_and_each_gets_its_own_replies(redis: aioredis.Redis) -> None:
    batcher = Counting(redis)

    async def caller(i: int) -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        pipe.set(f"k{i}", f"v{i}")
        pipe.get(f"k{i}")
        pipe.incr("shared")
        return await batcher.execute(pipe)

    replies = await asyncio.gather(*(caller(i) for i in range(20)))
    assert batcher.round_trips == 1
    assert [r[:2] for r in replies] == [[True, f"v{i}".encode()] for i in range(20)]
    assert sorted(r[2] for r in replies) == list(range(1, 21))  # every INCR ran, once


async def test_an_error_goes_only_to_the_caller_whose_command_failed(redis: aioredis.Redis) -> None:
    batcher = Counting(redis)
    await redis.set("text", "not a list")

    async def failing() -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        pipe.lpush("text", "x")  # WRONGTYPE
        pipe.set("after", "1")  # still runs, as in a pipeline of its own
        return await batcher.execute(pipe)

    async def fine() -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        pipe.set("fine", "1")
        return await batcher.execute(pipe)

    outcome = await asyncio.gather(failing(), fine(), return_exceptions=True)
    assert isinstance(outcome[0], ResponseError) and "WRONGTYPE" in str(outcome[0])
    assert outcome[1] == [True]
    assert await redis.get("after") == b"1"
    kept = redis.pipeline(transaction=False)
    kept.lpush("text", "x")
    [error] = await batcher.execute(kept, raise_on_error=False)
    assert isinstance(error, ResponseError)


async def test_a_cancelled_first_caller_does_not_strand_the_others(redis: aioredis.Redis) -> None:
    batcher = Counting(redis)

    async def caller(key: str) -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        pipe.set(key, "1")
        return await batcher.execute(pipe)

    first = asyncio.ensure_future(caller("first"))
    others = [asyncio.ensure_future(caller(f"other{i}")) for i in range(3)]
    await asyncio.sleep(0)  # the first leads and waits for the turn's other callers, which join it
    first.cancel()  # before it sends
    assert await asyncio.wait_for(asyncio.gather(*others), 5) == [[True]] * 3
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await redis.exists("other0", "other1", "other2") == 3


async def test_scripts_redis_lost_are_loaded_again_for_just_those_calls(redis: aioredis.Redis) -> None:
    scripts = Scripts(redis)
    await scripts.load()
    await redis.script_flush()
    pipe = redis.pipeline(transaction=False)
    pipe.set("before", "1")
    scripts.take(keys.IncidentKeys("x"), "token", 1000, 100, pipe)  # a queued EVALSHA: NOSCRIPT, then run again
    pipe.incr("counted")
    replies = await scripts.execute(pipe)
    assert replies[0] is True and replies[1][0] == 1 and replies[2] == 1  # each command ran once
    assert await scripts.loaded()


async def test_a_round_trip_redis_does_not_answer_fails_after_the_timeout_and_the_next_one_works(
    redis_server: EmbeddedRedis,
) -> None:
    """The shared round trips' client has no per-reply timeout; the round trip is timed as a whole.
    Redis stopped (SIGSTOP: the connection stays open, nothing answers) fails it as a Redis timeout,
    and once Redis answers again the next round trip works on a fresh connection."""
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=None)  # (redis-py's default is 5 s)
    batcher = Batcher(client, Scripts(client).load, timeout=0.5)
    pipe = client.pipeline(transaction=False)
    pipe.set("k", "v")
    assert await batcher.execute(pipe) == [True]
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await batcher.execute(pipe)
        assert time.monotonic() - started < 5  # the timeout's 0.5 s, not forever
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    get = client.pipeline(transaction=False)
    get.get("k")
    assert await batcher.execute(get) == [b"v"]
    await client.aclose()


async def test_round_trips_keep_their_connections_and_replace_one_redis_closed(redis: aioredis.Redis) -> None:
    """Round trips one after another go out on one connection of the batcher's own; one that Redis
    closed meanwhile (a restart, a client kill) is replaced without the caller seeing an error."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}")
    batcher = Batcher(client, Scripts(client).load, timeout=5)

    async def incr() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.incr("n")
        pipe.client_id()
        return await batcher.execute(pipe)

    ids = {(await incr())[1] for _ in range(20)}
    assert len(ids) == 1  # one connection for all twenty
    await redis.client_kill_filter(_id=ids.pop())
    count, _ = await incr()  # on a new connection, the killed one noticed or failed before any reply
    assert count == 21 and await redis.get("n") == b"21"  # and nothing ran twice
    await batcher.aclose()
    await client.aclose()


def _every_reply_shape(pipe: Any) -> Any:
    """Commands whose replies redis-py's response callbacks turn into bools, floats, dicts, tuples..."""
    pipe.set("s", "v")
    pipe.get("s")
    pipe.get("missing")
    pipe.exists("s", "missing")
    pipe.hgetall("h")
    pipe.hmget("h", ["a", "missing"])
    pipe.zscore("z", "m1")
    pipe.zrange("z", 0, -1, withscores=True)
    pipe.zrangebyscore("z", "-inf", "+inf", withscores=True, start=0, num=1)
    pipe.xrange("x")
    pipe.xreadgroup("g", "c", {"x": "0"}, count=10)
    pipe.xinfo_groups("x")
    pipe.xpending("x", "g")
    pipe.ttl("s")
    pipe.lrange("l", 0, -1)
    pipe.lpush("s", "x")  # WRONGTYPE: an error reply, returned in place
    pipe.script_exists("0" * 40)
    pipe.ping()
    pipe.type("h")
    return pipe


@pytest.mark.parametrize("protocol", [2, 3])
async def test_replies_are_parsed_as_redis_py_parses_them(redis_server: EmbeddedRedis, protocol: int) -> None:
    """The batcher reads replies itself (bridge/runtime/batch.py `_Wire`) and applies the client's response
    callbacks: every reply is what the same pipeline executed by redis-py returns, in RESP2 and RESP3."""
    client = aioredis.Redis.from_url(redis_server.url, protocol=protocol)
    await client.hset("h", mapping={"a": "1", "b": "2"})
    await client.zadd("z", {"m1": 1.5, "m2": 2.5})
    await client.xgroup_create("x", "g", id="0", mkstream=True)
    await client.xadd("x", {"f": "v"})
    await client.rpush("l", "1", "2")
    await client.set("s", "v", ex=100)
    # read-only after the SET: both sides see the same state (XREADGROUP from 0 re-reads the pending)
    await client.xreadgroup("g", "c", {"x": ">"})
    expected = await _every_reply_shape(client.pipeline(transaction=False)).execute(raise_on_error=False)
    batcher = Batcher(client, Scripts(client).load, timeout=5)
    got = await batcher.execute(_every_reply_shape(client.pipeline(transaction=False)), raise_on_error=False)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        if isinstance(theirs, Exception):
            assert type(mine) is type(theirs) and str(mine) == str(theirs)
        elif isinstance(theirs, list) and theirs and isinstance(theirs[0], dict) and "last-delivered-id" in theirs[0]:
            assert mine == theirs  # XINFO GROUPS: the same dicts
        else:
            assert mine == theirs and type(mine) is type(theirs)
    await batcher.aclose()
    await client.aclose()


async def test_a_connection_closed_in_the_middle_of_the_replies_is_a_connection_error(redis: aioredis.Redis) -> None:
    """Replies cut off after some have come: the round trip fails as a connection error, not as one
    that may be made again (some of its commands ran); the next round trip works on a new connection."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}")
    batcher = Batcher(client, Scripts(client).load, timeout=5)
    pipe = client.pipeline(transaction=False)
    pipe.client_id()
    (conn_id,) = await batcher.execute(pipe)
    await redis.set("big", "x" * (4 << 20))
    cut = client.pipeline(transaction=False)
    cut.incr("n")
    for _ in range(8):
        cut.get("big")  # 32 MiB of replies: the kill lands while they are still coming
    cut.incr("n")
    round_trip = asyncio.ensure_future(batcher.execute(cut))
    ran = None
    while ran != b"2":  # until Redis has run the whole round trip: its replies are on the way then
        ran = await redis.get("n")
    await redis.client_kill_filter(_id=conn_id)
    with pytest.raises(aioredis.ConnectionError):
        await round_trip
    again = client.pipeline(transaction=False)
    again.incr("n")
    assert await batcher.execute(again) == [3]  # the cut one ran once and was not made again
    await batcher.aclose()
    await client.aclose()
