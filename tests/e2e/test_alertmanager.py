"""The real Prometheus Alertmanager (Debian's prometheus-alertmanager) posting to the bridge."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.process.embedded import free_port
from bridge.runtime.heartbeats import read_all
from tests.conftest import ROOT, Snow, eventually, mapping, require

pytestmark = pytest.mark.e2e
TOKEN = "am-bridge-token"


@pytest.fixture
def alertmanager_binary() -> str:
    return require("prometheus-alertmanager")


def am_config(bridge_port: int, token_file: Path) -> dict[str, Any]:
    """The shipped receiver snippet, pointed at the test bridge, with test-sized intervals."""
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"http://127.0.0.1:{bridge_port}/webhook/alertmanager"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return dict(config)


@pytest.fixture
def start_alertmanager(alertmanager_binary: str, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(bridge_port: int, make_config: Any = am_config, secret: str = TOKEN) -> str:
        """Alertmanager with `make_config(bridge port, secret file)`; its URL."""
        token_file = tmp_path / "bridge.token"
        token_file.write_text(secret)
        config_file = tmp_path / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(make_config(bridge_port, token_file)))
        port = free_port()
        args = [
            alertmanager_binary, f"--config.file={config_file}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        ]  # fmt: skip
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def am_post(session: aiohttp.ClientSession, am: str, alerts: list[dict[str, Any]]) -> None:
    async with session.post(f"{am}/api/v2/alerts", json=alerts) as resp:
        assert resp.status == 200, await resp.text()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_real_alertmanager_opens_and_resolves_an_incident(
    snow: Snow, make_bridge: Any, start_alertmanager: Any, session: aiohttp.ClientSession
) -> None:
    """Alerts posted to Alertmanager's API become one simulator incident, and their resolution closes it."""
    bridge = await make_bridge(mapping(snow.url, secret=TOKEN, resolve_after="500ms"))
    am = start_alertmanager(bridge.port)

    async def am_ready() -> bool:
        try:
            async with session.get(f"{am}/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(am_ready, within=20)
    now = datetime.now(UTC)
    labels = [
        {"alertname": "HostDown", "instance": "web-01:9100", "severity": "critical", "device": d}
        for d in ("sda", "sdb")
    ]
    firing = [
        {"labels": lab, "annotations": {"summary": "web-01 is down"}, "startsAt": now.isoformat()} for lab in labels
    ]
    await am_post(session, am, firing)
    await eventually(lambda: snow.incidents(), within=20)
    ticket = snow.incidents()[0]
    assert ticket["short_description"] == "[CRITICAL] HostDown on web-01:9100"
    assert len(snow.incidents()) == 1

    ended = (now + timedelta(seconds=1)).isoformat()
    await am_post(session, am, [{**a, "endsAt": ended} for a in firing])
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=30)
    assert len(snow.incidents()) == 1
    assert snow.incidents()[0]["close_code"] == "Solution provided"


OPSGENIE_KEY = "am-genie-key"


