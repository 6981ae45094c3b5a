"""Route identity survives mapping changes: a route renamed with its `id` kept keeps its incidents; a route
renamed without it, or removed, is reported, and its incidents still resolve (by their clears, by their
hold-down, by hand), also on a replica that starts on the new mapping with the old route's work queued."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import list_incidents
from bridge.core import config as config_mod
from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime import routebook
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.running import TOKEN, base_url, call, cli, scrape, value, webhook_url


def write(path: Path, snow: Snow, *routes: dict[str, Any]) -> Path:
    """The test mapping with `routes` (each over the test route's settings), as a file a reload reads."""
    data = mapping(snow.url, resolve_after="200ms").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # SecretStr dumps masked
    template = data["routes"][0]
    template.pop("id", None)
    data["routes"] = [{**template, **route} for route in routes]
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


async def start(make_bridge: Any, path: Path) -> Any:
    return await make_bridge(config_mod.load([path]), config_paths=[str(path)], reload_poll_s=60, admin_token=TOKEN)


async def reload(bridge: Any) -> None:
    assert await bridge.reloader.reload("test")


async def test_rename_keeping_the_id_keeps_the_incident_and_its_ticket(
    snow: Snow, make_bridge: Any, tmp_path: Path, redis: aioredis.Redis
) -> None:
    """Renamed with `id: <old name>`: repeats and new members stay on the one ticket, and its clears resolve it."""
    path = write(tmp_path / "m.json", snow, {"name": "prometheus"})
    bridge = await start(make_bridge, path)
    await post(webhook_url(bridge), group(alert()))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    write(path, snow, {"name": "prom-critical", "id": "prometheus"})
    await reload(bridge)
    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sdc1")))  # a repeat and a new member
    await eventually(lambda: snow.notes(ticket))
    await post(webhook_url(bridge), group(alert("resolved"), alert("resolved", device="/dev/sdc1")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    assert len(snow.incidents()) == 1
    assert [i["route"] for i in await list_incidents(redis)] == ["prometheus"]
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_retired_route_incidents", route="prometheus") == 0


class Lines:
    """Stands in for a module's structlog logger: keeps (level, event, fields) of every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


async def test_rename_without_the_id_is_reported_and_clears_still_resolve_the_old_ticket(
    snow: Snow, make_bridge: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renamed without an `id`: the reload says the old route has a live incident; its alert's clear, now
    routed by the new route, still resolves the old ticket; a new alert opens its ticket under the new route."""
    path = write(tmp_path / "m.json", snow, {"name": "prometheus"})
    bridge = await start(make_bridge, path)
    await post(webhook_url(bridge), group(alert()))
    old = (await eventually(lambda: snow.incidents()))[0]
    logged = Lines()
    monkeypatch.setattr(routebook, "log", logged)
    write(path, snow, {"name": "prom-critical"})
    await reload(bridge)
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_retired_route_incidents", route="prometheus") == 1
    (retired,) = [fields for level, event, fields in logged.lines if event == "route_retired"]
    assert retired["route"] == "prometheus" and retired["live_incidents"] == 1

    await post(webhook_url(bridge), group(alert()))  # a repeat of the old incident's member: no new ticket
    await post(webhook_url(bridge), group(alert(instance="web-02:9100")))  # a new alert: the new route's
    await eventually(lambda: len(snow.incidents()) == 2)
    await post(webhook_url(bridge), group(alert("resolved")))
    await eventually(lambda: snow.store.get(old["sys_id"])["state"] == "6", within=5)
    await asyncio.sleep(0.3)
    new = next(t for t in snow.incidents() if t["sys_id"] != old["sys_id"])
    assert new["correlation_id"].startswith("prom-critical:") and new["state"] == "1"
    assert old["correlation_id"].startswith("prometheus:")
    assert len(snow.incidents()) == 2


async def test_removed_route_is_reported_and_its_incident_resolved_by_hand(
    snow: Snow, make_bridge: Any, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """A route removed with an open incident: the reload reports it, and `bridge incidents resolve` and the
    admin API still close its tickets, in the desk the route had."""
    db = {"name": "db", "match": ['team="db"'], "correlate": {"by": ["{{ labels.instance }}"]}}
    path = write(tmp_path / "m.json", snow, db, {"name": "prometheus"})
    bridge = await start(make_bridge, path)
    await post(webhook_url(bridge), group(alert(team="db"), alert(team="db", instance="db-2:9100")))
    await eventually(lambda: len(snow.incidents()) == 2)
    write(path, snow, {"name": "prometheus"})
    await reload(bridge)
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_retired_route_incidents", route="db") == 2

    first, second = sorted(snow.incidents(), key=lambda t: t["number"])
    await cli(
        "incidents", "resolve", first["correlation_id"], "--note", "route removed", BRIDGE_REDIS_URL=redis_server.url
    )
    status, body, _ = await call("POST", f"{base_url(bridge)}/api/v1/incidents/{second['correlation_id']}/resolve")
    assert status == 202, body
    await eventually(lambda: all(t["state"] == "6" for t in snow.incidents()), within=5)
    assert any("route removed" in n for n in snow.notes(first))
    assert len(snow.incidents()) == 2


async def test_a_replica_on_the_new_mapping_delivers_the_old_routes_queued_work(
    snow: Snow, make_bridge: Any, tmp_path: Path, redis: aioredis.Redis
) -> None:
    """The old route's note and resolve wait in the outbox while the desk is down; a replica started on a
    mapping without that route delivers them to the old ticket, its hold-down firing with the old policy."""
    path = write(tmp_path / "m.json", snow, {"name": "prometheus"})
    first = await start(make_bridge, path)
    await post(webhook_url(first), group(alert()))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    snow.faults.set(fail_5xx=10_000)  # the desk is down: the next actions wait in the outbox
    await post(webhook_url(first), group(alert(), alert(device="/dev/sdc1")))
    base = keys.base_of(ticket["correlation_id"])

    async def queued() -> bool:
        return bool(await redis.llen(keys.IncidentKeys(base).outbox))

    await eventually(queued)
    await first.stop()
    second_path = write(tmp_path / "m2.json", snow, {"name": "prom-critical", "match": ['severity="critical"']})
    second = await start(make_bridge, second_path)
    await post(webhook_url(second), group(alert("resolved"), alert("resolved", device="/dev/sdc1")))
    await asyncio.sleep(0.5)
    snow.faults.reset()
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=10)
    assert any("/dev/sdc1" in n for n in snow.notes(ticket))
    assert len(snow.incidents()) == 1
    assert await redis.xlen(keys.DLQ) == 0
