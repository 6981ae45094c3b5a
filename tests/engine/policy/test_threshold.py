"""Threshold counting (issue 28, item 1): the Lua step keeps the count incrementally and caps the members a
pending incident holds; what it decides is what counting every member each time decided (a reference model
of the older apply_alert.lua), against real Redis, with the script's own clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core import keys
from bridge.core.routing import policy_json
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.scripts import AlertStep, Applied, Scripts
from tests.engine.policy.test_knobs import config

T0 = 1_700_000_000_000
WINDOW_MS = 5_000
CAP = 1000  # apply_alert.lua's PENDING_CAP
RANK = {"firing": 0, "acknowledged": 1, "resolved": 2}


def policy(count: int, *, distinct: bool, window_ms: int = WINDOW_MS) -> bytes:
    """The route's policy JSON as the engine passes it, for a threshold of `count` within `window_ms`."""
    threshold = {"count": count, "distinct_resources": distinct, "window": f"{window_ms}ms"}
    route = config("http://127.0.0.1:9", lifecycle={"threshold": threshold}).routes[0]
    return policy_json(route, 60_000, 200)


def step(base: str, identity: str, status: str, occ: int, resource: str, rules: bytes) -> AlertStep:
    return AlertStep(
        base=base,
        identity=identity,
        status=status,
        severity="critical",
        occurrence=occ,
        loose=False,
        alert_json=b'{"name":"Disk"}',
        route=base.split(":", 1)[0],
        resource=resource,
        policy=rules,
    )


@dataclass
class Member:
    occ: int
    status: str
    seen: int
    resource: str


@dataclass
class Reference:
    """What apply_alert.lua decided before issue 28, while an incident is pending: every member counted
    again on each alert. Up to the open; the lifecycle after it is the other scenario tests'."""

    count: int
    distinct: bool
    window: int = WINDOW_MS
    state: str | None = None
    firing: int = 0
    members: dict[str, Member] = field(default_factory=dict)

    def units(self, now: int) -> int:
        cutoff = now - self.window
        live = {(m.resource if self.distinct else i) for i, m in self.members.items() if m.status != "resolved"
                and m.seen >= cutoff}  # fmt: skip
        return len(live)

    def apply(self, now: int, identity: str, status: str, occ: int, resource: str) -> tuple[str, str]:
        prev = self.members.get(identity)
        if prev:
            if occ < prev.occ or (occ == prev.occ and RANK[status] < RANK[prev.status]):
                return "DUPLICATE", "stale"
            if occ == prev.occ and status == prev.status:
                return "DUPLICATE", "repeat"
        was_active = prev is not None and prev.status != "resolved" and self.state == "pending"
        if status == "resolved":
            self.members[identity] = Member(occ, status, now, resource)
            if not was_active:
                return "DUPLICATE", "clear without open member"
            self.firing -= 1
            if self.firing <= 0:
                self.state, self.members = None, {}
            return "PENDING", "member cleared before the threshold"
        if status == "acknowledged" and not was_active:
            return "DUPLICATE", "acknowledged with nothing open"
        if self.state != "pending":
            self.state, self.firing, was_active = "pending", 0, False
        self.members[identity] = Member(occ, status, now, resource)
        if not was_active:
            self.firing += 1
        count = self.units(now)
        if count < self.count:
            return "PENDING", f"{count} of {self.count}"
        self.state = "open"
        return "OPEN", f"threshold reached: {self.firing} alerts"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("threshold") / "redis", appendonly=False).start()
    yield server.url
    server.stop()


async def opened(url: str, cap: int | None = None) -> tuple[aioredis.Redis, Scripts]:
    """A client and the scripts on it, emptied; `cap` replaces the script's cap of members held."""
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    scripts = Scripts(client)
    await scripts.load()
    if cap is not None:
        source = scripts._apply.script
        assert isinstance(source, str) and "local PENDING_CAP = 1000\n" in source
        source = source.replace("PENDING_CAP = 1000", f"PENDING_CAP = {cap}")
        scripts._apply = client.register_script(source)
        scripts._apply.sha = await client.script_load(source)
    return client, scripts


