"""The loop back against real Redis, a running bridge and the ServiceNow simulator pushing its Business Rule:
each route policy for a person's change, with the exact desk calls; once and in order; the bridge's own
changes dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.engine.silences import Silences
from bridge.process.embedded import EmbeddedRedis
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.running import cli

TOKEN = "desk-t0ken"
FIELDS = {"short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}", "description": "{{ summary }}"}


def config(snow_url: str, sync: dict[str, Any] | None = None, desk_sync: dict[str, Any] | None = None) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"}},
            "sync": {"snow": {"secret": TOKEN, **(desk_sync or {})}},
            "routes": [
                {
                    "name": "ops",
                    "desk": "snow",
                    "correlate": {"by": ["{{ labels.instance }}"]},
                    "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
                    "ticket": {"fields": FIELDS},
                    "sync": sync or {},
                }
            ],
        }
    )


async def sim(snow: Snow, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(snow.url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def human(snow: Snow, ticket: dict[str, str], user: str, **changes: str) -> None:
    await sim(snow, f"/_sim/human/{ticket['sys_id']}", {"user": user, "changes": changes})
    await pusher(snow).drained()


def pusher(snow: Snow) -> Any:
    from adapters.simulators.servicenow import PUSH

    return snow.app[PUSH]


async def start(snow: Snow, make_bridge: Any, **kw: Any) -> tuple[Any, str]:
    bridge = await make_bridge(config(snow.url, **kw))
    url = f"http://127.0.0.1:{bridge.port}"
    await sim(snow, "/_sim/push", {"url": f"{url}/desk-events/snow", "headers": {"Authorization": f"Bearer {TOKEN}"}})
    return bridge, url


def calls(snow: Snow, since: int = 0) -> list[str]:
    """The bridge's desk calls (the simulator records API requests, not a person's changes in the UI)."""
    out = []
    for r in snow.store.requests[since:]:
        body = r.get("body") or {}
        if r["method"] == "POST":
            out.append("create")
        elif r["method"] == "PATCH" and body.get("state") == "6":
            out.append("resolve")
        elif r["method"] == "PATCH" and body.get("state") == "2":
            out.append("reopen")
        elif r["method"] == "PATCH" and set(body) == {"work_notes"}:
            out.append("note")
        elif r["method"] == "PATCH":
            out.append("update")
    return out


async def open_ticket(snow: Snow, url: str, *alerts: dict[str, Any]) -> dict[str, str]:
    status, _ = await post(f"{url}/webhook/alertmanager", group(*alerts))
    assert status == 202
    return (await eventually(lambda: snow.incidents()))[0]


async def state_of(redis: aioredis.Redis, field: str = "state") -> str:
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    value = await redis.hget(keys.IncidentKeys(bases[0].decode()).state, field)
    return value.decode() if value else ""


async def applied(redis: aioredis.Redis, outcome: str, count: int = 1) -> bool:
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    trail = await redis.lrange(keys.IncidentKeys(bases[0].decode()).audit, 0, -1)
    events = [orjson.loads(e) for e in trail if b"DESK_EVENT" in e]
    return sum(1 for e in events if e["outcome"] == outcome) >= count


RESOLVE = {"state": "6", "close_code": "Solution provided", "close_notes": "fixed the disk"}
A1 = alert(instance="db-1:9100", device="/dev/sda")
A2 = alert(instance="db-1:9100", device="/dev/sdb")


async def test_resolved_while_firing_mutes_until_clear(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """Resolved by a person while alerts fire (default mute_until_clear): no reopen, later alerts are notes,
    and once all clear the incident resolves without a desk resolve."""
    _, url = await start(snow, make_bridge)
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: snow.store.requests and calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", **RESOLVE)
    await eventually(lambda: applied(redis, "MUTED"))
    assert await state_of(redis, "muted") == "1"
    before = len(snow.store.requests)
    status, _ = await post(f"{url}/webhook/alertmanager", group(A2))  # a new member: a note, no reopen
    assert status == 202
    await eventually(lambda: calls(snow, before) == ["note"])
    for a in (A1, A2):
        await post(f"{url}/webhook/alertmanager", group({**a, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}))
    await eventually(lambda: _eq(state_of(redis), "resolved"))
    await pusher(snow).drained()
    assert calls(snow, before) == ["note", "note"]  # A2 joined, A1 cleared; no reopen, no resolve at the end
    assert snow.store.get(ticket["sys_id"])["state"] == "6"


async def _eq(value: Any, want: str) -> bool:
    return (await value) == want


async def test_resolved_while_firing_reopens_where_asked(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """on_desk_resolve: reopen reopens the ticket at once (read, then reopen), once however often it comes."""
    bridge, url = await start(snow, make_bridge, sync={"on_desk_resolve": "reopen"})
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    before = len(snow.store.requests)
    await human(snow, ticket, "jdoe", **RESOLVE)
    await eventually(lambda: "reopen" in calls(snow, before))
    await pusher(snow).drained()
    body = next(d.body for d in pusher(snow).deliveries if d.body["sys_updated_by"] == "jdoe")
    # The same change pushed again, and an older one after it: both dropped
    for again in (body, {**body, "sys_mod_count": "1", "sys_updated_on": "2000-01-01 00:00:00"}):
        status, _ = await post(f"{url}/desk-events/snow", again, Authorization=f"Bearer {TOKEN}")
        assert status == 202
    await eventually(lambda: applied(redis, "REOPEN"))
    await eventually(lambda: outcomes(bridge).get("DUPLICATE", 0) >= 2)
    assert calls(snow, before).count("reopen") == 1
    assert snow.store.get(ticket["sys_id"])["state"] == "2"


def outcomes(bridge: Any) -> dict[str, float]:
    """bridge_sync_events_total by outcome."""
    out: dict[str, float] = {}
    for metric in bridge.runtime.metrics.sync_events.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["outcome"]] = out.get(sample.labels["outcome"], 0) + sample.value
    return out


async def test_resolved_while_firing_opens_a_new_ticket_where_asked(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """on_desk_resolve: new_ticket opens a second ticket at once for what still fires, with a new correlation id."""
    _, url = await start(snow, make_bridge, sync={"on_desk_resolve": "new_ticket"})
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    before = len(snow.store.requests)
    await human(snow, ticket, "jdoe", **RESOLVE)
    tickets = await eventually(lambda: len(snow.incidents()) == 2 and snow.incidents())
    assert calls(snow, before) == ["create"]
    assert tickets[0]["correlation_id"] != tickets[1]["correlation_id"]
    assert tickets[0]["state"] == "6" and tickets[1]["state"] == "1"


async def test_resolved_when_clear_resolves_without_a_desk_call(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Resolved by a person during the hold-down: resolved in Redis, the bridge's own resolve never comes."""
    _, url = await start(snow, make_bridge, sync={"on_desk_resolve": "reopen"})
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    before = len(snow.store.requests)
    await post(f"{url}/webhook/alertmanager", group({**A1, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}))
    await eventually(lambda: _eq(state_of(redis), "resolving"))
    await human(snow, ticket, "jdoe", **RESOLVE)
    await eventually(lambda: applied(redis, "RESOLVED"))
    assert await state_of(redis) == "resolved"
    await asyncio.sleep(0.5)  # past the hold-down: its resolve would have been made by now
    await pusher(snow).drained()
    assert calls(snow, before) == []


