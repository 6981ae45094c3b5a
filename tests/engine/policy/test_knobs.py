"""One scenario per policy knob, against real Redis and the ServiceNow simulator, with the exact desk calls."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import list_incidents, show_incident
from bridge.core.config import MappingConfig
from bridge.engine.silences import Silence, Silences
from bridge.process.app import make_app
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.connect import connect
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, fixture_json, post, start_app
from tests.running import cli

FIELDS = {
    "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
    "description": "{{ summary }}",
    "impact": "{{ {'critical': '1', 'major': '2'}.get(severity, '3') }}",
}


def config(desk_url: str, **route: Any) -> MappingConfig:
    """Alertmanager and Nagios into one route to the simulator; `route` overrides its policy."""
    base: dict[str, Any] = {
        "name": "ops",
        "desk": "snow",
        "correlate": {"by": ["{{ labels.alertname }}", "{{ labels.instance | default('') }}"]},
        "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
        "ticket": {"fields": FIELDS},
    }
    for key, value in route.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}, "nagios": {"kind": "nagios"}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [base],
        }
    )


def webhook(bridge: Any, source: str = "alertmanager") -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/{source}"


def calls(snow: Snow) -> list[tuple[str, str]]:
    """The desk calls made, as (method, what): create, note, resolve, reopen, update:<fields>, read."""
    out = []
    for r in snow.store.requests:
        body = r.get("body") or {}
        if r["method"] == "POST":
            out.append(("POST", "create"))
        elif r["method"] == "PATCH" and body.get("state") == "6":
            out.append(("PATCH", "resolve"))
        elif r["method"] == "PATCH" and body.get("state") == "2":
            out.append(("PATCH", "reopen"))
        elif r["method"] == "PATCH" and set(body) == {"work_notes"}:
            out.append(("PATCH", "note"))
        elif r["method"] == "PATCH":
            out.append(("PATCH", "update:" + ",".join(sorted(body))))
        else:
            out.append((r["method"], "read"))
    return out


async def test_cross_source_correlation_one_incident(snow: Snow, make_bridge: Any) -> None:
    """A Nagios service alert and a Prometheus alert for the same host land in one incident."""
    cfg = config(snow.url, correlate={"by": ["{{ labels.host or resource.split(':')[0] }}"]})
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert(instance="web-01:9100", alertname="NodeDown")))
    await eventually(lambda: snow.incidents())
    nagios = fixture_json("nagios_service_problem.json")  # host web-01, service HTTP
    status, _ = await post(webhook(bridge, "nagios"), nagios)
    assert status == 202
    await eventually(lambda: snow.notes(snow.incidents()[0]))
    assert len(snow.incidents()) == 1
    assert "HTTP" in snow.notes(snow.incidents()[0])[0]
    assert calls(snow) == [("POST", "create"), ("PATCH", "note")]


async def test_topology_parent_absorbs_children(snow: Snow, make_bridge: Any) -> None:
    """While a host-down incident is open, that host's other alerts become notes on its ticket."""
    cfg = config(snow.url, topology={"parent": ['alertname="HostDown"'], "key": "{{ resource }}"})
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert(alertname="HostDown", instance="db-9:9100")))
    await eventually(lambda: snow.incidents())
    await post(webhook(bridge), group(alert(alertname="DiskFull", instance="db-9:9100")))
    await post(webhook(bridge), group(alert(alertname="CpuHigh", instance="db-9:9100")))
    await post(webhook(bridge), group(alert(alertname="CpuHigh", instance="other:9100")))
    await eventually(lambda: len(snow.incidents()) == 2)
    await asyncio.sleep(0.5)
    parent, other = snow.incidents()
    assert parent["short_description"].startswith("[CRITICAL] HostDown")
    assert "other:9100" in other["short_description"]
    joined = "\n".join(snow.notes(parent))
    assert "DiskFull" in joined and "CpuHigh" in joined