async def held_state(client: aioredis.Redis, base: str, now: int, rules: Reference) -> dict[str, Any]:
    """What Redis holds for a pending incident, and the count of every member as the older script took it."""
    ik = keys.IncidentKeys(base)
    raw: Any = await client.hgetall(ik.members)
    members = {}
    for k, v in raw.items():
        occ, status, _, seen, rest = v.decode().split("|", 4)
        members[k.decode()] = Member(int(occ), status, int(seen), rest.rsplit("|", 1)[-1])
    recount = Reference(rules.count, rules.distinct, rules.window, members=members).units(now)
    fields: Any = await client.hmget(ik.state, "state", "firing")
    return {
        "members": members,
        "held": await client.zcard(ik.held),
        "counted": await client.zcount(ik.units, now - rules.window, "+inf"),
        "recount": recount,
        "state": (fields[0] or b"").decode(),
        "firing": int(fields[1] or 0),
        "held_firing": await client.zlexcount(ik.held, "[f|", "(f}"),
    }


fire = st.tuples(st.sampled_from(["firing", "firing", "acknowledged", "resolved"]), st.sampled_from("abcdef"),
                 st.integers(0, 3), st.sampled_from(["r1", "r2", "r3"]))  # fmt: skip
wait = st.tuples(st.just("wait"), st.sampled_from([100, 1_000, 4_000, 4_999, 6_000]), st.just(0), st.just(""))
plans = st.lists(st.one_of(fire, fire, fire, wait), min_size=1, max_size=40)


async def compare(url: str, plan: list[tuple[str, Any, int, str]], count: int, distinct: bool) -> None:
    client, scripts = await opened(url)
    base, rules = "ops:threshold", policy(count, distinct=distinct)
    model, now = Reference(count, distinct), T0
    try:
        for kind, what, occ, resource in plan:
            if kind == "wait":
                now += what
                continue
            now += 1
            want = model.apply(now, what, kind, occ, resource)
            got: Applied = await scripts.apply_alert(step(base, what, kind, occ, resource, rules), now)
            assert (got.decision.value, got.reason) == want, (kind, what, occ, resource)
            if want[0] == "OPEN":
                return
            seen = await held_state(client, base, now, model)
            assert seen["firing"] == (model.firing if model.state == "pending" else 0)
    finally:
        await scripts.aclose()
        await client.aclose()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, count=st.integers(2, 4), distinct=st.booleans())
def test_decisions_match_counting_every_member(redis_url: str, plan: Any, count: int, distinct: bool) -> None:
    """Any sequence of firings, acknowledgements, clears, repeats and waits: the same decisions and counts as before."""
    asyncio.run(compare(redis_url, plan, count, distinct))


async def capped(url: str, plan: list[tuple[str, Any, int, str]], count: int, distinct: bool) -> None:
    client, scripts = await opened(url, cap=4)
    base, rules = "ops:capped", policy(count, distinct=distinct)
    model, now = Reference(count, distinct), T0
    try:
        for kind, what, occ, resource in plan:
            if kind == "wait":
                now += what
                continue
            now += 1
            got: Applied = await scripts.apply_alert(step(base, what, kind, occ, resource, rules), now)
            if got.decision.value == "OPEN":
                return
            seen = await held_state(client, base, now, model)
            if seen["state"] != "pending":
                continue
            firing = sum(m.status != "resolved" for m in seen["members"].values())
            assert seen["held"] <= max(4, count)  # besides, clears from before it was pending (at most 6)
            assert seen["counted"] == seen["recount"]
            assert seen["firing"] == firing == seen["held_firing"]
    finally:
        await scripts.aclose()
        await client.aclose()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, count=st.integers(2, 4), distinct=st.booleans())
def test_a_capped_pending_incident_counts_what_it_holds(redis_url: str, plan: Any, count: int, distinct: bool) -> None:
    """With a cap of 4 members held: never more, and the count and `firing` are those of the members held."""
    asyncio.run(capped(redis_url, plan, count, distinct))


