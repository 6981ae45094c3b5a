"""The incident lifecycle end to end: Alertmanager payloads in, ServiceNow simulator records out."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.admin.incidents import show_incident
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post


def url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


async def settle(snow: Snow, seconds: float = 0.5) -> None:
    """Give the engine and delivery time to act on anything still in flight."""
    await asyncio.sleep(seconds)


def one_incident(snow: Snow) -> dict[str, str]:
    rows = snow.incidents()
    assert len(rows) == 1, f"expected one incident, got {[r['number'] for r in rows]}"
    return rows[0]


async def test_one_group_opens_one_incident(snow: Snow, make_bridge: Any) -> None:
    """A group of two firing alerts opens exactly one ticket, with the rendered fields and correlation id."""
    bridge = await make_bridge(mapping(snow.url))
    status, body = await post(url(bridge), group(alert(), alert(device="/dev/sda1")))
    assert (status, body) == (202, {"accepted": 2, "rejected": 0})
    await eventually(lambda: snow.incidents())
    await settle(snow)
    ticket = one_incident(snow)
    assert ticket["short_description"] == "[CRITICAL] NodeFilesystemAlmostOutOfSpace on db-prod-01.example.com:9100"
    assert (ticket["impact"], ticket["urgency"], ticket["priority"]) == ("1", "1", "1")
    assert ticket["correlation_id"].startswith("prometheus:")
    assert ticket["correlation_id"].count(":") == 2
    assert ticket["state"] == "1"


async def test_repeats_and_ha_double_sends_stay_one_incident(snow: Snow, make_bridge: Any) -> None:
    """The same group re-sent, and posted concurrently to two replicas (an HA pair), makes one ticket."""
    first = await make_bridge(mapping(snow.url), consumer="replica-a")
    second = await make_bridge(mapping(snow.url), consumer="replica-b")
    payload = group(alert(), alert(device="/dev/sda1"))
    results = await asyncio.gather(*[post(url(b), payload) for b in (first, second) for _ in range(5)])
    assert all(status == 202 for status, _ in results)
    await eventually(lambda: snow.incidents())
    await settle(snow, 1.0)
    ticket = one_incident(snow)
    # Only the second alert's arrival is a change: one note, however many copies came in.
    assert len(snow.notes(ticket)) == 1
    assert len([r for r in snow.store.requests if r["method"] == "POST"]) == 1


async def test_new_member_adds_one_work_note(snow: Snow, make_bridge: Any) -> None:
    """An alert joining an open incident's group becomes exactly one work note naming it."""
    bridge = await make_bridge(mapping(snow.url))
    await post(url(bridge), group(alert()))
    ticket = await eventually(lambda: snow.incidents())
    await settle(snow)
    assert snow.notes(ticket[0]) == []
    await post(url(bridge), group(alert(), alert(device="/dev/sdc1")))
    notes = await eventually(lambda: snow.notes(one_incident(snow)))
    await settle(snow)
    assert len(snow.notes(one_incident(snow))) == 1
    assert "new member" in notes[0]
    assert "/dev/sdc1" in notes[0]


async def test_resolves_after_hold_down_with_close_fields(snow: Snow, make_bridge: Any) -> None:
    """All members clear: the ticket stays open through the hold-down, then resolves with close fields."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="1s"))
    await post(url(bridge), group(alert(), alert(device="/dev/sda1")))
    await eventually(lambda: snow.incidents())
    await post(url(bridge), group(alert("resolved"), alert("resolved", device="/dev/sda1")))
    await asyncio.sleep(0.5)
    assert one_incident(snow)["state"] == "1", "resolved before the hold-down passed"
    await eventually(lambda: one_incident(snow)["state"] == "6", within=5)
    ticket = one_incident(snow)
    assert ticket["close_code"] == "Solution provided"
    assert "cleared" in ticket["close_notes"] or "Resolved" in ticket["close_notes"]
    assert ticket["resolved_at"]


async def test_firing_during_hold_down_cancels_resolve(snow: Snow, make_bridge: Any) -> None:
    """A member firing again during the hold-down keeps the ticket open: no resolve/reopen churn."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="1s"))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await post(url(bridge), group(alert("resolved")))
    await asyncio.sleep(0.3)
    await post(url(bridge), group(alert(starts="2024-05-14T09:30:00Z")))
    await asyncio.sleep(1.5)
    ticket = one_incident(snow)
    assert ticket["state"] == "1"
    assert not any(r["method"] == "PATCH" and "state" in (r.get("body") or {}) for r in snow.store.requests)


async def test_reopens_within_window_then_new_epoch_after(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """Firing again within the reopen window reopens the ticket; after it, a new ticket with a new id."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="200ms", reopen_within="1500ms"))
    await post(url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    await post(url(bridge), group(alert("resolved")))
    await eventually(lambda: one_incident(snow)["state"] == "6", within=5)

    await post(url(bridge), group(alert(starts="2024-05-14T10:30:00Z")))
    await eventually(lambda: one_incident(snow)["state"] == "2", within=5)
    first = one_incident(snow)
    assert any("reopened" in n for n in snow.notes(first))

    await post(url(bridge), group(alert("resolved", starts="2024-05-14T10:30:00Z")))
    await eventually(lambda: one_incident(snow)["state"] == "6", within=5)
    await asyncio.sleep(1.7)  # past the reopen window
    await post(url(bridge), group(alert(starts="2024-05-14T11:30:00Z")))
    await eventually(lambda: len(snow.incidents()) == 2, within=5)
    old, new = snow.incidents()
    assert old["state"] == "6"
    assert new["state"] == "1"
    assert new["correlation_id"] != old["correlation_id"]
    assert new["correlation_id"].rsplit(":", 1)[0] == old["correlation_id"].rsplit(":", 1)[0]

    async def bound() -> bool:  # the bridge records the ticket right after the desk answers
        shown = await show_incident(redis, new["correlation_id"])
        return shown is not None and shown["ticket"] is not None and shown["ticket"]["display"] == new["number"]

    await eventually(bound)


async def test_late_resolve_of_an_older_occurrence_is_ignored(snow: Snow, make_bridge: Any) -> None:
    """A resolve of an earlier occurrence arriving after a re-fire does not clear the new one."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="200ms"))
    await post(url(bridge), group(alert(starts="2024-05-14T12:00:00Z")))
    await eventually(lambda: snow.incidents())
    await post(url(bridge), group(alert("resolved", starts="2024-05-14T09:00:00Z")))
    await asyncio.sleep(1.0)
    assert one_incident(snow)["state"] == "1"


async def test_unrelated_groups_get_their_own_incidents(snow: Snow, make_bridge: Any) -> None:
    """Alerts with different correlation keys (another instance) open separate tickets."""
    bridge = await make_bridge(mapping(snow.url))
    await post(url(bridge), group(alert(instance="a:9100"), alert(instance="b:9100")))
    await eventually(lambda: len(snow.incidents()) == 2)
    await settle(snow)
    assert sorted(r["short_description"].rsplit(" ", 1)[1] for r in snow.incidents()) == ["a:9100", "b:9100"]
