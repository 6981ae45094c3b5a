"""One ticket per root cause, whatever the order: late topology parents adopt their children, flapping
is a member's, routes share an incident key space, auto-resolve is per member (issue 30). Each through a
running bridge, real Redis and the ServiceNow simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import list_incidents
from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.engine.policy.test_knobs import FIELDS, calls, config, webhook

TOPOLOGY = {"parent": ['alertname="SwitchDown"'], "key": "{{ labels.switch }}"}


def switch_down(status: str = "firing") -> dict[str, Any]:
    return alert(status, alertname="SwitchDown", instance="sw-1:161", device="", switch="sw-1")


def host_alert(host: int, status: str = "firing", name: str = "HostDown") -> dict[str, Any]:
    return alert(status, alertname=name, instance=f"h{host}:9100", device="", switch="sw-1")


def by_host(snow_url: str, **route: Any) -> MappingConfig:
    return config(snow_url, correlate={"by": ["{{ labels.instance }}"]}, **route)


async def test_a_late_parent_adopts_its_children_and_closes_their_tickets(snow: Snow, make_bridge: Any) -> None:
    """Hosts first, their switch after: the switch's ticket takes the hosts' alerts, theirs are closed as its
    duplicates (`parent_incident`, close code Duplicate), its note names them; their later clears reach it."""
    bridge = await make_bridge(by_host(snow.url, topology=TOPOLOGY))
    await post(webhook(bridge), group(host_alert(1), host_alert(2)))
    await eventually(lambda: len(snow.incidents()) == 2)
    await post(webhook(bridge), group(switch_down()))
    await eventually(lambda: len(snow.incidents()) == 3)
    parent = next(t for t in snow.incidents() if "SwitchDown" in t["short_description"])
    await eventually(lambda: all(t["state"] == "6" for t in snow.incidents() if t["sys_id"] != parent["sys_id"]))
    children = [t for t in snow.incidents() if t["sys_id"] != parent["sys_id"]]
    assert {t["parent_incident"] for t in children} == {parent["sys_id"]}
    assert {t["close_code"] for t in children} == {"Duplicate"}
    assert all(parent["number"] in t["close_notes"] for t in children)
    notes = await eventually(lambda: snow.notes(parent), within=5)
    text = "\n".join(notes)
    assert "adopted h1:9100" in text and "adopted h2:9100" in text
    assert all(t["number"] in text for t in children)

    await post(webhook(bridge), group(host_alert(1, "resolved")))
    await eventually(lambda: any("member resolved" in n for n in snow.notes(parent)), within=5)
    assert snow.store.get(parent["sys_id"])["state"] == "1"
    assert calls(snow).count(("POST", "create")) == 3


@pytest.mark.parametrize("order", ["parent_first", "parent_last"])
async def test_with_hold_the_order_makes_no_difference(snow: Snow, make_bridge: Any, order: str) -> None:
    """`topology.hold`: a parent arriving within the hold adopts its children before any ticket of theirs
    exists: one ticket and one note for the whole outage, in either order."""
    bridge = await make_bridge(
        by_host(snow.url, topology={**TOPOLOGY, "hold": "1s"}, ticket={"flush_interval": "300ms"})
    )
    hosts = group(*(host_alert(h) for h in range(5)))
    first, second = (group(switch_down()), hosts) if order == "parent_first" else (hosts, group(switch_down()))
    await post(webhook(bridge), first)
    await asyncio.sleep(0.2)
    await post(webhook(bridge), second)
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await eventually(lambda: snow.notes(ticket), within=5)
    await asyncio.sleep(1.5)  # past the hold: nothing else opens
    assert len(snow.incidents()) == 1 and "SwitchDown" in ticket["short_description"]
    assert calls(snow) == [("POST", "create"), ("PATCH", "note")]
    assert all(f"h{h}:9100" in snow.notes(ticket)[0] for h in range(5))


async def test_a_held_child_without_a_parent_opens_when_the_hold_ends(snow: Snow, make_bridge: Any) -> None:
    """No parent within `topology.hold`: the child's own ticket opens, rendered from the alert that started
    the hold."""
    bridge = await make_bridge(by_host(snow.url, topology={**TOPOLOGY, "hold": "500ms"}))
    await post(webhook(bridge), group(host_alert(7)))
    await asyncio.sleep(0.3)
    assert snow.incidents() == []
    ticket = (await eventually(lambda: snow.incidents(), within=5))[0]
    assert ticket["short_description"] == "[CRITICAL] HostDown on h7:9100"
    await post(webhook(bridge), group(host_alert(7, "resolved")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)


async def test_a_child_cleared_during_the_hold_leaves_no_ticket(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """A held child whose alerts clear before the hold ends never reaches the desk."""
    bridge = await make_bridge(by_host(snow.url, topology={**TOPOLOGY, "hold": "500ms"}))
    await post(webhook(bridge), group(host_alert(3)))
    await asyncio.sleep(0.1)
    await post(webhook(bridge), group(host_alert(3, "resolved")))
    await asyncio.sleep(1.0)
    assert snow.incidents() == [] and snow.store.requests == []


async def test_adoption_is_shared_by_replicas(snow: Snow, make_bridge: Any) -> None:
    """Two replicas, 40 children, a late parent: every child adopted once, one note each on the parent at
    most, no child left open."""
    cfg = by_host(snow.url, topology=TOPOLOGY, ticket={"flush_interval": "300ms"})
    first, second = await make_bridge(cfg), await make_bridge(cfg)
    for h in range(40):
        await post(webhook(first if h % 2 else second), group(host_alert(h)))
    await eventually(lambda: len(snow.incidents()) == 40, within=10)
    await post(webhook(first), group(switch_down()))
    await eventually(lambda: len(snow.incidents()) == 41, within=5)
    parent = next(t for t in snow.incidents() if "SwitchDown" in t["short_description"])

    def closed() -> int:
        return sum(1 for t in snow.incidents() if t["parent_incident"] == parent["sys_id"] and t["state"] == "6")

    await eventually(lambda: closed() == 40, within=15)
    await asyncio.sleep(0.5)
    text = "\n".join(snow.notes(parent))
    assert sorted(text.count(f"adopted h{h}:9100 ") for h in range(40)) == [1] * 40


async def test_a_parent_adopts_only_children_within_adopt_within(snow: Snow, make_bridge: Any) -> None:
    """`topology.adopt_within`: a child that went live longer before the parent opened keeps its ticket."""
    bridge = await make_bridge(by_host(snow.url, topology={**TOPOLOGY, "adopt_within": "500ms"}))
    await post(webhook(bridge), group(host_alert(1)))
    await eventually(lambda: snow.incidents())
    await asyncio.sleep(0.8)
    await post(webhook(bridge), group(host_alert(2)))
    await eventually(lambda: len(snow.incidents()) == 2)
    await post(webhook(bridge), group(switch_down()))
    await eventually(lambda: len(snow.incidents()) == 3)
    await eventually(lambda: any(t["state"] == "6" for t in snow.incidents()), within=5)
    await asyncio.sleep(0.5)
    states = {t["short_description"].split(" on ")[1]: t["state"] for t in snow.incidents()}
    assert states == {"h1:9100": "1", "h2:9100": "6", "sw-1:161": "1"}


async def test_flapping_is_a_members_property_not_the_incidents(snow: Snow, make_bridge: Any) -> None:
    """An incident gaining 30 members and losing 10 is not flapping: its notes account for every one. One
    member changing state 4 times is: one note naming it, its later changes quiet, the others still noted."""
    cfg = config(
        snow.url,
        correlate={"by": ["{{ labels.alertname }}"]},
        lifecycle={"flap": {"changes": 3, "window": "1m", "quiet": "30s"}},
        ticket={"flush_interval": "300ms"},
    )
    bridge = await make_bridge(cfg)
    for i in range(30):
        await post(webhook(bridge), group(alert(instance=f"n{i}:9100")))
    for i in range(10):
        await post(webhook(bridge), group(alert("resolved", instance=f"n{i}:9100")))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await asyncio.sleep(1.0)
    text = "\n".join(snow.notes(ticket))
    assert "flapping" not in text
    assert all(f"n{i}:9100" in text for i in range(1, 30))  # n0 opened it
    assert text.count("member resolved") == 10

    for hour in range(10, 13):  # n29: cleared, fired, cleared, fired
        await post(webhook(bridge), group(alert("resolved", instance="n29:9100", starts=f"2024-05-14T{hour}:00:00Z")))
        await post(webhook(bridge), group(alert(instance="n29:9100", starts=f"2024-05-14T{hour + 1}:00:00Z")))
    await post(webhook(bridge), group(alert(instance="n77:9100")))
    await eventually(lambda: "n77:9100" in "\n".join(snow.notes(ticket)), within=5)
    text = "\n".join(snow.notes(ticket))
    flapping = [line for line in text.splitlines() if "flapping:" in line]
    assert len(flapping) == 1 and "n29:9100" in flapping[0]
    assert text.count("n29:9100") == 1 + 1 + 3  # joined, resolved, 3 changes before it was flapping


async def test_flapping_member_settles_with_a_note_that_names_it(snow: Snow, make_bridge: Any) -> None:
    """The end of a member's quiet period is a note naming the alert (not `[?] ?`), and the ticket resolves
    once all is clear."""
    cfg = config(
        snow.url,
        lifecycle={"resolve_after": "100ms", "flap": {"changes": 2, "window": "1m", "quiet": "600ms"}},
    )
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert(starts="2024-05-14T10:00:00Z")))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    for hour in (10, 11):
        await post(webhook(bridge), group(alert("resolved", starts=f"2024-05-14T{hour}:00:00Z")))
        await post(webhook(bridge), group(alert(starts=f"2024-05-14T{hour + 1}:00:00Z")))
    await post(webhook(bridge), group(alert("resolved", starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    settled = [n for n in snow.notes(ticket) if "stable again" in n]
    assert settled and settled[0].startswith("[resolved] NodeFilesystemAlmostOutOfSpace on db-prod-01")
    assert calls(snow).count(("PATCH", "resolve")) == 1 and ("PATCH", "reopen") not in calls(snow)


def scoped(snow_url: str) -> MappingConfig:
    """Prometheus and Splunk on routes of their own, one incident key space: the database."""
    routes = [
        {
            "name": "prometheus",
            "desk": "snow",
            "sources": ["alertmanager"],
            "correlate": {"by": ["{{ labels.database }}"], "scope": "databases"},
            "lifecycle": {"resolve_after": "200ms"},
            "ticket": {"fields": FIELDS},
        },
        {
            "name": "splunk",
            "desk": "snow",
            "sources": ["splunk"],
            "correlate": {"by": ["{{ labels.database }}"], "scope": "databases"},
            "lifecycle": {"auto_resolve_after": "700ms"},
        },
    ]
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}, "splunk": {"kind": "splunk"}},
            "desks": {"snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"}},
            "routes": routes,
        }
    )


def splunk_hit(database: str) -> dict[str, Any]:
    return {
        "sid": "scheduler__admin__search__db_errors",
        "search_name": "DB connection errors",
        "app": "search",
        "owner": "admin",
        "result": {"host": "app-3", "database": database, "severity": "high", "count": "12"},
    }


async def test_routes_sharing_a_scope_make_one_ticket_and_auto_resolve_per_member(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A database's Prometheus alert and Splunk search, on two routes of one scope, are one ticket; the Splunk
    member auto-resolves when its search stops repeating (the note names the search), the Prometheus one,
    which repeats slower than that, does not."""
    bridge = await make_bridge(scoped(snow.url))
    await post(webhook(bridge), group(alert(alertname="PostgresDown", instance="db-1:9187", database="orders")))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await post(webhook(bridge, "splunk"), splunk_hit("orders"))
    await eventually(lambda: any("DB connection errors" in n for n in snow.notes(ticket)), within=5)
    await eventually(lambda: any("auto-resolved" in n for n in snow.notes(ticket)), within=5)
    auto = next(n for n in snow.notes(ticket) if "auto-resolved" in n)
    assert auto.startswith("[resolved] DB connection errors on app-3")
    await asyncio.sleep(1.0)  # the Prometheus member, not repeated, is still firing
    assert snow.store.get(ticket["sys_id"])["state"] == "1"
    assert len(snow.incidents()) == 1
    (incident,) = await list_incidents(redis)
    assert incident["route"] == "prometheus" and incident["firing"] == 1


