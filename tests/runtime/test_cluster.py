"""Redis Cluster: `redis+cluster://` URLs, and a bridge on a real cluster (three masters, three replicas,
tests/cluster.py) through a master's failover in the middle of a flow: `CLUSTER FAILOVER`, and a SIGKILL.

The whole lifecycle suite runs on the cluster with BRIDGE_TEST_REDIS=cluster (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from bridge.core import keys
from bridge.core.errors import ConfigError
from bridge.process.server import Bridge
from bridge.runtime.connect import connect, is_cluster
from tests.amp import alert, group
from tests.cluster import LocalCluster
from tests.conftest import FAST, Snow, eventually, mapping


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


async def test_a_cluster_url_makes_a_cluster_client_with_its_user_and_tls() -> None:
    """Seeds, ACL user and password, and the TLS options reach every node's connections."""
    client = connect("rediss+cluster://bridge:s3cret@r1:6379,r2:6380?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required")
    assert isinstance(client, RedisCluster) and is_cluster(client) and is_cluster(client.pipeline())
    seeds = sorted((n.host, n.port) for n in client.nodes_manager.startup_nodes.values())
    assert seeds == [("r1", 6379), ("r2", 6380)]
    options = client.get_connection_kwargs()
    assert (options["username"], options["password"], options["ssl_ca_certs"]) == ("bridge", "s3cret", "/ca.pem")
    assert options["connection_class"].__name__ == "SSLConnection"
    plain = connect("redis+cluster://r1:6379").get_connection_kwargs()
    assert plain["connection_class"].__name__ == "Connection"


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://r1:6379/1", "redis+cluster://r1:x"])
def test_a_bad_cluster_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="bad Cluster URL"):
        connect(url)


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["failover", "sigkill"])
async def test_a_master_failover_mid_flow_loses_no_alert_and_duplicates_no_ticket(
    snow: Snow, local_cluster: LocalCluster, how: str
) -> None:
    """Alerts of 30 hosts are sent one after another, each retried until it is answered 202 (as
    Alertmanager retries); after a third of them the intake stream's master is failed over (`CLUSTER
    FAILOVER` on its replica) or SIGKILLed (its replica promoted after the node timeout, and the dead
    node started again, as its pod would be, to become the new master's replica). With
    BRIDGE_WAIT_REPLICAS=1 a 202 means the replica had the alerts (until a replica is back, the new
    master has none and the bridge answers 503: the sender sends again): every host gets exactly one
    ticket, and every ticket resolves after its alert's resolve (sent once the firing ones are in)."""
    tuning = dataclasses.replace(FAST, wait_replicas=1, wait_timeout_ms=2000)
    bridge = await Bridge(mapping(snow.url), local_cluster.url, port=0, tuning=tuning).start()
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    hosts = [f"h{i:02d}:9100" for i in range(30)]
    answers: dict[int, int] = {}

    async def send(session: aiohttp.ClientSession, body: bytes) -> None:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    answers[resp.status] = answers.get(resp.status, 0) + 1
                    if resp.status == 202:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"not taken within 60 s; answers {answers}"
            await asyncio.sleep(0.2)

    try:
        assert bridge.runtime is not None
        victim = local_cluster.master_of(bridge.runtime.shards.intakes[0])  # a third of the intake's shards
        async with aiohttp.ClientSession() as session:
            for i, host in enumerate(hosts):
                if i == 10:
                    fail = local_cluster.failover if how == "failover" else local_cluster.kill_and_restart
                    hand_over = asyncio.create_task(asyncio.to_thread(fail, victim))
                await send(session, orjson.dumps(group(alert(instance=host))))
                await asyncio.sleep(0.05)
            promoted = await hand_over
            assert promoted.role() == "master" and promoted is not victim

            def tickets_by_host() -> dict[str, int]:
                found: dict[str, int] = {}
                for ticket in snow.incidents():
                    host = ticket["short_description"].rsplit(" ", 1)[-1]
                    found[host] = found.get(host, 0) + 1
                return found

            try:
                await eventually(lambda: set(tickets_by_host()) == set(hosts), within=60, interval=0.2)
            except AssertionError:  # say which (a CI run under load once saw this fail, and not again)
                missing = sorted(set(hosts) - set(tickets_by_host()))
                said = f"no ticket within 60 s for {missing}; answers {answers}; stage failed: {bridge.failure!r}"
                raise AssertionError(said) from None
            for host in hosts:
                await send(session, orjson.dumps(group(alert("resolved", instance=host))))
        await eventually(lambda: all(t["state"] == "6" for t in snow.incidents()), within=60, interval=0.2)
        found = tickets_by_host()
        assert set(found) == set(hosts), f"lost {sorted(set(hosts) - set(found))}; answers {answers}"
        duplicates = {host: n for host, n in found.items() if n > 1}
        assert not duplicates, f"duplicate tickets {duplicates}; answers {answers}"
        assert not bridge.failure  # every stage outlived the failover (an engine reader once could not)
    finally:
        await bridge.stop()


