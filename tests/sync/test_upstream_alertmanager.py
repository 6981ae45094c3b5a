"""Acknowledgements upstream through the real Alertmanager (Debian's prometheus-alertmanager): a ticket taken at
the ServiceNow simulator silences the incident's members in Alertmanager, once with two bridge replicas; the
person's resolve expires the silence."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.amp import alert
from tests.conftest import Snow, eventually, start_app
from tests.sync.test_loop_back import FIELDS, RESOLVE, TOKEN, applied, calls, human, open_ticket, sim

pytestmark = pytest.mark.e2e


def config(snow_url: str, am_url: str | list[str], secret: str | None = None) -> MappingConfig:
    """The Alertmanager source acknowledging in `am_url` (one, or an HA pair's), the ServiceNow desk."""
    source: dict[str, Any] = {"kind": "alertmanager", "upstream": {"url": am_url}}
    if secret:
        source["secret"] = secret
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": source},
            "desks": {"snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"}},
            "sync": {"snow": {"secret": TOKEN}},
            "routes": [
                {
                    "name": "ops",
                    "desk": "snow",
                    "correlate": {"by": ["{{ labels.instance }}"]},
                    "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
                    "ticket": {"fields": FIELDS},
                }
            ],
        }
    )


async def silences(am: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{am}/api/v2/silences") as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = await resp.json()
        return found


async def test_assigned_ticket_silences_in_alertmanager_once_and_resolve_expires_it(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, start_alertmanager: Any
) -> None:
    """Assigned at the desk: one silence in Alertmanager for the incident's two members (two replicas, pushes to
    both); the person's resolve expires it; the audit trail names who."""
    am = start_alertmanager(9)  # its own notifications go nowhere: only its silences API is used
    await eventually(lambda: _up(am), within=20)
    first = await make_bridge(config(snow.url, am))
    second = await make_bridge(config(snow.url, am))
    url = f"http://127.0.0.1:{first.port}"
    members = [alert(instance="db-1:9100", device="/dev/sda"), alert(instance="db-1:9100", device="/dev/sdb")]
    ticket = await open_ticket(snow, url, *members)
    await eventually(lambda: calls(snow) == ["create", "note"])  # the second member's note
    for bridge in (first, second):  # the Business Rule posts to both replicas
        target = f"http://127.0.0.1:{bridge.port}/desk-events/snow"
        await sim(snow, "/_sim/push", {"url": target, "headers": {"Authorization": f"Bearer {TOKEN}"}})
        if bridge is first:
            await human(snow, ticket, "jdoe", state="2")  # in progress: taken
        else:
            from tests.sync.test_loop_back import pusher

            body = next(d.body for d in pusher(snow).deliveries if d.body["sys_updated_by"] == "jdoe")
            await _post(target, body)
    made = await eventually(lambda: _active(am), within=15)
    assert len(made) == 1
    silence = made[0]
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers["instance"] == "db-1:9100" and "sda" in matchers["device"] and "sdb" in matchers["device"]
    assert ticket["number"] in silence["comment"]
    await eventually(lambda: applied(redis, "ACKNOWLEDGE"))
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    state = await redis.hgetall(keys.IncidentKeys(bases[0].decode()).state)
    assert state[b"ack:alertmanager"].decode() == silence["id"]

    await human(snow, ticket, "jdoe", **RESOLVE)  # resolved while firing: muted, the silence released
    await eventually(lambda: applied(redis, "MUTED"))
    await eventually(lambda: _expired(am, silence["id"]), within=15)
    assert not await _active(am)
    assert await redis.hget(keys.IncidentKeys(bases[0].decode()).state, "ack:alertmanager") is None


async def _up(am: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{am}/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _active(am: str) -> list[dict[str, Any]]:
    return [s for s in await silences(am) if s["status"]["state"] == "active"]


async def _expired(am: str, silence_id: str) -> bool:
    return any(s["id"] == silence_id and s["status"]["state"] == "expired" for s in await silences(am))


async def _post(url: str, body: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
    ):
        assert resp.status == 202


async def test_the_silence_expires_when_the_alerts_clear(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, start_alertmanager: Any
) -> None:
    """Acknowledged, then every member clears: the bridge resolves the ticket and expires the silence it made."""
    am = start_alertmanager(9)
    await eventually(lambda: _up(am), within=20)
    bridge = await make_bridge(config(snow.url, am))
    url = f"http://127.0.0.1:{bridge.port}"
    await sim(snow, "/_sim/push", {"url": f"{url}/desk-events/snow", "headers": {"Authorization": f"Bearer {TOKEN}"}})
    member = alert(instance="db-2:9100")
    ticket = await open_ticket(snow, url, member)
    await eventually(lambda: calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", state="2")
    made = await eventually(lambda: _active(am), within=15)
    cleared = {**member, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}
    async with aiohttp.ClientSession() as session:
        from tests.amp import group

        async with session.post(f"{url}/webhook/alertmanager", json=group(cleared)) as resp:
            assert resp.status == 202
    await eventually(lambda: "resolve" in calls(snow))
    await eventually(lambda: _expired(am, made[0]["id"]), within=15)


async def test_a_silence_whose_answer_was_lost_is_taken_over_not_made_twice(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, start_alertmanager: Any
) -> None:
    """A proxy in front of Alertmanager passes the bridge's first POST /api/v2/silences on and answers it
    502 (the answer lost: Alertmanager made the silence). The bridge tries again after its back-off, finds
    the silence it made (its createdBy, comment and matchers) and keeps it: one silence, not two, and its
    id is the acknowledgement's handle."""
    am = start_alertmanager(9)
    await eventually(lambda: _up(am), within=20)
    lost: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                am + request.path_qs,
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            status, body = resp.status, await resp.read()
        if request.method == "POST" and request.path == "/api/v2/silences" and not lost:
            lost.append(body.decode())
            return web.Response(status=502, text="bad gateway")  # Alertmanager made it; the answer is lost
        return web.Response(status=status, body=body, content_type="application/json")

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forward)
    runner, proxy_url = await start_app(proxy)
    try:
        bridge = await make_bridge(config(snow.url, proxy_url))
        url = f"http://127.0.0.1:{bridge.port}"
        await sim(
            snow, "/_sim/push", {"url": f"{url}/desk-events/snow", "headers": {"Authorization": f"Bearer {TOKEN}"}}
        )
        ticket = await open_ticket(snow, url, alert(instance="db-3:9100"))
        await eventually(lambda: calls(snow) == ["create"])
        await human(snow, ticket, "jdoe", state="2")
        await eventually(lambda: applied(redis, "ACKNOWLEDGE"))
        bases = await redis.zrange(keys.INCIDENTS, 0, -1)
        ik = keys.IncidentKeys(bases[0].decode())
        handle = await eventually(lambda: redis.hget(ik.state, "ack:alertmanager"), within=20)
        assert lost, "the first silence's answer was not the one lost"
        made = await silences(am)
        assert [s["id"] for s in made] == [handle.decode()], made  # one silence, the one whose answer was lost
        assert made[0]["status"]["state"] == "active" and lost[0].find(made[0]["id"]) >= 0
    finally:
        await runner.cleanup()


async def test_an_acknowledgement_about_to_end_is_extended_while_the_ticket_is_open(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, start_alertmanager: Any
) -> None:
    """A silence within its last quarter hour, the ticket still open: the worker moves its end an hour ahead,
    the same silence id kept."""
    am = start_alertmanager(9)
    await eventually(lambda: _up(am), within=20)
    bridge = await make_bridge(config(snow.url, am))
    url = f"http://127.0.0.1:{bridge.port}"
    await sim(snow, "/_sim/push", {"url": f"{url}/desk-events/snow", "headers": {"Authorization": f"Bearer {TOKEN}"}})
    ticket = await open_ticket(snow, url, alert(instance="db-3:9100"))
    await eventually(lambda: calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", state="2")
    made = (await eventually(lambda: _active(am), within=15))[0]
    base = (await redis.zrange(keys.INCIDENTS, 0, -1))[0].decode()
    now = bridge.runtime.clock()
    await redis.hset(keys.IncidentKeys(base).state, "ack_until:alertmanager", now + 60_000)  # as if 59 minutes passed
    await redis.zadd(keys.UPSTREAM_READY, {base: now})
    extended = await eventually(lambda: _ends_after(am, made["endsAt"]), within=15)
    assert [s["id"] for s in extended] == [made["id"]]
    extends = [
        s.value
        for m in bridge.runtime.metrics.upstream_actions.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels["action"] == "extend" and s.labels["result"] == "ok"
    ]
    assert extends == [1.0]


async def _ends_after(am: str, ends: str) -> list[dict[str, Any]]:
    active = await _active(am)
    return active if active and all(s["endsAt"] > ends for s in active) else []