async def test_the_window_includes_its_first_millisecond(redis_url: str) -> None:
    """A member seen exactly `window` ago still counts, one seen a millisecond earlier no more (as before)."""
    client, scripts = await opened(redis_url)
    rules = policy(2, distinct=False)
    try:
        for base, gap, want in (("ops:edge-in", WINDOW_MS, "OPEN"), ("ops:edge-out", WINDOW_MS + 1, "PENDING")):
            await scripts.apply_alert(step(base, "a", "firing", T0, "", rules), T0)
            got = await scripts.apply_alert(step(base, "b", "firing", T0, "", rules), T0 + gap)
            assert got.decision.value == want, gap
    finally:
        await scripts.aclose()
        await client.aclose()


async def test_unique_alerts_on_one_host_are_capped_and_other_hosts_still_count(redis_url: str) -> None:
    """1,500 unique alerts on one host (distinct resources): 1,000 held, still 1 of 3; two more hosts open it."""
    client, scripts = await opened(redis_url)
    base, rules = "ops:flood", policy(3, distinct=True, window_ms=3_600_000)
    ik = keys.IncidentKeys(base)
    try:
        await client.hset(ik.state, "held_dropped", 7)  # left from an earlier time pending: starts afresh
        for start in range(0, 1_500, 250):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + 250):
                await scripts.apply_alert(step(base, f"disk-{i}", "firing", T0, "db-1", rules), T0 + i, pipe)
            replies = await scripts.execute(pipe)
            assert {Applied.from_reply(r).reason for r in replies} == {"1 of 3"}
        assert await client.hlen(ik.members) == CAP == await client.zcard(ik.held)
        assert await client.hmget(ik.state, "firing", "held_dropped", "pending_count") == [b"1000", b"500", b"1"]
        assert not await client.hexists(ik.members, "disk-499") and await client.hexists(ik.members, "disk-500")
        gone = await scripts.apply_alert(step(base, "disk-0", "resolved", T0, "db-1", rules), T0 + 1_500)
        assert (gone.decision.value, gone.reason) == ("DUPLICATE", "clear without open member")  # not kept
        assert not await client.hexists(ik.members, "disk-0")
        for i in range(500, 510):  # 10 clears: kept, and the first to make room
            await scripts.apply_alert(step(base, f"disk-{i}", "resolved", T0, "db-1", rules), T0 + 1_000 + i)
        for i in range(1_500, 1_510):
            await scripts.apply_alert(step(base, f"disk-{i}", "firing", T0, "db-1", rules), T0 + i)
        assert await client.hmget(ik.state, "firing", "held_dropped") == [b"1000", b"510"]
        assert not await client.hexists(ik.members, "disk-509") and await client.hexists(ik.members, "disk-510")
        other = await scripts.apply_alert(step(base, "net-1", "firing", T0, "db-2", rules), T0 + 2_000)
        assert (other.decision.value, other.reason) == ("PENDING", "2 of 3")
        last = await scripts.apply_alert(step(base, "cpu-1", "firing", T0, "db-3", rules), T0 + 2_001)
        assert (last.decision.value, last.reason) == ("OPEN", "threshold reached: 1000 alerts")  # those held
        assert await client.hlen(ik.members) == CAP and not await client.exists(ik.units, ik.held)
    finally:
        await scripts.aclose()
        await client.aclose()


async def test_cap_makes_room_from_alerts_outside_the_window_first(redis_url: str) -> None:
    """Counting alerts (threshold 5): at the cap, the alerts last seen before the window make room, not those in it."""
    client, scripts = await opened(redis_url)
    base, rules = "ops:window", policy(5, distinct=False, window_ms=10_000)
    ik = keys.IncidentKeys(base)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(CAP):  # one every 5 s: never more than 2 within the window
            await scripts.apply_alert(step(base, f"a-{i}", "firing", T0, "", rules), T0 + i * 5_000, pipe)
        await scripts.execute(pipe)
        now = T0 + CAP * 5_000 + 1
        for i in range(3):  # 3 new ones now, with the last one before: 4 within the window
            got = await scripts.apply_alert(step(base, f"b-{i}", "firing", T0, "", rules), now + i)
            assert got.reason == f"{i + 2} of 5"
        assert await client.hlen(ik.members) == CAP
        assert not await client.hexists(ik.members, "a-0") and await client.hexists(ik.members, f"a-{CAP - 1}")
        got = await scripts.apply_alert(step(base, "b-3", "firing", T0, "", rules), now + 3)
        assert (got.decision.value, got.reason) == ("OPEN", f"threshold reached: {CAP} alerts")
    finally:
        await scripts.aclose()
        await client.aclose()