@pytest.mark.cluster
async def test_ingest_and_scheduling_spread_over_every_master(snow: Snow, local_cluster: LocalCluster) -> None:
    """Sixteen shards by default on a cluster: 30 hosts' alerts (one group, then their resolves) are
    written to intake shards on all three masters, each master's engine reads its own (XREADGROUP), and
    the ready markers and hold-down timers of the 30 incidents are claimed on every master too, and
    every host gets its ticket, resolved (how evenly many alerts spread: tests/core/test_keys.py)."""
    bridge = await Bridge(mapping(snow.url), local_cluster.url, port=0, tuning=FAST).start()
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    hosts = [f"h{i:02d}:9100" for i in range(30)]
    masters = [n for n in local_cluster.nodes if n.alive and n.role() == "master"]
    try:
        assert bridge.runtime is not None and bridge.runtime.shards.count == keys.CLUSTER_SHARDS
        async with aiohttp.ClientSession() as session:
            json = {"Content-Type": "application/json"}
            firing = orjson.dumps(group(*[alert(instance=h) for h in hosts]))
            async with session.post(url, data=firing, headers=json) as resp:
                assert resp.status == 202
            await eventually(lambda: len(snow.incidents()) == 30, within=30, interval=0.2)
            resolved = orjson.dumps(group(*[alert("resolved", instance=h) for h in hosts]))
            async with session.post(url, data=resolved, headers=json) as resp:
                assert resp.status == 202
        await eventually(lambda: all(t["state"] == "6" for t in snow.incidents()), within=30, interval=0.2)
        assert len(snow.incidents()) == 30

        def calls(node: Any, command: str) -> int:
            return int(node.client().info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

        xadds = [calls(m, "xadd") for m in masters]
        assert all(xadds) and sum(xadds) >= 60, xadds
        for command in ("xreadgroup", "zadd", "evalsha"):
            assert all(calls(m, command) for m in masters), command
    finally:
        await bridge.stop()


@pytest.mark.cluster
async def test_an_adoption_cut_between_its_halves_is_completed_once_by_the_next_round(
    local_cluster: LocalCluster,
) -> None:
    """On a cluster a parent's and a child's keys are in two slots: the child's half of an adoption runs
    first and keeps the parent's share. A round cut right after it (a crash) leaves the parent without
    the child's alert; the next round takes the same share from the merged child and completes the
    parent's half, once: a third round does nothing, and the parent's ticket gets one note."""
    from types import SimpleNamespace

    from redis.crc import key_slot

    from bridge.core.routing import policy_json
    from bridge.engine.adoption import _adopt_in_two_halves
    from bridge.runtime.scripts import AlertStep, Scripts
    from tests.engine.policy.test_root_cause import TOPOLOGY, by_host

    client = connect(local_cluster.url)
    await client.initialize()
    try:
        scripts = Scripts(client)
        await scripts.load()
        parent, child = keys.IncidentKeys("ops:parent"), keys.IncidentKeys("ops:child")
        assert key_slot(parent.state.encode()) != key_slot(child.state.encode())
        rules = policy_json(by_host("http://127.0.0.1:1", topology=TOPOLOGY).routes[0], 60_000, 50)
        for i, (base, identity) in enumerate((("ops:child", "h1"), ("ops:parent", "sw"))):
            step = AlertStep(base, identity, "firing", "critical", 1, False, b'{"name":"x"}', "ops", identity, rules,
                             name="HostDown", key=identity)  # fmt: skip
            assert (await scripts.apply_alert(step, 1_000 + i)).decision.value == "OPEN"

        state = await client.hmget(parent.state, ["state", "epoch", "route"])
        pipe = client.pipeline(transaction=False)
        scripts.adopt_child("ops:parent", state, "ops:child", 2_000, rules, pipe)
        ((outcome, share, _),) = await scripts.execute(pipe)  # ... and the round is cut here
        assert outcome == b"adopted" and share
        assert await client.hget(parent.state, "firing") == b"1"

        rt = SimpleNamespace(redis=client, scripts=scripts)
        rounds = [await _adopt_in_two_halves(rt, "ops:parent", ["ops:child"], 3_000, rules) for _ in range(2)]  # type: ignore[arg-type]
        assert [r[0][:2] for r in rounds] == [[b"adopted", 1], [b"done", 0]]
        assert await client.hget(parent.state, "firing") == b"2"
        assert await client.hget(child.state, "merged_into") == b"ops:parent"
        notes = [orjson.loads(e) for e in await client.lrange(parent.outbox, 0, -1)]
        assert [n["kind"] for n in notes].count("NOTE") == 1 and "adopted" in notes[-1]["reason"]
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_a_heartbeat_cut_before_its_alert_is_added_adds_it_on_the_next_turn(local_cluster: LocalCluster) -> None:
    """On a cluster a heartbeat's hash and the intake stream are in two slots: an expiry (or a recovering
    ping) marks the hash first and adds its alert after. Cut between the two (a crash), the alert is owed:
    the timer coming due again adds the opening alert, the next ping the resolving one, each once."""
    from bridge.runtime import heartbeats
    from bridge.runtime.context import Runtime
    from bridge.runtime.scripts import Scripts
    from tests.engine.test_heartbeats import beat_mapping

    client = connect(local_cluster.url)
    await client.initialize()  # type: ignore[attr-defined]
    try:
        rt = Runtime(client, Scripts(client), beat_mapping(Snow("http://127.0.0.1:1", None)))  # type: ignore[arg-type]
        await rt.scripts.load()
        (made,) = await heartbeats.ping(rt, [("prom", {"cluster": "eu"})])
        assert made.outcome == "new"
        state = keys.heartbeat(made.id)
        due, last = (int(v) for v in await client.hmget(state, ["due", "last"]))
        pipe = client.pipeline(transaction=False)
        rt.scripts.heartbeat_expire_state(state, [due, rt.clock(), last], pipe)
        assert await rt.scripts.execute(pipe) == [1]  # ... and the expiry is cut here
        assert await intake_entries(rt) == []

        timer = (keys.timer_member(made.id, heartbeats.TIMER_KIND, due), made.id, due)
        for _ in range(2):  # the timer comes due again (its claim lapsed); then once more, to no effect
            assert await heartbeats.fire(rt, [timer]) == [timer[0]]
        opened = [orjson.loads(f[b"a"])["status"] for _, f in await intake_entries(rt)]
        assert opened == ["firing"]

        pipe = client.pipeline(transaction=False)
        rt.scripts.heartbeat_ping_state(state, [made.id, rt.clock(), 1000, "prom", "{}", "1"], pipe)
        ((outcome, _, _),) = await rt.scripts.execute(pipe)  # a recovering ping, cut before its alert
        assert outcome == b"recovered" and len(await intake_entries(rt)) == 1
        outcomes = [(await heartbeats.ping(rt, [("prom", {"cluster": "eu"})]))[0].outcome for _ in range(2)]
        assert outcomes == ["recovered", "ok"]  # the next ping adds the owed alert, once
        statuses = [orjson.loads(f[b"a"])["status"] for _, f in await intake_entries(rt)]
        assert statuses == ["firing", "resolved"]
    finally:
        await client.aclose()


async def intake_entries(rt: Any) -> list[Any]:
    """Every entry of every intake shard, oldest first."""
    found = [entry for stream in rt.shards.intakes for entry in await rt.redis.xrange(stream)]
    return sorted(found, key=lambda e: tuple(int(p) for p in e[0].split(b"-")))
