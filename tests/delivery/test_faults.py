"""Failures on both sides: a replica killed mid-work, a desk that times out, throttles, errs or rejects."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.process.server import Bridge
from bridge.runtime import outbox
from tests.amp import alert, group
from tests.cluster import queued_commands
from tests.conftest import FAST, ON_CLUSTER, Snow, eventually, mapping, post

ROOT = Path(__file__).resolve().parents[2]

SHARDS = keys.Shards(keys.CLUSTER_SHARDS if ON_CLUSTER else 1)  # the bridges' own (their default for the Redis)


def url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


def creates(snow: Snow) -> list[dict[str, Any]]:
    return [r for r in snow.store.requests if r["method"] == "POST"]


def write_mapping(tmp_path: Path, snow: Snow, **kw: Any) -> Path:
    """The test mapping as a YAML file, for a bridge run as a separate process."""
    config = mapping(snow.url, **kw)
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # SecretStr dumps masked
    path = tmp_path / "mapping.yaml"
    path.write_bytes(orjson.dumps(data))  # JSON is YAML
    return path


def spawn_replica(config: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_CLAIM_IDLE_MS": "500",
        "BRIDGE_CLAIM_EVERY_S": "0.2",
        "BRIDGE_LEASE_MS": "1000",
        "BRIDGE_TIMER_TICK_S": "0.05",
        "BRIDGE_BLOCK_MS": "50",
    }
    args = [sys.executable, "-m", "bridge.cli", "serve", "--config", str(config), "--port", str(port)]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(port: int) -> None:
    import aiohttp

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, within=15)


async def test_sigkilled_replica_loses_nothing_and_duplicates_nothing(
    snow: Snow, redis_server: EmbeddedRedis, make_bridge: Any, tmp_path: Path
) -> None:
    """SIGKILL a replica mid-burst: a second replica takes over its unacked intake and its leases;
    every group gets exactly one ticket."""
    snow.faults.set(latency_ms=150)  # desk calls are in flight when the replica dies
    port = free_port()
    victim = spawn_replica(write_mapping(tmp_path, snow), redis_server.url, port)
    try:
        await wait_ready(port)
        instances = [f"host-{i:02d}:9100" for i in range(40)]
        answers = await asyncio.gather(
            *[post(f"http://127.0.0.1:{port}/webhook/alertmanager", group(alert(instance=i))) for i in instances]
        )
        assert all(status == 202 for status, _ in answers)
        await eventually(lambda: len(snow.store.requests) >= 3, within=10)
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        assert len(snow.incidents()) < len(instances), "the victim finished everything; the test proves nothing"
    finally:
        if victim.poll() is None:
            victim.kill()
        if victim.stderr:
            victim.stderr.close()

    tuning = {"tuning": _fast(claim_idle_ms=500, lease_ms=1000)}
    await make_bridge(mapping(snow.url), consumer="survivor", **tuning)
    await eventually(lambda: len(snow.incidents()) == len(instances), within=30)
    await asyncio.sleep(1.5)
    descriptions = sorted(r["short_description"].rsplit(" ", 1)[1] for r in snow.incidents())
    assert descriptions == sorted(instances), "a group was lost or got two tickets"


async def test_desk_timeout_after_create_is_adopted_not_duplicated(snow: Snow, make_bridge: Any) -> None:
    """The desk stores the record but the answer is lost: the retry finds it by correlation id."""
    snow.faults.set(timeout_after_commit=1, hang_s=3)
    bridge = await make_bridge(mapping(snow.url))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await asyncio.sleep(2.5)
    assert len(snow.incidents()) == 1
    finds = [r for r in snow.store.requests if r["method"] == "GET" and "correlation_id" in str(r["query"])]
    assert finds, "the retry did not look the incident up before creating"
    assert len(creates(snow)) == 1


async def test_rate_limited_desk_is_retried_after_retry_after(snow: Snow, make_bridge: Any) -> None:
    """429 with Retry-After: the create is retried after the announced delay and succeeds."""
    snow.faults.set(rate_limit=1, retry_after=1)
    bridge = await make_bridge(mapping(snow.url))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    statuses = [r["status"] for r in creates(snow)]
    assert statuses == [429, 201]


async def test_unavailable_desk_is_retried_until_delivered(snow: Snow, make_bridge: Any) -> None:
    """Several 503s in a row: the action stays durable and is delivered once the desk recovers."""
    snow.faults.set(fail_5xx=6)
    bridge = await make_bridge(mapping(snow.url))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents(), within=15)
    assert [r["status"] for r in creates(snow)][-1] == 201
    assert 503 in [r["status"] for r in snow.store.requests]
    assert len(snow.incidents()) == 1


async def test_rejected_resolve_is_dead_lettered_with_the_answer(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """A 403 data-policy answer is not retried: the action lands in the DLQ with request and answer,
    and `bridge dlq list` shows it."""
    config = mapping(snow.url, resolve_after="100ms")
    desk = config.desks["snow"].model_copy(update={"close_code": "Not a real close code"})
    bridge = await make_bridge(config.model_copy(update={"desks": {"snow": desk}}))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await post(url(bridge), group(alert("resolved")))
    letters = await eventually(lambda: redis.xrange(keys.DLQ), within=10)
    fields = {k.decode(): v for k, v in letters[0][1].items()}
    error = orjson.loads(fields["error"])
    assert (error["status"], error["action"]) == (403, "resolve")
    assert "close_code" in error["request"]["json"]
    assert "Operation Failed" in error["answer"] or "mandatory" in error["answer"] or "close" in error["answer"]
    assert [r["status"] for r in snow.store.requests if r["method"] == "PATCH"].count(403) == 1

    out = await cli("dlq", "list", "--redis-url", redis_server.url)
    listed = orjson.loads(out.stdout)
    assert listed[0]["kind"] == "desk_rejected" and listed[0]["error"]["status"] == 403


async def test_rejected_open_is_dead_lettered_and_retried_from_the_cli(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """A 400 (invalid table) dead-letters the open; `bridge dlq retry` after the fix delivers it."""
    config = mapping(snow.url)
    desk = config.desks["snow"].model_copy(update={"table": "no_such_table"})
    bridge = await make_bridge(config.model_copy(update={"desks": {"snow": desk}}))
    await post(url(bridge), group(alert()))
    letters = await eventually(lambda: redis.xrange(keys.DLQ), within=10)
    error = orjson.loads(letters[0][1][b"error"])
    assert error["status"] == 400 and "Invalid table" in error["answer"]
    assert snow.incidents() == []

    bridge.runtime.use_config(config)  # the ops team fixes the mapping
    await bridge.runtime.open_desks()
    await cli("dlq", "retry", letters[0][0].decode(), "--redis-url", redis_server.url)
    await eventually(lambda: snow.incidents(), within=10)
    assert await redis.xlen(keys.DLQ) == 0


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `bridge ARGS` as a user would, off the event loop."""
    command = [sys.executable, "-m", "bridge.cli", *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, cwd=ROOT, check=True)