async def test_cancelled_closes_and_silences_the_members(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """Cancelled: the incident closes (its next firing is a new ticket) and a silence by the person covers its
    members for on_desk_cancel_silence; the silence then suppresses a re-fire."""
    _, url = await start(snow, make_bridge, sync={"on_desk_cancel_silence": "2h"})
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    before = len(snow.store.requests)
    await human(snow, ticket, "jdoe", state="8")
    await eventually(lambda: applied(redis, "CANCELLED"))
    silences = await eventually(lambda: Silences(redis).list())
    assert len(silences) == 1
    silence = silences[0]
    assert silence.created_by == "jdoe" and ticket["number"] in silence.comment
    assert 'instance="db-1:9100"' in silence.matchers and silence.ends_at - silence.starts_at == 7_200_000
    assert await state_of(redis) == "resolved"
    status, _ = await post(f"{url}/webhook/alertmanager", group({**A1, "startsAt": "2024-05-14T11:00:00Z"}))
    assert status == 202
    await eventually(lambda: suppressed(redis))
    await pusher(snow).drained()
    assert calls(snow, before) == [] and len(snow.incidents()) == 1


async def test_incidents_show_lists_the_desk_events_with_their_author(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """`bridge incidents show` lists what people did at the desk: kind, author, the ticket, what it did."""
    _, url = await start(snow, make_bridge)
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", comments="looking at the disk")
    await human(snow, ticket, "asmith", **RESOLVE)
    await eventually(lambda: applied(redis, "MUTED"))
    shown = orjson.loads(
        (await cli("incidents", "show", ticket["correlation_id"], BRIDGE_REDIS_URL=redis_server.url)).stdout
    )
    events = [(e["kind"], e["author"], e["ticket"], e["outcome"]) for e in shown["desk_events"]]
    assert events == [
        ("resolved", "asmith", ticket["number"], "MUTED"),
        ("commented", "jdoe", ticket["number"], "RECORDED"),
    ]
    assert shown["muted"] is True and shown["desk_events"][1]["text"] == "looking at the disk"


async def suppressed(redis: aioredis.Redis) -> bool:
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    changes = await redis.lrange(keys.IncidentKeys(bases[0].decode()).changes, 0, -1)
    return any(b'"SUPPRESSED"' in c for c in changes)


async def test_reopened_by_a_person_lifts_the_mute(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """Reopened by a person after a mute: the incident is open again, its later clear resolves the ticket."""
    _, url = await start(snow, make_bridge)
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", **RESOLVE)
    await eventually(lambda: applied(redis, "MUTED"))
    await human(snow, ticket, "jdoe", state="2")
    await eventually(lambda: applied(redis, "RECORDED"))
    assert await state_of(redis, "muted") == "0"
    before = len(snow.store.requests)
    await post(f"{url}/webhook/alertmanager", group({**A1, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}))
    await eventually(lambda: calls(snow, before) == ["resolve"])


async def test_the_bridges_own_changes_are_dropped(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """Every update the bridge makes is pushed back too (as the Business Rule does): none is applied."""
    bridge, url = await start(snow, make_bridge)
    await open_ticket(snow, url, A1)
    await post(f"{url}/webhook/alertmanager", group(A2))
    await post(f"{url}/webhook/alertmanager", group({**A1, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}))
    await post(f"{url}/webhook/alertmanager", group({**A2, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}))
    await eventually(lambda: "resolve" in calls(snow))
    deliveries = await pusher(snow).drained()
    assert len(deliveries) >= 3 and all(d.status == 202 for d in deliveries)
    counted = bridge.runtime.metrics.sync_events
    await eventually(lambda: sum(s.value for m in counted.collect() for s in m.samples if s.name.endswith("_total")))
    samples = [s for m in counted.collect() for s in m.samples if s.name.endswith("_total")]
    assert {s.labels["outcome"] for s in samples} == {"OURS"}
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    trail = await redis.lrange(keys.IncidentKeys(bases[0].decode()).audit, 0, -1)
    assert not [e for e in trail if b"DESK_EVENT" in e]


@pytest.mark.parametrize("replicas", [2])
async def test_one_change_through_two_replicas_applies_once(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, redis_server: EmbeddedRedis, replicas: int
) -> None:
    """The same change pushed to two replicas at once (and twice to each) is applied once: one reopen."""
    first, url = await start(snow, make_bridge, sync={"on_desk_resolve": "reopen"})
    second = await make_bridge(config(snow.url, sync={"on_desk_resolve": "reopen"}))
    ticket = await open_ticket(snow, url, A1)
    await eventually(lambda: calls(snow) == ["create"])
    await sim(snow, "/_sim/push", {"url": ""})  # pushes stop: the change is sent by hand below
    before = len(snow.store.requests)
    await human(snow, ticket, "jdoe", **RESOLVE)
    record = snow.store.get(ticket["sys_id"])
    body = business_rule(record)
    for bridge in (first, second, first, second):
        status, _ = await post(
            f"http://127.0.0.1:{bridge.port}/desk-events/snow", body, Authorization=f"Bearer {TOKEN}"
        )
        assert status == 202
    await eventually(lambda: "reopen" in calls(snow, before))
    await eventually(lambda: applied(redis, "REOPEN"))
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    trail = await redis.lrange(keys.IncidentKeys(bases[0].decode()).audit, 0, -1)
    assert sum(1 for e in trail if b"DESK_EVENT" in e) == 1
    assert calls(snow, before).count("reopen") == 1


def business_rule(record: dict[str, str]) -> dict[str, Any]:
    """The Business Rule's body for the record's last update (deploy/snippets/servicenow/)."""
    from adapters.simulators.servicenow import business_rule_body

    return business_rule_body(record, {**record, "state": "1"}, [], pusher_stub())


def pusher_stub() -> Any:
    from adapters.simulators.pusher import Pusher

    return Pusher(instance="http://snow.example")
