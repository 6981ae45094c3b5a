"""Heartbeats through running bridges: pings (HTTP, Watchdog alerts, Opsgenie), one ticket when one
falls silent and its resolution on the next ping, with replicas and restarts; the list and the gauge."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from bridge.core import config
from bridge.core.config import MappingConfig
from bridge.core.errors import ConfigError
from bridge.process.embedded import EmbeddedRedis
from tests.amp import alert, group
from tests.conftest import ROOT, Snow, eventually, mapping, post
from tests.running import cli, scrape, value

BEAT_KEY = "beat-t0ken"
GENIE_KEY = "genie-t0ken"


def beat_mapping(snow: Snow, **beat: Any) -> MappingConfig:
    """The test mapping with an opsgenie source and one heartbeat `prom` (a desk of its own, keyed by cluster)."""
    data = mapping(snow.url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    data["sources"]["og"] = {"kind": "opsgenie", "secret": GENIE_KEY}
    data["heartbeats"] = {
        "prom": {
            "interval": "600ms",
            "grace": "200ms",
            "desk": "snow",
            "secret": BEAT_KEY,
            "key": ["cluster"],
            "alerts": {"sources": ["alertmanager", "og"]},
            "ticket": {"fields": {"short_description": "{{ summary }}", "description": "{{ description }}"}},
            **beat,
        }
    }
    return MappingConfig.model_validate(data)


async def http_ping(bridge: Any, name: str = "prom", token: str = BEAT_KEY, **query: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{bridge.port}/heartbeat/{name}", params=query, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def tickets(snow: Snow) -> list[dict[str, str]]:
    return snow.incidents()


async def test_silence_opens_one_ticket_and_the_next_ping_resolves_it(snow: Snow, make_bridge: Any) -> None:
    """A heartbeat that stops pinging opens one ticket naming it and its last ping; a ping resolves it."""
    bridge = await make_bridge(beat_mapping(snow))
    status, body = await http_ping(bridge, cluster="eu")
    assert (status, body["outcome"]) == (202, "new")
    status, body = await http_ping(bridge, cluster="eu")
    assert status == 202 and body["outcome"] == "ok" and body["key"] == {"cluster": "eu"}
    await eventually(lambda: tickets(snow), within=20)
    [ticket] = tickets(snow)
    assert ticket["short_description"].startswith("No heartbeat from eu since ")
    assert ticket["short_description"].endswith(" UTC")
    assert "Heartbeat 'prom', cluster=eu pings every 600ms (grace 200ms)" in ticket["description"]
    await asyncio.sleep(0.5)  # expired for longer: still one ticket
    assert len(tickets(snow)) == 1

    status, body = await http_ping(bridge, cluster="eu")
    assert (status, body["outcome"]) == (202, "recovered")
    await eventually(lambda: tickets(snow)[0]["state"] == "6", within=20)
    # silent again: the same ticket reopens (the heartbeat's route reopens within the hour)
    await eventually(lambda: tickets(snow)[0]["state"] == "2", within=20)
    assert len(tickets(snow)) == 1


async def test_watchdog_alerts_ping_one_heartbeat_per_cluster(snow: Snow, make_bridge: Any) -> None:
    """Watchdog alerts are pings keyed by cluster, never incidents; the cluster that goes silent gets the ticket."""
    bridge = await make_bridge(beat_mapping(snow, interval="1500ms", grace="500ms"))
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"

    def watchdog(cluster: str) -> dict[str, Any]:
        return group(alert(alertname="Watchdog", severity="none", instance="", device="", cluster=cluster))

    assert (await post(url, watchdog("eu")))[0] == 202
    loop = asyncio.get_running_loop()
    until = loop.time() + 30
    while not tickets(snow) and loop.time() < until:  # us keeps pinging, eu is silent
        assert (await post(url, watchdog("us")))[0] == 202
        await asyncio.sleep(0.1)
    [ticket] = tickets(snow)
    assert ticket["short_description"].startswith("No heartbeat from eu since ")
    # a resolved Watchdog (its Prometheus stopped) is no ping and no alert
    assert (await post(url, group(alert("resolved", alertname="Watchdog", cluster="eu"))))[0] == 202
    await asyncio.sleep(0.3)
    assert tickets(snow)[0]["state"] != "6"
    assert (await post(url, watchdog("eu")))[0] == 202
    await eventually(lambda: tickets(snow)[0]["state"] == "6", within=20)
    assert len(tickets(snow)) == 1


async def test_replicas_expire_a_heartbeat_once_and_a_restart_keeps_watching(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Three replicas tick the same timers: one ticket; a replica started after the last ping still expires it."""
    first = await make_bridge(beat_mapping(snow), consumer="a")
    assert (await http_ping(first, cluster="eu"))[0] == 202
    await first.stop()  # no replica runs while it comes due
    await asyncio.sleep(1.0)
    replicas = [await make_bridge(beat_mapping(snow), consumer=c) for c in ("b", "c", "d")]
    await eventually(lambda: tickets(snow), within=20)
    await asyncio.sleep(0.5)
    assert len(tickets(snow)) == 1
    assert len([r for r in snow.store.requests if r["method"] == "POST"]) == 1
    assert (await http_ping(replicas[2], cluster="eu"))[1]["outcome"] == "recovered"
    assert (await http_ping(replicas[1], cluster="eu"))[1]["outcome"] == "ok"
    await eventually(lambda: tickets(snow)[0]["state"] == "6", within=20)
    entries = await redis.xrange("bridge:v1:intake")
    kinds = [orjson.loads(fields[b"a"])["status"] for _, fields in entries]
    assert kinds.count("firing") <= 1 and kinds.count("resolved") <= 1  # (trimmed once decided)