def _fast(**changes: Any) -> Any:
    import dataclasses

    from tests.conftest import FAST

    return dataclasses.replace(FAST, **changes)


async def test_a_desk_call_longer_than_the_lease_is_not_made_twice(snow: Snow, make_bridge: Any) -> None:
    """A note the desk answers after 1.5 s, a lease of 0.6 s, two replicas: the lease is kept alive
    while the call runs, so the other replica does not send the same note again."""
    config = mapping(snow.url)
    slow_desk = config.desks["snow"].model_copy(update={"timeout": 5.0})
    config = config.model_copy(update={"desks": {"snow": slow_desk}})
    tuning = {"tuning": _fast(lease_ms=600, claim_idle_ms=300)}
    first = await make_bridge(config, consumer="a", **tuning)
    await make_bridge(config, consumer="b", **tuning)
    await post(url(first), group(alert()))
    ticket = (await eventually(lambda: snow.incidents(), within=10))[0]
    snow.faults.set(latency_ms=1500)
    await post(url(first), group(alert(), alert(device="/dev/sdz")))
    await eventually(lambda: snow.notes(ticket), within=10)
    await asyncio.sleep(2.5)  # time for a second replica to (wrongly) send it again
    assert len(snow.notes(ticket)) == 1, snow.notes(ticket)