async def test_threshold_holds_alerts_until_n_distinct_resources(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """Open only when 3 distinct resources fire within the window; until then the incident is pending."""
    cfg = config(
        snow.url,
        correlate={"by": ["{{ labels.alertname }}"]},
        lifecycle={"threshold": {"count": 3, "distinct_resources": True, "window": "30s"}},
    )
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert(instance="a:1"), alert(instance="a:1", device="/dev/sdz")))
    await post(webhook(bridge), group(alert(instance="b:1")))
    await asyncio.sleep(0.6)
    assert snow.incidents() == []
    pending = await list_incidents(redis, state="pending")
    assert len(pending) == 1 and pending[0]["firing"] == 3
    await post(webhook(bridge), group(alert(instance="c:1")))
    await eventually(lambda: snow.incidents())
    await asyncio.sleep(0.3)
    assert calls(snow) == [("POST", "create")]


async def test_flapping_goes_quiet_then_settles(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """More than 3 changes within the window: one flapping note, no resolve/reopen churn, then quiet resolve."""
    cfg = config(
        snow.url,
        lifecycle={"resolve_after": "100ms", "flap": {"changes": 3, "window": "30s", "quiet": "1s"}},
    )
    bridge = await make_bridge(cfg)
    for hour in range(10, 16):  # six fire/clear cycles, each a new occurrence
        starts = f"2024-05-14T{hour}:00:00Z"
        await post(webhook(bridge), group(alert(starts=starts)))
        await asyncio.sleep(0.25)
        await post(webhook(bridge), group(alert("resolved", starts=starts)))
        await asyncio.sleep(0.25)
    flapping_notes = [n for n in snow.notes(snow.incidents()[0]) if "flapping" in n]
    assert len(flapping_notes) == 1
    churn_before = calls(snow).count(("PATCH", "resolve")) + calls(snow).count(("PATCH", "reopen"))
    assert churn_before <= 3, "flap detection came too late"

    async def settled() -> bool:
        return [i["state"] for i in await list_incidents(redis)] == ["resolved"]

    await eventually(settled, within=8)  # quiet for 1s: the bridge settles on the last state, all clear
    assert len(snow.incidents()) == 1 and snow.incidents()[0]["state"] == "6"
    total = calls(snow).count(("PATCH", "resolve")) + calls(snow).count(("PATCH", "reopen"))
    assert total == churn_before, "the desk saw resolve/reopen churn while flapping"


async def test_storm_guard_folds_new_incidents_into_one_major_incident(snow: Snow, make_bridge: Any) -> None:
    """More than 5 new incidents in a minute: the rest join one major incident as notes."""
    cfg = config(
        snow.url,
        storm={
            "max_new_per_minute": 5,
            "fields": {"short_description": "Major incident: alert storm on {{ incident.route }}"},
        },
    )
    bridge = await make_bridge(cfg)
    for i in range(30):
        await post(webhook(bridge), group(alert(instance=f"h{i:02d}:9100")))
    await asyncio.sleep(1.5)
    tickets = snow.incidents()
    majors = [t for t in tickets if t["short_description"].startswith("Major incident")]
    assert len(majors) == 1
    assert len(tickets) == 5 + 1  # exactly the limit, and the major incident
    absorbed = "\n".join(snow.notes(majors[0]))
    assert "h29:9100" in absorbed


async def test_silence_suppresses_new_but_lets_resolutions_flow(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """A silence records matching firings as suppressed (no ticket) while an already-open incident still resolves."""
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert(instance="db:1")))
    await eventually(lambda: snow.incidents())
    now = int(time.time() * 1000)
    await Silences(redis).add(
        Silence(matchers=['instance=~"db:1|web:1"'], starts_at=now - 1000, ends_at=now + 60_000, comment="maintenance")
    )
    await post(webhook(bridge), group(alert(instance="web:1")))
    await post(webhook(bridge), group(alert("resolved", instance="db:1")))
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=5)
    assert len(snow.incidents()) == 1
    suppressed = [i for i in await list_incidents(redis, limit=10) if not i["ticket"]]
    assert suppressed, "the silenced alert left no record"
    shown = await show_incident(redis, suppressed[0]["id"])
    assert shown is not None and any(e["decision"] == "SUPPRESSED" for e in shown["audit"])


