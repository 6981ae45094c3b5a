"""The chaos run: three `bridge serve` replicas as processes on one Redis (AOF, fsync always), SIGKILLed
at random points and started again, Redis itself killed and restarted twice, a ServiceNow desk that
fails 10 % of calls with 503, commits 5 % of writes and then answers too late (a timeout after the
commit) and throttles in bursts of 429, and an HA Alertmanager pair that sends every notification
twice, each copy to any replica, retrying until one takes it.

Checked against a reference model: every alert has its incident (none lost), every incident has
exactly one ticket (no duplicate, however often an open's answer was lost), every ticket ends in its
final state (resolved), and every re-fire after a resolve reopened its ticket.

Seeded: the seed is printed (shown with a failure); `BRIDGE_CHAOS_SEED=<seed>` replays the same
schedule of kills, restarts, faults and sends (timing still varies)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.servicenow import FAULT_ANSWERS, make_app
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import Snow, eventually, start_app
from tests.running import TOKEN, LogTail, spawn, write_mapping

SEED = int(os.environ.get("BRIDGE_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
REPLICAS = 3
INCIDENTS = 24  # a third of them fire again after their resolve
ENV = {
    "BRIDGE_ADMIN_TOKEN": TOKEN,
    "BRIDGE_BACKOFF_MAX_S": "1",
    "BRIDGE_ATTEMPTS": "2",
    "BRIDGE_DURABILITY": "fsync",
    "BRIDGE_LOG_LEVEL": "warning",
}


@dataclass
class DeskChaos:
    """The desk's faults, drawn from the seeded generator per request while `on`."""

    rng: random.Random
    on: bool = True
    burst: int = 0  # 429s left in the current burst
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def middleware(self) -> Any:
        @web.middleware
        async def chaos(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.on or request.path.startswith("/_sim/"):
                return await handler(request)
            self.count("requests")
            if self.burst:
                self.burst -= 1
                self.count("429")
                return FAULT_ANSWERS.rate_limited(1)
            draw = self.rng.random()
            if draw < 0.10:
                self.count("503")
                return FAULT_ANSWERS.unavailable()
            write = request.method in ("POST", "PUT", "PATCH")
            # 5 % of the calls; the first write after a few calls at the latest, so every run has one.
            late = draw < 0.15 or (write and "timeout_after_commit" not in self.counts and self.counts["requests"] > 3)
            if late and write:
                answer = await handler(request)  # committed ...
                self.count("timeout_after_commit")
                await asyncio.sleep(2.5)  # ... answered after the desk timeout (1 s)
                return answer
            if draw > 0.98 or (self.counts["requests"] >= 12 and "429" not in self.counts):
                self.burst = 5  # a burst of throttling, starting with this call
                return await chaos(request, handler)
            return await handler(request)

        return chaos


@dataclass
class Cluster:
    """The replicas (restartable by index) and the Redis under them."""

    mapping: Path
    redis: EmbeddedRedis
    ports: list[int]
    procs: list[subprocess.Popen[bytes] | None]
    kills: int = 0
    logs: dict[int, LogTail] = field(default_factory=dict)  # each replica's log, read as it comes
    exits: list[str] = field(default_factory=list)  # replicas found gone before their kill: how they ended

    def start(self, index: int) -> None:
        self.procs[index] = proc = spawn(self.mapping, self.redis.url, self.ports[index], **ENV)
        self.logs[index] = LogTail(proc)

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.kills += 1
        elif proc is not None:  # it ended on its own: the run says how (its log's last lines)
            self.logs[index].join()
            self.exits.append(f"replica {index} exited {proc.returncode}: {self.logs[index].text()[-2000:]}")
        self.procs[index] = None

    def stop_all(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            self.procs[index] = None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = EmbeddedRedis(tmp_path / "redis", appendfsync="always").start()
    made = Cluster(tmp_path / "mapping.yaml", redis, [free_port() for _ in range(REPLICAS)], [None] * REPLICAS)
    yield made
    made.stop_all()
    redis.stop()


def labels_of(i: int) -> dict[str, str]:
    return {"alertname": f"Chaos{i}", "instance": f"host-{i}:9100"}


# Each incident's one member, by its identity (Alertmanager's fingerprint of the labels tests.amp sends).
IDENTITIES = {group(alert(**labels_of(i)))["alerts"][0]["fingerprint"]: i for i in range(INCIDENTS)}


def notifications(rng: random.Random) -> list[tuple[int, dict[str, Any]]]:
    """(incident, Alertmanager message) in send order: each incident fires and resolves; a third fire
    again (a new occurrence) after their resolve, and resolve again. Shuffled across incidents, each
    incident's own notifications in order."""
    per: dict[int, list[dict[str, Any]]] = {}
    for i in range(INCIDENTS):
        labels = labels_of(i)
        first, second = f"2024-05-14T09:{i % 60:02d}:00Z", f"2024-05-14T10:{i % 60:02d}:00Z"
        steps = [alert("firing", starts=first, **labels), alert("resolved", starts=first, **labels)]
        if i % 3 == 0:
            steps += [alert("firing", starts=second, **labels), alert("resolved", starts=second, **labels)]
        per[i] = [group(step) for step in steps]
    order: list[tuple[int, dict[str, Any]]] = []
    while per:
        i = rng.choice(sorted(per))
        order.append((i, per[i].pop(0)))
        if not per[i]:
            del per[i]
    return order


async def send_until_taken(session: aiohttp.ClientSession, ports: list[int], body: bytes, rng: random.Random) -> None:
    """One Alertmanager of the HA pair: to any replica, again (another one, after a pause) until a 202."""
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        port = rng.choice(ports)
        try:
            async with session.post(
                f"http://127.0.0.1:{port}/webhook/alertmanager", data=body,
                headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:  # fmt: skip
                if resp.status == 202:
                    return
                assert resp.status in (503,), f"seed {SEED}: {resp.status} {await resp.text()}"
        except (aiohttp.ClientError, TimeoutError):
            pass  # that replica is down (or Redis is): Alertmanager retries
        assert asyncio.get_running_loop().time() < deadline, f"seed {SEED}: no replica took a notification"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(420)
async def test_chaos_loses_no_alert_duplicates_no_ticket_and_settles_every_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Replicas killed, Redis restarted twice, a faulty desk, HA double-sends: one resolved ticket per incident."""
    print(f"chaos seed {SEED}: replay with BRIDGE_CHAOS_SEED={SEED}")
    rng = random.Random(SEED)
    desk = DeskChaos(random.Random(rng.random()))
    app = make_app(user="bridge", password="s3cret")
    app.middlewares.insert(0, desk.middleware())  # outermost: before the simulator's own handling
    runner, url = await start_app(app)
    snow = Snow(url, app)
    write_mapping(cluster.mapping, snow, resolve_after="300ms", reopen_within="10m")
    for index in range(REPLICAS):
        cluster.start(index)
    plan = notifications(random.Random(rng.random()))
    senders = random.Random(rng.random())
    chaos_rng = random.Random(rng.random())
    sending_done = asyncio.Event()

    async def chaos() -> None:
        """SIGKILL a replica now and then (started again soon after); restart Redis twice (SIGKILL, AOF)."""
        restarts_at = sorted(chaos_rng.sample(range(3, 12), 2))
        tick = 0
        while not sending_done.is_set() or tick < 12:
            await asyncio.sleep(chaos_rng.uniform(0.5, 1.5))
            tick += 1
            index = chaos_rng.randrange(REPLICAS)
            await asyncio.to_thread(cluster.kill, index)
            if tick in restarts_at:
                cluster.redis.stop(kill=True)
                await asyncio.sleep(chaos_rng.uniform(0.3, 1.0))
                await asyncio.to_thread(cluster.redis.start)
            await asyncio.sleep(chaos_rng.uniform(0.2, 0.8))
            cluster.start(index)

    chaos_task = asyncio.create_task(chaos())
    try:
        async with aiohttp.ClientSession() as session:
            for _, message in plan:
                body = orjson.dumps(message)
                # The HA pair: both send it, each retrying on its own.
                await asyncio.gather(*(send_until_taken(session, cluster.ports, body, senders) for _ in range(2)))
                await asyncio.sleep(senders.uniform(0.0, 0.15))
        sending_done.set()
        await asyncio.wait_for(chaos_task, timeout=120)
    finally:
        chaos_task.cancel()
    desk.on = False  # the storm is over: every replica up, Redis up, the desk healthy
    for index in range(REPLICAS):
        if cluster.procs[index] is None:
            cluster.start(index)

    def settled() -> bool:
        tickets = snow.incidents()
        return len(tickets) >= INCIDENTS and all(t["state"] == "6" for t in tickets)

    try:
        with contextlib.suppress(AssertionError):  # what is still wrong after that is said below
            await eventually(settled, within=150, interval=0.5)
        tickets = snow.incidents()
        api = f"http://127.0.0.1:{cluster.ports[0]}/api/v1/incidents"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            async with session.get(api + "?limit=1000") as resp:
                incidents = await resp.json()
            shown = []
            for incident in incidents:
                async with session.get(f"{api}/{incident['id']}") as resp:
                    shown.append(await resp.json())
    finally:
        await runner.cleanup()

    summary = f"seed {SEED}, replica kills {cluster.kills}, desk faults {desk.counts}, ended alone {cluster.exits}"
    print(summary)
    by_host: dict[str, list[dict[str, str]]] = {}
    for ticket in tickets:
        by_host.setdefault(ticket["short_description"].rsplit(" ", 1)[-1], []).append(ticket)
    expected = {f"host-{i}:9100" for i in range(INCIDENTS)}
    assert set(by_host) == expected, f"{summary}: lost {sorted(expected - set(by_host))}"  # 0 alerts lost
    duplicates = {host: len(found) for host, found in by_host.items() if len(found) > 1}
    assert not duplicates, f"{summary}: duplicate tickets {duplicates}"  # 0 duplicate tickets
    unsettled = [(t["number"], t["state"]) for t in tickets if t["state"] != "6"]
    assert not unsettled, f"{summary}: tickets not resolved {unsettled}"  # every ticket in its final state
    # Every notification took effect: each incident's member holds its last occurrence, resolved (a re-fire
    # reopened its ticket, or came during the hold-down after the resolve and was noted there).
    assert len(incidents) == INCIDENTS, (summary, incidents)
    for incident in shown:
        [(identity, member)] = incident["members"].items()
        i = IDENTITIES[identity]
        last = "2024-05-14T10" if i % 3 == 0 else "2024-05-14T09"
        started = datetime.fromtimestamp(member["occurrence"] / 1000, UTC).isoformat()
        assert started.startswith(last) and member["status"] == "resolved", (summary, i, member)
    assert cluster.kills >= 10, summary
    assert not cluster.exits, summary  # a replica ends on its own only if a stage stopped (a bug): exit 1
    assert {"503", "429", "timeout_after_commit"} <= set(desk.counts), summary