async def test_redis_restarted_empty_keeps_the_bridge_working(snow: Snow, tmp_path: Path) -> None:
    """Redis comes back with nothing (no persistence): no intake group, no scripts. The engine starts its
    group again and the scripts are loaded again, so the next alert still becomes a ticket."""
    server = EmbeddedRedis(tmp_path / "redis-volatile", appendonly=False).start()
    bridge = Bridge(mapping(snow.url), server.url, port=0, tuning=FAST)
    try:
        await bridge.start()
        assert (await post(url(bridge), group(alert(instance="before:1"))))[0] == 202
        await eventually(lambda: len(snow.incidents()) == 1)
        server.stop(kill=True)
        server.start()
        client = aioredis.Redis.from_url(server.url)
        try:
            assert not await client.exists(keys.INTAKE)  # nothing came back: the test proves something
            assert not any(await client.script_exists(*[s.sha for s in bridge.runtime.scripts._all]))
        finally:
            await client.aclose()

        async def accepted() -> bool:
            return (await post(url(bridge), group(alert(instance="after:1"))))[0] == 202

        await eventually(accepted, within=15, interval=0.5)
        await eventually(lambda: len(snow.incidents()) == 2, within=15)
    finally:
        await bridge.stop()
        server.stop()


async def test_work_claimed_while_its_drain_ends_is_delivered_at_once(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """New work for an incident whose drain is just ending here is claimed (its marker moves a lease
    ahead) but cannot start beside that drain: it is drained again when that one ends, not a lease later."""
    tuning = dataclasses.replace(FAST, lease_ms=30_000)
    bridge = await make_bridge(mapping(snow.url), tuning=tuning)
    assert (await post(url(bridge), group(alert(instance="x:1", severity="warning"))))[0] == 202
    await eventually(lambda: len(snow.incidents()) == 1)
    [base] = [b.decode() for b in await redis.zrange(keys.INCIDENTS, 0, -1)]
    delivery = bridge.delivery
    delivery._inflight.add(base)  # a drain of this incident is ending in this process
    notes_before = len(snow.notes(snow.incidents()[0]))

    assert (await post(url(bridge), group(alert(instance="x:1", severity="critical"))))[0] == 202
    await eventually(lambda: base in delivery._again)  # claimed meanwhile, and held back
    assert await redis.zscore(SHARDS.ready_for(base), base) > bridge.runtime.clock() + 20_000  # a lease ahead
    delivery._ended(base)  # the drain ends
    await eventually(lambda: len(snow.notes(snow.incidents()[0])) > notes_before, within=5)


async def _bridge_with_slow_desk(snow: Snow, make_bridge: Any, latency_ms: int = 800) -> Any:
    config = mapping(snow.url)
    slow = config.desks["snow"].model_copy(update={"timeout": 5.0})
    bridge = await make_bridge(
        config.model_copy(update={"desks": {"snow": slow}}), tuning=dataclasses.replace(FAST, lease_ms=30_000)
    )
    snow.faults.set(latency_ms=latency_ms)
    return bridge


async def _incident_at_the_desk(redis: Any) -> keys.IncidentKeys:
    """The one incident, once its drain holds the lease (its open is at the slow desk)."""
    bases = await eventually(lambda: redis.zrange(keys.INCIDENTS, 0, -1))
    ik = keys.IncidentKeys(bases[0].decode())
    await eventually(lambda: redis.exists(ik.lease))
    return ik


async def test_work_appended_while_the_last_action_is_at_the_desk_is_drained_on(
    snow: Snow, make_bridge: Any, redis: Any
) -> None:
    """A drain's end rides on its last action's bookkeeping. Work the engine appends while that action
    is at the desk keeps the drain going, and the incident stays claimed a lease ahead meanwhile, so
    that another replica would find it should this one die."""
    bridge = await _bridge_with_slow_desk(snow, make_bridge)
    assert (await post(url(bridge), group(alert())))[0] == 202
    ik = await _incident_at_the_desk(redis)
    assert (await post(url(bridge), group(alert(device="/dev/sdz"))))[0] == 202  # a member joins: a note

    async def appended() -> bool:
        return await redis.llen(ik.outbox) == 2  # the open, still at the desk, and the note behind it

    await eventually(appended, within=5)

    async def note_at_the_desk() -> bool:
        head = await redis.lindex(ik.outbox, 0)
        return head is not None and orjson.loads(head)["kind"] == "NOTE"  # the open is done and recorded

    await eventually(note_at_the_desk, within=5, interval=0.02)
    marker = await redis.zscore(SHARDS.ready_for(ik.base), ik.base)
    assert marker > bridge.runtime.clock() + 20_000  # claimed a lease ahead
    ticket = snow.incidents()[0]
    await eventually(lambda: snow.notes(ticket), within=5)
    await eventually(lambda: _drained(redis, ik), within=5)


async def test_a_replica_dying_right_after_its_last_bookkeeping_leaves_the_work_appended_meanwhile_due(
    snow: Snow, make_bridge: Any, redis: Any, monkeypatch: Any
) -> None:
    """Work appended while the last action read is at the desk: the round trip that records that
    action, and would have ended the drain, keeps the ready marker. So had this replica died right
    after that round trip, another would find the incident due once the lease expired."""
    bridge = await _bridge_with_slow_desk(snow, make_bridge)
    scripts = bridge.runtime.scripts
    execute, after_advance = scripts.execute, []

    async def observed(pipe: Any, **options: Any) -> Any:
        advancing = any(a[0] == "EVALSHA" and "advance" in a for a in queued_commands(pipe))
        replies = await execute(pipe, **options)
        if advancing:  # what another replica would find, were this one to die now
            after_advance.append((await redis.llen(ik.outbox), await redis.zscore(SHARDS.ready_for(ik.base), ik.base)))
        return replies

    assert (await post(url(bridge), group(alert())))[0] == 202
    ik = await _incident_at_the_desk(redis)
    monkeypatch.setattr(scripts, "execute", observed)
    assert (await post(url(bridge), group(alert(device="/dev/sdz"))))[0] == 202  # a note, while the open is out
    await eventually(lambda: _drained(redis, ik), within=10)
    assert snow.notes(snow.incidents()[0])
    (left, marker), *_ = after_advance  # the open's bookkeeping, the note behind it
    assert left == 1 and marker is not None and marker > bridge.runtime.clock()


async def _drained(redis: Any, ik: keys.IncidentKeys) -> bool:
    return await redis.zscore(SHARDS.ready_for(ik.base), ik.base) is None and not await redis.llen(ik.outbox)


async def test_work_appended_just_after_the_lease_is_released_is_not_stranded(
    snow: Snow, make_bridge: Any, redis: Any, monkeypatch: Any
) -> None:
    """The engine's append lands after the last action's bookkeeping released the lease, but before
    that same round trip let go of the ready marker. The append moved the marker, so it is kept and made
    due: the incident is not left with work and no marker."""
    bridge = await _bridge_with_slow_desk(snow, make_bridge)
    assert (await post(url(bridge), group(alert())))[0] == 202
    ik = await _incident_at_the_desk(redis)
    entry = orjson.loads((await redis.lrange(ik.outbox, 0, 0))[0])
    late = orjson.dumps({**entry, "kind": "NOTE", "reason": "appended just after the release"})
    scripts = bridge.runtime.scripts
    advance, injected = scripts.advance, []

    def advance_then_append(keys_: keys.IncidentKeys, token: str, lease_ms: int, entries: Any, pipe: Any) -> None:
        advance(keys_, token, lease_ms, entries, pipe)
        if keys_.base == ik.base and not injected:  # as the engine would, right after the release
            injected.append(late)
            pipe.rpush(keys_.outbox, late)
            outbox.signal(pipe, {keys_.base: bridge.runtime.clock()}, bridge.runtime.shards)

    monkeypatch.setattr(scripts, "advance", advance_then_append)
    ticket = (await eventually(lambda: snow.incidents(), within=5))[0]
    notes = await eventually(lambda: snow.notes(ticket), within=5)
    assert injected and "appended just after the release" in str(notes)
    await eventually(lambda: _drained(redis, ik), within=5)


async def test_work_handed_to_delivery_here_is_claimed_a_lease_ahead_as_far_as_there_is_room(
    snow: Snow, make_bridge: Any, redis: Any
) -> None:
    """The engine hands incidents with new work straight to delivery in its process, which starts
    what it has room for: those are scored a lease ahead (no other replica takes them while this one
    lives); the rest stay due now, for whichever replica claims them."""
    config = mapping(snow.url)
    slow = config.desks["snow"].model_copy(update={"timeout": 5.0})
    tuning = dataclasses.replace(FAST, lease_ms=30_000, delivery_concurrency=1, block_ms=1000)
    bridge = await make_bridge(config.model_copy(update={"desks": {"snow": slow}}), tuning=tuning)
    snow.faults.set(latency_ms=1500)
    assert (await post(url(bridge), group(alert(instance="a:1"), alert(instance="b:1"))))[0] == 202

    async def both_marked() -> list[Any]:
        marks = [m for zset in SHARDS.readies for m in await redis.zrange(zset, 0, -1, withscores=True)]
        return marks if len(marks) == 2 else []

    scores = {member.decode(): score for member, score in await eventually(both_marked)}
    now = bridge.runtime.clock()
    [started] = bridge.delivery._inflight
    waiting = (set(scores) - {started}).pop()
    assert scores[started] > now + 20_000  # taken here: a lease ahead
    assert scores[waiting] <= now + 1  # no room: due now (a new marker is moved 1 ms on: outbox.signal)
    await eventually(lambda: len(snow.incidents()) == 2, within=10)  # and both are delivered


async def test_a_handed_over_incident_leaves_no_marker_behind_when_another_drain_holds_it(
    snow: Snow, make_bridge: Any, redis: Any, monkeypatch: Any
) -> None:
    """Work handed to delivery here for an incident another replica is draining: the engine's marker
    (a lease ahead) must be written before this replica asks for the lease. Else the other drain could
    end between the failed ask and the marker's write, and leave a marker that holds back the
    incident's next work (its resolve, say) for a whole lease."""
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(FAST, lease_ms=30_000))
    assert (await post(url(bridge), group(alert())))[0] == 202
    await eventually(lambda: snow.incidents())
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    ik = keys.IncidentKeys(bases[0].decode())
    await eventually(lambda: _drained(redis, ik))
    await redis.set(ik.lease, "another-replica", px=30_000)  # another replica is draining it

    scripts, execute = bridge.runtime.scripts, bridge.runtime.scripts.execute
    held, other_ended, landed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def records_late(pipe: Any, **options: Any) -> Any:
        if held.is_set() or not any(args[0] == "XACK" for args in queued_commands(pipe)):
            return await execute(pipe, **options)
        held.set()  # the engine's records (its marker among them) reach Redis only after...
        await other_ended.wait()
        replies = await execute(pipe, **options)
        landed.set()
        return replies

    monkeypatch.setattr(scripts, "execute", records_late)
    assert (await post(url(bridge), group(alert(device="/dev/sdz"))))[0] == 202  # a note for it
    await asyncio.wait_for(held.wait(), 5)
    await asyncio.sleep(0.3)
    # ...the other replica's drain delivered that note and ended: outbox, lease and marker gone.
    await redis.lpop(ik.outbox)
    await redis.delete(ik.lease)
    await redis.zrem(SHARDS.ready_for(ik.base), ik.base)
    other_ended.set()
    await asyncio.wait_for(landed.wait(), 5)
    await eventually(lambda: _drained(redis, ik), within=5)


async def test_a_handed_over_incident_is_taken_in_the_engine_s_round_trip(
    snow: Snow, make_bridge: Any, monkeypatch: Any
) -> None:
    """The engine queues delivery's take (the lease and the first read of the outbox) after the
    markers it writes, in the same round trip: a new incident's drain makes none of its own before
    the desk call."""
    bridge = await make_bridge(mapping(snow.url))
    scripts, execute = bridge.runtime.scripts, bridge.runtime.scripts.execute
    takes_with: list[bool] = []  # for each round trip with a take: was it the engine's (its XACK)?

    async def watching(pipe: Any, **options: Any) -> Any:
        names = [args[0] for args in queued_commands(pipe)]
        if any("take" in args for args in queued_commands(pipe)):
            takes_with.append("XACK" in names)
        return await execute(pipe, **options)

    monkeypatch.setattr(scripts, "execute", watching)
    for instance in ("a:1", "b:1", "c:1"):
        assert (await post(url(bridge), group(alert(instance=instance))))[0] == 202
    await eventually(lambda: len(snow.incidents()) == 3, within=10)
    assert takes_with and all(takes_with), takes_with