async def test_pings_are_authenticated_and_key_sets_bounded(snow: Snow, make_bridge: Any) -> None:
    """A heartbeat with a secret needs its bearer token; unknown names are 404; key sets past max_keys are refused."""
    bridge = await make_bridge(beat_mapping(snow, max_keys=2))
    assert (await http_ping(bridge, token="", cluster="eu"))[0] == 401
    assert (await http_ping(bridge, token="wrong", cluster="eu"))[0] == 401
    assert (await http_ping(bridge, name="nope"))[0] == 404
    assert (await http_ping(bridge, cluster="eu"))[1]["outcome"] == "new"
    assert (await http_ping(bridge, cluster="us"))[1]["outcome"] == "new"
    status, body = await http_ping(bridge, cluster="ap")
    assert status == 422 and body["error"] == "too_many_keys"
    assert (await http_ping(bridge, cluster="eu"))[0] == 202  # the known ones still ping


async def test_opsgenie_heartbeat_ping_and_watchdog_create(snow: Snow, make_bridge: Any) -> None:
    """Opsgenie's heartbeat ping answers PONG; an Opsgenie create of a Watchdog is a ping, not a ticket."""
    bridge = await make_bridge(beat_mapping(snow, interval="10m"))
    base = f"http://127.0.0.1:{bridge.port}/opsgenie/og/v2"
    headers = {"Authorization": f"GenieKey {GENIE_KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/heartbeats/prom/ping", params={"cluster": "eu"}, headers=headers) as resp:
            assert resp.status == 202
            assert (await resp.json())["result"] == "PONG - Heartbeat received"
        async with session.get(f"{base}/heartbeats/prom/ping", headers={"Authorization": "GenieKey x"}) as resp:
            assert resp.status == 401
        async with session.put(f"{base}/heartbeats/nope/ping", headers=headers) as resp:
            assert resp.status == 404 and "[nope]" in (await resp.json())["message"]
        create = {"message": "Watchdog", "alias": "wd", "details": {"alertname": "Watchdog", "cluster": "us"}}
        async with session.post(f"{base}/alerts", json=create, headers=headers) as resp:
            assert resp.status == 202
    listed = await heartbeat_list(bridge)
    assert sorted(b["key"]["cluster"] for b in listed) == ["eu", "us"]
    await asyncio.sleep(0.3)
    assert tickets(snow) == []


async def heartbeat_list(bridge: Any) -> list[dict[str, Any]]:
    done = await cli("heartbeats", "list", "--redis-url", bridge.redis_url)
    found: list[dict[str, Any]] = orjson.loads(done.stdout)
    return found