async def test_auto_resolve_for_sources_without_clears(snow: Snow, make_bridge: Any) -> None:
    """An alert that stops repeating resolves after auto_resolve_after plus the hold-down."""
    cfg = config(snow.url, lifecycle={"auto_resolve_after": "600ms", "resolve_after": "100ms"})
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert()))
    await asyncio.sleep(0.4)
    await post(webhook(bridge), group(alert()))  # a repeat keeps it alive
    await asyncio.sleep(0.5)
    assert snow.incidents()[0]["state"] == "1"
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=5)
    assert calls(snow) == [("POST", "create"), ("PATCH", "resolve")]


async def test_coalescing_turns_a_burst_into_one_note(snow: Snow, make_bridge: Any) -> None:
    """Ten new members within the flush interval cost one work note listing all of them."""
    bridge = await make_bridge(config(snow.url, ticket={"flush_interval": "1s"}))
    await post(webhook(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    for i in range(10):
        await post(webhook(bridge), group(alert(device=f"/dev/x{i}")))
    await eventually(lambda: snow.notes(snow.incidents()[0]), within=5)
    await asyncio.sleep(1.2)
    notes = snow.notes(snow.incidents()[0])
    assert len(notes) == 1
    assert notes[0].startswith("10 changes:")
    assert calls(snow) == [("POST", "create"), ("PATCH", "note")]


async def test_changes_that_come_with_the_open_wait_for_the_flush_too(
    snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis
) -> None:
    """Members read together with the first one (a backlog, a storm's batch), and members that arrive
    while its open is at the desk, make one work note once the flush interval is over: not one right
    after the open and another one later."""
    cfg = config(snow.url, ticket={"flush_interval": "1s"})
    client = connect(redis_server.url)
    runner, url = await start_app(make_app(Runtime(client, Scripts(client), cfg)))  # ingress alone: a backlog
    try:
        await post(url + "/webhook/alertmanager", group(*(alert(device=f"/dev/a{i}") for i in range(5))))
    finally:
        await runner.cleanup()
        await client.aclose()
    snow.faults.set(latency_ms=300)  # the open takes a while: more members come meanwhile
    bridge = await make_bridge(cfg)
    await eventually(lambda: snow.incidents(), within=5)
    for i in range(3):
        await post(webhook(bridge), group(alert(device=f"/dev/b{i}")))
    snow.faults.set(latency_ms=0)
    await eventually(lambda: snow.notes(snow.incidents()[0]), within=5)
    await asyncio.sleep(1.5)  # a second note, were there one, would have come by now
    notes = snow.notes(snow.incidents()[0])
    assert [n.splitlines()[0] for n in notes] == ["7 changes:"]
    assert calls(snow) == [("POST", "create"), ("PATCH", "note")]


async def test_field_ownership_respects_human_edits(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """sync_until_edited follows the alert until a human edits the field; append_note notes; never is not sent;
    the edit is in the audit trail."""
    fields = {**FIELDS, "urgency": "{{ {'critical': '1'}.get(severity, '3') }}", "category": "software"}
    ownership = {"short_description": "sync_until_edited", "urgency": "append_note", "category": "never"}
    # identity by name and resource: a severity change is the same alert changing, not a new one
    cfg = config(snow.url, identity=["name", "resource"], ticket={"fields": fields, "ownership": ownership})
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), group(alert(severity="warning")))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    assert ticket["category"] == "inquiry"  # the table default: the bridge never wrote it
    await post(webhook(bridge), group(alert(severity="critical")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["short_description"].startswith("[CRITICAL]"))
    await eventually(lambda: any("urgency: 3 -> 1" in n for n in snow.notes(ticket)))
    assert snow.store.get(ticket["sys_id"])["urgency"] == "3"

    snow.store.update(ticket["sys_id"], {"short_description": "DB disk - being handled by Alice"})
    await post(webhook(bridge), group(alert(severity="warning")))
    await eventually(lambda: any("no longer updates" in n for n in snow.notes(ticket)))
    assert snow.store.get(ticket["sys_id"])["short_description"] == "DB disk - being handled by Alice"
    shown = await show_incident(redis, ticket["correlation_id"])
    assert shown is not None
    assert [e["field"] for e in shown["audit"] if e["decision"] == "DESK_CHANGE"] == ["short_description"]


async def test_ticket_closed_by_a_human_is_not_reopened(snow: Snow, make_bridge: Any) -> None:
    """Fires again within the window after a human closed the ticket: a new ticket, not a reopen."""
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await post(webhook(bridge), group(alert("resolved")))
    first = (await eventually(lambda: [t for t in snow.incidents() if t["state"] == "6"]))[0]
    snow.store.update(first["sys_id"], {"state": "7", "close_code": "Solution provided", "close_notes": "done"})
    await post(webhook(bridge), group(alert(starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: len(snow.incidents()) == 2)
    old, new = snow.incidents()
    assert old["state"] == "7" and new["state"] == "1"
    assert new["correlation_id"] != old["correlation_id"]
    assert ("PATCH", "reopen") not in calls(snow)


async def test_hold_down_waits_until_every_member_stays_clear(snow: Snow, make_bridge: Any) -> None:
    """`lifecycle.resolve_after`: a member firing again during the hold-down cancels the resolve; once all
    members have stayed clear for the hold-down, the ticket resolves, once."""
    bridge = await make_bridge(config(snow.url, lifecycle={"resolve_after": "1s"}))
    await post(webhook(bridge), group(alert(), alert(device="/dev/sdc1")))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await post(webhook(bridge), group(alert("resolved"), alert("resolved", device="/dev/sdc1")))
    await asyncio.sleep(0.3)
    await post(webhook(bridge), group(alert(device="/dev/sdc1", starts="2024-05-14T12:00:00Z")))  # fires again
    await asyncio.sleep(1.5)  # past the first hold-down: cancelled, nothing resolved
    assert snow.store.get(ticket["sys_id"])["state"] == "1"
    await post(webhook(bridge), group(alert("resolved", device="/dev/sdc1", starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    await asyncio.sleep(0.3)
    assert calls(snow).count(("PATCH", "resolve")) == 1


async def test_reopen_window_reopens_within_and_opens_a_new_ticket_after(snow: Snow, make_bridge: Any) -> None:
    """`lifecycle.reopen_within`: firing again within the window after the resolve reopens the same ticket;
    firing again after it opens a new ticket with a new correlation id."""
    bridge = await make_bridge(config(snow.url, lifecycle={"resolve_after": "100ms", "reopen_within": "1500ms"}))
    await post(webhook(bridge), group(alert()))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await post(webhook(bridge), group(alert("resolved")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    await post(webhook(bridge), group(alert(starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "2", within=5)  # reopened
    await post(webhook(bridge), group(alert("resolved", starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    await asyncio.sleep(1.8)  # the window is over
    await post(webhook(bridge), group(alert(starts="2024-05-14T13:00:00Z")))
    await eventually(lambda: len(snow.incidents()) == 2, within=5)
    old, new = snow.incidents()
    assert old["state"] == "6" and new["state"] == "1" and new["correlation_id"] != old["correlation_id"]
    assert calls(snow).count(("PATCH", "reopen")) == 1


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
async def test_no_reopen_states_make_a_new_ticket_instead_of_a_reopen(
    snow: Snow, make_bridge: Any, listed: bool
) -> None:
    """`lifecycle.no_reopen_states`: a resolved ticket a human moved to a listed state (a custom "won't fix",
    9) is not reopened when its alert fires again within the window: a new ticket opens. Not listed, that
    state is reopened like any open one."""
    lifecycle = {"no_reopen_states": ["9"]} if listed else {}
    bridge = await make_bridge(config(snow.url, lifecycle=lifecycle))
    await post(webhook(bridge), group(alert()))
    first = (await eventually(lambda: snow.incidents()))[0]
    await post(webhook(bridge), group(alert("resolved")))
    await eventually(lambda: snow.store.get(first["sys_id"])["state"] == "6", within=5)
    snow.store.update(first["sys_id"], {"state": "9"})  # a human: won't fix
    await post(webhook(bridge), group(alert(starts="2024-05-14T12:00:00Z")))
    if listed:
        await eventually(lambda: len(snow.incidents()) == 2, within=5)
        old, new = snow.incidents()
        assert old["state"] == "9" and new["state"] == "1" and new["correlation_id"] != old["correlation_id"]
        assert ("PATCH", "reopen") not in calls(snow)
    else:
        await eventually(lambda: snow.store.get(first["sys_id"])["state"] == "2", within=5)
        await asyncio.sleep(0.3)
        assert len(snow.incidents()) == 1


async def test_explain_says_what_the_running_bridge_then_does(snow: Snow, make_bridge: Any, tmp_path: Path) -> None:
    """`bridge test-mapping` names the route, the incident and the ticket fields that a running bridge on the
    same mapping then uses for the same payload."""
    cfg = config(snow.url)
    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # SecretStr dumps masked
    mapping_file, payload = tmp_path / "mapping.json", tmp_path / "payload.json"
    mapping_file.write_bytes(orjson.dumps(data))
    payload.write_bytes(orjson.dumps(group(alert(severity="major"))))
    explained = orjson.loads(
        (await cli("test-mapping", str(payload), "--source", "alertmanager", "--config", str(mapping_file))).stdout
    )
    (placement,) = explained["alerts"][0]["routes"]
    bridge = await make_bridge(cfg)
    await post(webhook(bridge), payload.read_bytes())
    ticket = (await eventually(lambda: snow.incidents()))[0]
    assert placement["route"] == "ops" and ticket["correlation_id"].startswith(placement["incident"] + ":")
    assert all(ticket[name] == value for name, value in placement["ticket_fields"].items())
    assert (
        placement["ticket_fields"]["short_description"]
        == "[MAJOR] NodeFilesystemAlmostOutOfSpace on db-prod-01.example.com:9100"
    )


async def test_per_alert_tickets_switch(snow: Snow, make_bridge: Any) -> None:
    """tickets: per_alert gives each alert of a group its own ticket."""
    bridge = await make_bridge(config(snow.url, tickets="per_alert"))
    await post(webhook(bridge), group(alert(), alert(device="/dev/sdq")))
    await eventually(lambda: len(snow.incidents()) == 2)
    await asyncio.sleep(0.3)
    assert calls(snow) == [("POST", "create"), ("POST", "create")]


async def test_audit_trail_explains_every_decision(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """The incident's audit trail names what arrived, the route, the decision and the desk's answer."""
    bridge = await make_bridge(config(snow.url), tuning=dataclasses.replace(FAST, repeat_window_ms=200))
    await post(webhook(bridge), group(alert()))
    await asyncio.sleep(0.25)  # a repeat after the repeat window (as repeat_interval sends them) reaches the engine
    await post(webhook(bridge), group(alert()))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await asyncio.sleep(0.3)
    shown = await show_incident(redis, ticket["correlation_id"])
    assert shown is not None
    decisions = [e["decision"] for e in reversed(shown["audit"])]
    assert decisions == ["OPEN", "DESK"]  # the repeat is counted, not listed
    assert shown["repeats"] == {"repeat": 1}
    desk = next(e for e in shown["audit"] if e["decision"] == "DESK")
    assert desk["outcome"] == "delivered" and desk["answer"] == ticket["number"]
    opened = next(e for e in shown["audit"] if e["decision"] == "OPEN")
    assert opened["route"] == "ops" and opened["identity"] and opened["status"] == "firing"


async def test_resolve_fields_come_from_the_route(snow: Snow, make_bridge: Any) -> None:
    """`ticket.resolve_fields` reach the desk's resolve call (here a close code other than the desk default)."""
    bridge = await make_bridge(config(snow.url, ticket={"resolve_fields": {"close_code": "Workaround provided"}}))
    await post(webhook(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await post(webhook(bridge), group(alert("resolved")))
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=5)
    assert snow.incidents()[0]["close_code"] == "Workaround provided"
