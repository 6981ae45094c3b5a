"""lease.lua's "take", "advance" and "pop": a finished action's entries leave the head of the outbox
once, however often the call runs (a round trip made again after its connection failed), and only
under the caller's lease; a take made again by the lease's holder takes it again."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.core import keys
from bridge.runtime.scripts import Scripts

IK = keys.IncidentKeys("route:abc")


async def _setup(redis: aioredis.Redis, *entries: bytes) -> Scripts:
    scripts = Scripts(redis)
    await scripts.load()
    await redis.rpush(IK.outbox, *entries)
    await redis.set(IK.lease, "mine", px=30_000)
    return scripts


async def test_advance_made_twice_takes_the_action_off_once(redis: aioredis.Redis) -> None:
    scripts = await _setup(redis, b"open", b"note-1", b"note-2", b"resolve")
    pipe = redis.pipeline(transaction=False)
    scripts.advance(IK, "mine", 30_000, [b"open"], pipe)
    scripts.advance(IK, "mine", 30_000, [b"open"], pipe)  # the same call again
    assert await scripts.execute(pipe) == [3, 3]
    pipe = redis.pipeline(transaction=False)
    scripts.advance(IK, "mine", 30_000, [b"note-1", b"note-2"], pipe)  # a coalesced note
    scripts.advance(IK, "mine", 30_000, [b"note-1", b"note-2"], pipe)
    assert await scripts.execute(pipe) == [1, 1]
    assert await redis.lrange(IK.outbox, 0, -1) == [b"resolve"]


async def test_advance_releases_the_lease_once_the_outbox_is_empty(redis: aioredis.Redis) -> None:
    scripts = await _setup(redis, b"open")
    pipe = redis.pipeline(transaction=False)
    scripts.advance(IK, "mine", 30_000, [b"open"], pipe)
    assert await scripts.execute(pipe) == [0]
    assert not await redis.exists(IK.lease)


async def test_pop_made_twice_takes_a_dead_lettered_action_off_once_and_keeps_the_lease(
    redis: aioredis.Redis,
) -> None:
    scripts = await _setup(redis, b"open", b"note")
    pipe = redis.pipeline(transaction=False)
    scripts.pop(IK, "mine", [b"open"], pipe)
    scripts.pop(IK, "mine", [b"open"], pipe)
    assert await scripts.execute(pipe) == [1, 1]
    assert await redis.lrange(IK.outbox, 0, -1) == [b"note"]
    assert await redis.get(IK.lease) == b"mine"


async def test_without_the_lease_nothing_is_taken_off(redis: aioredis.Redis) -> None:
    scripts = await _setup(redis, b"open", b"note")
    pipe = redis.pipeline(transaction=False)
    scripts.advance(IK, "another replica's", 30_000, [b"open"], pipe)
    scripts.pop(IK, "another replica's", [b"open"], pipe)
    assert await scripts.execute(pipe) == [-1, 0]
    assert await redis.llen(IK.outbox) == 2


async def test_take_made_again_by_the_holder_takes_the_lease_again_and_no_one_else_does(
    redis: aioredis.Redis,
) -> None:
    """A take whose round trip is made again (its reply lost), or a drain after one here that failed
    before releasing: the same token takes the lease again, renewed; another token does not."""
    scripts = await _setup(redis, b"note")
    await redis.delete(IK.lease)
    pipe = redis.pipeline(transaction=False)
    scripts.take(IK, "mine", 30_000, 10, pipe)
    scripts.take(IK, "mine", 60_000, 10, pipe)  # the same call again
    scripts.take(IK, "another replica's", 30_000, 10, pipe)
    first, again, other = await scripts.execute(pipe)
    assert first[:2] == again[:2] == [1, [b"note"]]
    assert other == [0]
    assert await redis.get(IK.lease) == b"mine"
    assert await redis.pttl(IK.lease) > 30_000  # renewed by the second take