def test_routes_sharing_a_scope_share_a_desk_and_leave_the_policy_to_the_owner() -> None:
    """A route sharing another's scope with its own desk, or its own topology, is a mapping error naming both."""
    data = scoped("http://127.0.0.1:1").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "x"
    data["desks"]["other"] = data["desks"]["snow"]
    data["routes"][1]["desk"] = "other"
    with pytest.raises(ValueError, match="shares scope 'databases' with route 'prometheus': its desk must be 'snow'"):
        MappingConfig.model_validate(data)
    data["routes"][1]["desk"] = "snow"
    data["routes"][1]["topology"] = TOPOLOGY
    with pytest.raises(ValueError, match="topology: set on 'prometheus'"):
        MappingConfig.model_validate(data)


async def test_a_storm_of_one_parents_children_is_adopted_with_them(snow: Snow, make_bridge: Any) -> None:
    """`storm.group_by: [<topology key>]`: 12 hosts of one switch, 5 new incidents allowed: 5 held children
    and the held storm incident of that switch; the switch, coming last, adopts them all: one ticket."""
    storm = {"max_new_per_minute": 5, "group_by": [TOPOLOGY["key"]]}
    cfg = by_host(snow.url, topology={**TOPOLOGY, "hold": "1s"}, storm=storm, ticket={"flush_interval": "300ms"})
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(*(host_alert(h) for h in range(12))))
    await asyncio.sleep(0.3)
    await post(webhook(bridge), group(switch_down()))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await eventually(lambda: snow.notes(ticket), within=5)
    await asyncio.sleep(1.5)
    assert len(snow.incidents()) == 1 and "SwitchDown" in ticket["short_description"]
    text = "\n".join(snow.notes(ticket))
    assert all(f"h{h}:9100" in text for h in range(12))
    assert calls(snow) == [("POST", "create"), ("PATCH", "note")]