async def test_list_gauge_and_forget(snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis) -> None:
    """`bridge heartbeats list` shows each one's state; /metrics its age and whether it expired; forget drops it."""
    bridge = await make_bridge(beat_mapping(snow))
    await http_ping(bridge, cluster="eu")
    await eventually(lambda: tickets(snow), within=20)
    [listed] = await heartbeat_list(bridge)
    assert listed["heartbeat"] == "prom" and listed["key"] == {"cluster": "eu"} and listed["state"] == "expired"
    assert listed["pings"] == 1 and listed["age_s"] >= 0.8

    async def expired_gauge() -> bool:
        _, samples = await scrape(f"http://127.0.0.1:{bridge.port}")
        return value(samples, "bridge_heartbeat_expired", heartbeat="prom", key="cluster=eu") == 1

    await eventually(expired_gauge, within=30)
    _, samples = await scrape(f"http://127.0.0.1:{bridge.port}")
    assert value(samples, "bridge_heartbeat_age_seconds", heartbeat="prom", key="cluster=eu") >= 0.8

    done = await cli("heartbeats", "forget", listed["id"], "--redis-url", redis_server.url)
    assert orjson.loads(done.stdout) == {"id": listed["id"], "forgotten": True}
    assert await heartbeat_list(bridge) == []
    missing = await cli("heartbeats", "forget", listed["id"], "--redis-url", redis_server.url, check=False)
    assert missing.returncode == 1 and b"no heartbeat" in missing.stderr


async def test_a_heartbeat_on_a_route_takes_its_ticket_fields(snow: Snow, make_bridge: Any) -> None:
    """With `route:` the heartbeat's alert takes that route's desk and fields, one incident of its own."""
    data = beat_mapping(snow).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    data["sources"]["og"]["secret"] = GENIE_KEY
    data["heartbeats"]["prom"] = {"interval": "300ms", "grace": 0, "route": "prometheus", "secret": BEAT_KEY}
    bridge = await make_bridge(MappingConfig.model_validate(data))
    assert (await http_ping(bridge))[1]["outcome"] == "new"
    await eventually(lambda: tickets(snow), within=20)
    assert tickets(snow)[0]["short_description"] == "[CRITICAL] heartbeat prom on prom"
    assert tickets(snow)[0]["correlation_id"].startswith("prometheus:")


@pytest.mark.parametrize(
    ("beat", "problem"),
    [
        ({"interval": "1m"}, "either `desk` (with its `ticket`) or `route`"),
        ({"interval": "1m", "desk": "snow", "route": "prometheus"}, "either `desk`"),
        ({"interval": "1m", "route": "prometheus", "ticket": {}}, "`ticket` goes with `desk`"),
        ({"interval": "1m", "desk": "snwo"}, "heartbeat 'prom': unknown desk 'snwo'; did you mean 'snow'?"),
        ({"interval": "1m", "route": "prometeus"}, "unknown route 'prometeus'"),
        ({"interval": "1m", "desk": "snow", "alerts": {"sources": ["am"]}}, "unknown source 'am'"),
        ({"interval": "0s", "desk": "snow"}, "greater than 0"),
        ({"interval": "1m", "desk": "snow", "alerts": {"match": ['alertname=~"("']}}, "alerts.match"),
    ],
)
def test_heartbeat_sections_are_validated_with_the_mapping(snow_url: str, beat: dict[str, Any], problem: str) -> None:
    """A heartbeat names a desk or a route that exists, sources that exist, a positive interval, good matchers."""
    data = mapping(snow_url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    data["heartbeats"] = {"prom": beat}
    with pytest.raises(
        (ConfigError, ValueError), match=problem.replace("(", r"\(").replace(")", r"\)").replace("`", ".")
    ):
        MappingConfig.model_validate(data)


@pytest.fixture
def snow_url() -> str:
    return "http://127.0.0.1:9"


def test_the_example_watches_each_prometheus_cluster_by_its_watchdog() -> None:
    """The packaged example has a heartbeat fed by Alertmanager's Watchdog, one per cluster, to ServiceNow."""
    example = config.load([ROOT / "bridge" / "samples" / "example.yaml"], env={})
    beat = example.heartbeats["prometheus"]
    assert beat.alerts is not None and beat.alerts.match == ['alertname="Watchdog"']
    assert "alertmanager" in beat.alerts.sources and beat.key == ["cluster"]
    route = example.heartbeat_routes["prometheus"]
    assert (route.id, route.desk) == ("heartbeat.prometheus", "servicenow")
    assert example.by_id("heartbeat.prometheus") is route
