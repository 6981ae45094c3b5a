"""Property test: random interleavings of firing, clears, repeats, replica crashes and timer ticks
through the real engine, Lua, timers and delivery (real Redis, the ServiceNow simulator), checked
against a small reference model of what must hold."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.simulators.servicenow import STORE, make_app
from bridge.core import keys
from bridge.core.models import Alert, Severity, Status
from bridge.delivery.worker import Delivery
from bridge.engine.consumer import Engine
from bridge.engine.timers import Ticker
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts
from tests.conftest import FAST
from tests.engine.policy.test_knobs import config

MEMBERS = ["a", "b", "c"]
HOLD_MS, WINDOW_MS = 1_000, 5_000
T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)

fire = st.tuples(st.just("fire"), st.sampled_from(MEMBERS), st.integers(0, 3))
clear = st.tuples(st.just("clear"), st.sampled_from(MEMBERS), st.integers(0, 3))
tick = st.tuples(st.just("tick"), st.sampled_from([200, 700, 1_500, 6_000]), st.just(0))
crash = st.tuples(st.sampled_from(["crash_before_decide", "crash_after_decide"]), st.just(""), st.just(0))
process = st.tuples(st.just("process"), st.just(""), st.just(0))
steps = st.lists(st.one_of(fire, fire, clear, clear, process, process, tick, crash), min_size=3, max_size=30)


class Crash(Exception):
    """A replica dying between the decision and the acknowledgement."""


class CrashingEngine(Engine):
    def _record(self, records: Any, w: Any, applied: Any, now: int) -> None:
        raise Crash


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("model") / "redis", appendonly=False).start()
    yield server.url
    server.stop()


def model_of(events: list[tuple[str, str, int]]) -> dict[str, tuple[int, int]]:
    """The last state of each member: the newest (occurrence, rank) wins, whatever the arrival order."""
    last: dict[str, tuple[int, int]] = {}
    for kind, member, occ in events:
        version = (occ, 2 if kind == "clear" else 0)
        last[member] = max(last.get(member, version), version)
    return last


async def scenario(redis_url: str, plan: list[tuple[str, str, int]]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    sim = make_app(user="bridge", password="s3cret")
    runner = web.AppRunner(sim, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    cfg = config(url, lifecycle={"resolve_after": f"{HOLD_MS}ms", "reopen_within": f"{WINDOW_MS}ms"})
    clock = [1_700_000_000_000]
    tuning = dataclasses.replace(FAST, claim_idle_ms=0, attempts=2)
    scripts = Scripts(client)
    await scripts.load()
    rt = Runtime(client, scripts, cfg, tuning=tuning, clock=lambda: clock[0], consumer="live")
    await rt.open_desks()
    engine, crasher = Engine(rt), CrashingEngine(dataclasses.replace(rt, consumer="dead"))
    await engine.ensure_group()
    delivery, ticker = Delivery(rt), Ticker(rt)
    delivered: list[tuple[str, str, int]] = []
    try:
        for kind, member, value in plan:
            if kind in ("fire", "clear"):
                await client.xadd(keys.INTAKE, {"a": alert(member, value, kind).model_dump_json()})
                delivered.append((kind, member, value))
            elif kind == "process":
                await engine.step()
            elif kind == "tick":
                clock[0] += value
                await ticker.tick()
            elif kind == "crash_before_decide":
                await client.xreadgroup(keys.ENGINE_GROUP, "dead", {keys.INTAKE: ">"}, count=1)
            else:
                with contextlib.suppress(Crash):  # it dies only if there was something to read
                    await crasher.step()
            await settle(rt, delivery)
        while await engine.step():
            pass
        await engine.claim_idle()  # the survivor takes over whatever the dead replica held
        await settle(rt, delivery)
        await check(client, sim, model_of(delivered), rt, ticker, delivery, clock)
    finally:
        await rt.aclose()
        await client.aclose()
        await runner.cleanup()


def alert(member: str, occ: int, kind: str) -> Alert:
    starts = T0 + timedelta(hours=occ)
    return Alert(
        source="alertmanager",
        kind="alertmanager",
        identity=member,
        name="Disk",
        resource="db:9100",
        severity=Severity.CRITICAL,
        status=Status.RESOLVED if kind == "clear" else Status.FIRING,
        labels={"alertname": "Disk", "instance": "db:9100"},
        starts_at=starts,
        received_at=starts,
    )


async def settle(rt: Runtime, delivery: Delivery) -> None:
    for _ in range(20):
        due = await rt.redis.zrangebyscore(keys.READY, "-inf", rt.clock())
        if not due:
            return
        for base in due:
            await delivery.deliver(base.decode())


async def check(
    client: aioredis.Redis, sim: web.Application, last: dict[str, tuple[int, int]], rt: Runtime,
    ticker: Ticker, delivery: Delivery, clock: list[int],
) -> None:  # fmt: skip
    store = sim[STORE]
    records = [row["record"] for row in store.snapshot()]
    ids = [r["correlation_id"] for r in records]
    assert len(ids) == len(set(ids)), f"two tickets for one incident epoch: {ids}"
    assert sum(r["state"] in ("1", "2") for r in records) <= 1, "more than one open ticket"

    base = rt.router.route(alert("a", 0, "fire"))[0].base  # every member correlates into one incident
    raw = await client.hgetall(keys.IncidentKeys(base).members)
    members = {k.decode(): v.decode().split("|")[1] for k, v in raw.items()}
    for member, (_, rank) in last.items():
        want = "resolved" if rank == 2 else "firing"
        assert members.get(member) == want, f"{member}: incident says {members.get(member)}, last event {want}"

    firing = any(rank == 0 for _, rank in last.values())
    clock[0] += HOLD_MS + 10  # past any hold-down, inside the reopen window
    await ticker.tick()
    await settle(rt, delivery)
    records = [row["record"] for row in store.snapshot()]
    if firing:
        assert records and records[-1]["state"] in ("1", "2"), "resolved while a member fires"
    elif records:
        assert records[-1]["state"] == "6", "all members clear past the hold-down, ticket not resolved"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_engine_matches_the_reference_model(redis_url: str, plan: list[tuple[str, str, int]]) -> None:
    """Any interleaving keeps one ticket per epoch, never resolves under a firing member, and converges."""
    asyncio.run(scenario(redis_url, plan))