async def test_an_alert_placed_just_before_its_incidents_adoption_runs_on_the_parent(redis: aioredis.Redis) -> None:
    """The Lua steps around an adoption: an alert placed on a child because placement found it live, run
    after the parent adopted it, is MOVED to the parent; adopting twice is a no-op; once the parent is gone,
    a new firing of the child opens a new epoch of its own."""
    from bridge.core.routing import policy_json
    from bridge.runtime.scripts import AlertStep, Applied, Scripts

    scripts = Scripts(redis)
    await scripts.load()
    route = by_host("http://127.0.0.1:1", topology=TOPOLOGY).routes[0]
    rules = policy_json(route, 60_000, 50)

    def step(base: str, identity: str, occ: int, *, live: bool = False) -> AlertStep:
        return AlertStep(base, identity, "firing", "critical", occ, False, b'{"name":"x"}', "ops", identity, rules,
                         name="HostDown", live=live, key=identity)  # fmt: skip

    async def run(*steps: AlertStep) -> list[Applied]:
        return [await scripts.apply_alert(s, 1_000 + i) for i, s in enumerate(steps)]

    opened = await run(step("ops:child", "h1", 1), step("ops:parent", "sw", 1))
    assert [a.decision.value for a in opened] == ["OPEN", "OPEN"]
    for _ in range(2):
        pipe = redis.pipeline(transaction=False)
        scripts.adopt("ops:parent", "ops:child", 2_000, rules, pipe)
        (reply,) = await pipe.execute()
        assert Scripts.adopted(reply)[0] in ("adopted", "done")
    assert Scripts.adopted(reply)[0] == "done"
    (moved,) = await run(step("ops:child", "h1", 1, live=True))
    assert (moved.decision.value, moved.reason) == ("MOVED", "ops:parent")
    assert await redis.hget(keys.IncidentKeys("ops:parent").state, "firing") == b"2"
    (stale,) = await run(step("ops:child", "h1", 1))  # the same firing, placed as not live: a tombstone's copy
    assert stale.decision.value == "DUPLICATE"
    (again,) = await run(step("ops:child", "h1", 5))  # a new occurrence, the parent gone (placed as not live)
    assert again.decision.value == "OPEN" and again.reason == "fired again after its topology parent adopted it"