async def test_an_incident_pending_before_the_index_is_counted_from_its_members(redis_url: str) -> None:
    """A pending incident as an older version stored it (no index): the next alert counts what it holds."""
    client, scripts = await opened(redis_url)
    base, rules = "ops:older", policy(3, distinct=True)
    ik = keys.IncidentKeys(base)
    try:
        now = T0 + 10_000
        await client.hset(ik.state, mapping={"state": "pending", "firing": 3, "route": "ops", "pending_since": T0})
        await client.hset(ik.members, mapping={
            "a": f"{T0}|firing|critical|{now - 1_000}|web-1",
            "b": f"{T0}|acknowledged|critical|{now - 2_000}|~1f2e|web-2",
            "c": f"{T0}|firing|critical|{now - 9_000}|web-3",  # outside the window
            "d": f"{T0}|resolved|critical|{now - 500}|web-4",
        })  # fmt: skip
        await client.pexpire(ik.state, 60_000)
        got = await scripts.apply_alert(step(base, "e", "firing", T0, "web-1", rules), now)
        assert (got.decision.value, got.reason) == ("PENDING", "2 of 3")
        assert await client.zcard(ik.held) == 5 and await client.pttl(ik.held) > 0
        clear = await scripts.apply_alert(step(base, "b", "resolved", T0, "web-2", rules), now + 1)
        assert clear.decision.value == "PENDING"
        refire = await scripts.apply_alert(step(base, "c", "firing", T0 + 1, "web-3", rules), now + 2)
        assert (refire.decision.value, refire.reason) == ("PENDING", "2 of 3")
        last = await scripts.apply_alert(step(base, "f", "firing", T0, "web-5", rules), now + 3)
        assert (last.decision.value, last.reason) == ("OPEN", "threshold reached: 4 alerts")
    finally:
        await scripts.aclose()
        await client.aclose()


async def test_an_auto_resolve_while_pending_counts_no_more(redis_url: str) -> None:
    """A member auto-resolved (fire_timer.lua) while its incident is pending again, after an epoch, counts no more."""
    client, scripts = await opened(redis_url)
    lifecycle = {"threshold": {"count": 2, "window": "1h"}, "auto_resolve_after": "10s", "reopen_within": "5s"}
    rules = policy_json(config("http://127.0.0.1:9", lifecycle=lifecycle).routes[0], 60_000, 200)
    base = "ops:auto"

    async def alert(identity: str, status: str, occ: int, now: int) -> tuple[str, str]:
        got = await scripts.apply_alert(step(base, identity, status, occ, "", rules), now)
        return got.decision.value, got.reason

    async def timer(kind: str, due: int, now: int) -> str:
        pipe = client.pipeline(transaction=False)
        scripts.fire_timer(base, kind, due, now, rules, pipe)
        (reply,) = await scripts.execute(pipe)
        return Scripts.fired(reply)[0]

    try:
        assert await alert("a", "firing", T0, T0) == ("PENDING", "1 of 2")
        assert (await alert("b", "firing", T0, T0 + 1))[0] == "OPEN"
        await alert("a", "resolved", T0, T0 + 2)
        assert (await alert("b", "resolved", T0, T0 + 3))[0] == "RESOLVE_PENDING"
        due = int(await client.hget(keys.IncidentKeys(base).state, "resolve_due") or 0)
        assert await timer("resolve", due, due) == "RESOLVE"
        later = T0 + 60_000  # past the reopen window: pending again, of the same incident
        assert await alert("a", "firing", later, later) == ("PENDING", "1 of 2")
        assert await timer("auto:a", later + 10_000, later + 10_001) == ""
        assert await alert("c", "firing", later, later + 10_002) == ("PENDING", "1 of 2")
    finally:
        await scripts.aclose()
        await client.aclose()
