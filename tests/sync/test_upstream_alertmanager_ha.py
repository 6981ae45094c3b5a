"""The loop back with an Alertmanager HA pair and two bridge replicas, all real: both Alertmanagers notify (each
its own replica) and open one ticket; a person takes it at the desk, the Business Rule posts to both replicas,
and exactly one silence is made, which both Alertmanagers show (gossiped) and which suppresses the alerts in both;
the person's resolve expires it in both."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.core.config import MappingConfig
from bridge.process.embedded import free_port
from tests.conftest import Snow, eventually, require
from tests.sync.test_loop_back import RESOLVE, TOKEN, calls, human, pusher, sim
from tests.sync.test_upstream_alertmanager import config as one_am_config

pytestmark = pytest.mark.e2e
AM_TOKEN = "am-pair-token"


@pytest.fixture
def am_pair(tmp_path: Path) -> Iterator[Any]:
    """start(bridge ports, URLs) -> the URLs of two clustered Alertmanagers listening there, the first notifying
    the first bridge, the second the second (an HA pair double-sends: each member notifies on its own)."""
    binary = require("prometheus-alertmanager")
    procs: list[subprocess.Popen[bytes]] = []
    token = tmp_path / "token"
    token.write_text(AM_TOKEN)

    def start(bridge_ports: list[int], webs: list[str]) -> list[str]:
        gossip = [f"127.0.0.1:{free_port()}" for _ in bridge_ports]
        urls = []
        for n, port in enumerate(bridge_ports):
            config = {
                "route": {"receiver": "bridge", "group_by": ["alertname", "instance"], "group_wait": "1s",
                          "group_interval": "1s", "repeat_interval": "2s"},
                "receivers": [{"name": "bridge", "webhook_configs": [{
                    "url": f"http://127.0.0.1:{port}/webhook/alertmanager", "send_resolved": True,
                    "http_config": {"authorization": {"credentials_file": str(token)}}}]}],
            }  # fmt: skip
            (tmp_path / f"am{n}.yml").write_text(yaml.safe_dump(config))
            web = webs[n].rsplit(":", 1)[1]
            peers = [f"--cluster.peer={g}" for g in gossip if g != gossip[n]]
            args = [binary, f"--config.file={tmp_path / f'am{n}.yml'}", f"--storage.path={tmp_path / f'am{n}'}",
                    f"--web.listen-address=127.0.0.1:{web}", f"--cluster.listen-address={gossip[n]}",
                    "--cluster.gossip-interval=50ms", "--cluster.pushpull-interval=1s", *peers]  # fmt: skip
            log = (tmp_path / f"am{n}.log").open("wb")
            procs.append(subprocess.Popen(args, stdout=log, stderr=log))
            urls.append(f"http://127.0.0.1:{web}")
        return urls

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def config(snow_url: str, ams: list[str]) -> MappingConfig:
    return one_am_config(snow_url, ams, secret=AM_TOKEN)


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _ready(session: aiohttp.ClientSession, am: str) -> bool:
    try:
        async with session.get(f"{am}/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_one_ticket_change_makes_one_silence_across_an_ha_pair_and_two_replicas(
    snow: Snow, make_bridge: Any, am_pair: Any
) -> None:
    # The pair's members are known only once they run, and they notify the replicas: the replicas start first,
    # with the pair's addresses reserved.
    ams = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    replicas = [await make_bridge(config(snow.url, ams)) for _ in range(2)]
    ports = [r.port for r in replicas]
    assert am_pair(ports, ams) == ams
    async with aiohttp.ClientSession() as session:
        for am in ams:
            await eventually(lambda am=am: _ready(session, am), within=20)
        ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = [
            {"labels": {"alertname": "DiskFull", "instance": "db-1:9100", "device": d}, "endsAt": ends}
            for d in ("/dev/sda", "/dev/sdb")
        ]
        for am in ams:  # Prometheus sends every alert to every member of the pair
            async with session.post(f"{am}/api/v2/alerts", json=body) as resp:
                assert resp.status == 200, await resp.text()
        tickets = await eventually(lambda: snow.incidents(), within=20)
        assert len(tickets) == 1  # both members notified, both replicas took it: one ticket
        ticket = tickets[0]

        # The Business Rule posts the person's change to both replicas (two REST messages, or a retry).
        await sim(snow, "/_sim/push", {"url": f"http://127.0.0.1:{ports[0]}/desk-events/snow",
                                       "headers": {"Authorization": f"Bearer {TOKEN}"}})  # fmt: skip
        await human(snow, ticket, "jdoe", state="2")
        taken = next(d.body for d in pusher(snow).deliveries if d.body["sys_updated_by"] == "jdoe")
        async with session.post(
            f"http://127.0.0.1:{ports[1]}/desk-events/snow", json=taken, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 202

        async def active(am: str) -> list[dict[str, Any]]:
            return [s for s in await _json(session, f"{am}/api/v2/silences") if s["status"]["state"] == "active"]

        made = await eventually(lambda: active(ams[0]), within=15)
        gossiped = await eventually(lambda: active(ams[1]), within=15)
        assert len(made) == 1 and [s["id"] for s in gossiped] == [made[0]["id"]]  # one silence, in both
        assert ticket["number"] in made[0]["comment"]

        async def suppressed(am: str) -> bool:
            alerts = await _json(session, f"{am}/api/v2/alerts")
            return len(alerts) == 2 and all(a["status"]["state"] == "suppressed" for a in alerts)

        for am in ams:
            await eventually(lambda am=am: suppressed(am), within=15)
        await _still_one(session, ams, made[0]["id"])  # a few more repeat intervals: no second silence

        await human(snow, ticket, "jdoe", **RESOLVE)  # the person resolves it: the silence ends in both

        async def expired(am: str) -> bool:
            found = await _json(session, f"{am}/api/v2/silences")
            return any(s["id"] == made[0]["id"] and s["status"]["state"] == "expired" for s in found)

        for am in ams:
            await eventually(lambda am=am: expired(am), within=15)
    assert calls(snow).count("create") == 1


async def _still_one(session: aiohttp.ClientSession, ams: list[str], silence_id: str) -> None:
    import asyncio

    await asyncio.sleep(3)  # longer than the pair's repeat interval and the replicas' upstream back-off start
    for am in ams:
        found = await _json(session, f"{am}/api/v2/silences")
        assert [s["id"] for s in found if s["status"]["state"] == "active"] == [silence_id]