def opsgenie_am_config(bridge_port: int, key_file: Path) -> dict[str, Any]:
    """The migration snippet's receiver (opsgenie_configs), its api_url at the test bridge."""
    config = yaml.safe_load((ROOT / "deploy" / "snippets" / "opsgenie-migration" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    opsgenie = config["receivers"][0]["opsgenie_configs"][0]
    opsgenie["api_url"] = f"http://127.0.0.1:{bridge_port}/opsgenie/opsgenie/"
    opsgenie["api_key_file"] = str(key_file)
    return dict(config)


async def test_real_alertmanager_opsgenie_receiver_opens_and_closes_one_ticket(
    snow: Snow, make_bridge: Any, start_alertmanager: Any, session: aiohttp.ClientSession
) -> None:
    """opsgenie_configs with api_url at the bridge: a firing group opens one ticket, its resolution closes it."""
    config = mapping(snow.url, resolve_after="500ms")
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    data["sources"] = {"opsgenie": {"kind": "opsgenie", "secret": OPSGENIE_KEY}}
    data["routes"][0]["sources"] = ["opsgenie"]
    bridge = await make_bridge(type(config).model_validate(data))
    am = start_alertmanager(bridge.port, opsgenie_am_config, OPSGENIE_KEY)

    async def am_ready() -> bool:
        try:
            async with session.get(f"{am}/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(am_ready, within=20)
    now = datetime.now(UTC)
    labels = [
        {"alertname": "HostDown", "instance": "web-01:9100", "severity": "critical", "device": d}
        for d in ("sda", "sdb")
    ]
    firing = [
        {"labels": lab, "annotations": {"summary": "web-01 is down"}, "startsAt": now.isoformat()} for lab in labels
    ]
    await am_post(session, am, firing)
    await eventually(lambda: snow.incidents(), within=20)
    ticket = snow.incidents()[0]
    # one Opsgenie alert per group: its details are the group's common labels, its priority from `severity`
    assert ticket["short_description"] == "[CRITICAL] HostDown on web-01:9100"
    assert ticket["impact"] == "1"
    assert len(snow.incidents()) == 1

    ended = (now + timedelta(seconds=1)).isoformat()
    await am_post(session, am, [{**a, "endsAt": ended} for a in firing])
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=30)
    assert len(snow.incidents()) == 1
    assert snow.incidents()[0]["close_code"] == "Solution provided"


def watchdog_am_config(bridge_port: int, token_file: Path) -> dict[str, Any]:
    """The shipped receiver with the Watchdog route docs/operations.md gives, at test-sized intervals."""
    config = am_config(bridge_port, token_file)
    config["route"]["routes"] = [
        {
            "matchers": ['alertname="Watchdog"'],
            "receiver": config["route"]["receiver"],
            "group_by": ["cluster"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1s",
        }
    ]
    return config


async def test_a_dead_alertmanager_opens_a_heartbeat_ticket_and_a_live_one_resolves_it(
    snow: Snow, make_bridge: Any, alertmanager_binary: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Alertmanager repeats the Watchdog to the bridge; when it dies one ticket opens, when it runs again it closes."""
    data = mapping(snow.url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # (secrets dump masked)
    data["sources"]["alertmanager"]["secret"] = TOKEN
    data["heartbeats"] = {
        "prometheus": {
            "interval": "2s", "grace": "1s", "desk": "snow", "key": ["cluster"], "alerts": {},
            "ticket": {"fields": {"short_description": "{{ summary }}"}},
        }
    }  # fmt: skip
    bridge = await make_bridge(type(mapping(snow.url)).model_validate(data))
    token_file = tmp_path / "bridge.token"
    token_file.write_text(TOKEN)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(watchdog_am_config(bridge.port, token_file)))

    async def alertmanager() -> tuple[asyncio.subprocess.Process, str]:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            alertmanager_binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / f'am-{port}'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        am = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            try:
                async with session.get(f"{am}/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, within=20)
        watchdog = {"labels": {"alertname": "Watchdog", "severity": "none", "cluster": "prod-eu"}}
        await am_post(session, am, [{**watchdog, "endsAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}])
        return proc, am

    proc, _ = await alertmanager()
    try:

        async def pinged(times: int) -> bool:
            listed = [b for b in await read_all(bridge.runtime.redis) if b.name == "prometheus"]
            return bool(listed) and listed[0].pings >= times

        await eventually(lambda: pinged(2), within=30)  # the first notification and at least one repeat
        assert snow.incidents() == []  # the Watchdog is a ping, not an incident
        proc.kill()
        await proc.wait()
        await eventually(lambda: snow.incidents(), within=30)
        [ticket] = snow.incidents()
        assert ticket["short_description"].startswith("No heartbeat from prod-eu since ")
        proc, _ = await alertmanager()
        await eventually(lambda: snow.incidents()[0]["state"] == "6", within=30)
        assert len(snow.incidents()) == 1
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
