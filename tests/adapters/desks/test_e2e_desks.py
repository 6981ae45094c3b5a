"""The core lifecycle scenarios end to end, against every desk: Alertmanager payloads in, simulator records out.

The same scenarios as tests/engine/test_lifecycle.py, through a real bridge (real Redis) and each desk
adapter against its simulator: one ticket per correlated group (also from an HA pair), one note
per change, resolve only after the hold-down, reopen within the window and a new ticket after it,
and one ticket despite 429, 5xx, a lost answer and an expired session.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.core.config import MappingConfig
from tests.adapters.desks.conftest import Sim
from tests.adapters.desks.views import Ticket
from tests.amp import alert, group
from tests.conftest import eventually, post


def desk_mapping(sim: Sim, *, resolve_after: str = "300ms", reopen_within: str = "3s") -> MappingConfig:
    """The core tests' mapping, with this variant's desk and ticket fields."""
    desk = sim.config(timeout=1.0)
    if desk["kind"] == "jira":
        desk["search_lag"] = 0  # the simulator's search shows a create at once (tests/delivery/test_jira_lost_open.py)
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"desk": desk},
            "routes": [
                {
                    "name": "prometheus",
                    "desk": "desk",
                    "correlate": {"by": ["{{ labels.alertname }}", "{{ labels.instance | default('') }}"]},
                    "lifecycle": {"resolve_after": resolve_after, "reopen_within": reopen_within},
                    "ticket": {"fields": sim.variant.route_fields},
                }
            ],
        }
    )


def url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


def one(sim: Sim) -> Ticket:
    tickets = sim.tickets()
    assert len(tickets) == 1, f"expected one ticket, got {[t.display for t in tickets]}"
    return tickets[0]


async def test_one_group_is_one_ticket_even_from_an_ha_pair(sim: Sim, make_bridge: Any) -> None:
    """A group of two alerts, sent five times to each of two replicas, is one ticket with one note."""
    first = await make_bridge(desk_mapping(sim), consumer="replica-a")
    second = await make_bridge(desk_mapping(sim), consumer="replica-b")
    payload = group(alert(), alert(device="/dev/sda1"))
    answers = await asyncio.gather(*[post(url(b), payload) for b in (first, second) for _ in range(5)])
    assert all(status == 202 for status, _ in answers)
    await eventually(lambda: sim.tickets() and sim.tickets()[0].notes)
    await asyncio.sleep(1.0)
    ticket = one(sim)
    assert "NodeFilesystemAlmostOutOfSpace" in ticket.title and "db-prod-01" in ticket.title
    assert ticket.correlation.startswith("prometheus:") and ticket.correlation.count(":") == 2
    assert ticket.phase == "open"
    assert len(ticket.notes) == 1 and "new member" in ticket.notes[0]  # whichever alert came second


async def test_a_new_member_becomes_one_note(sim: Sim, make_bridge: Any) -> None:
    """An alert joining an open incident's group is exactly one note naming it."""
    bridge = await make_bridge(desk_mapping(sim))
    await post(url(bridge), group(alert()))
    await eventually(sim.tickets)
    await asyncio.sleep(0.5)
    assert one(sim).notes == []
    await post(url(bridge), group(alert(), alert(device="/dev/sdc1")))
    notes = await eventually(lambda: one(sim).notes)
    await asyncio.sleep(0.5)
    assert len(one(sim).notes) == 1
    assert "new member" in notes[0] and "/dev/sdc1" in notes[0]


async def test_resolves_only_after_the_hold_down(sim: Sim, make_bridge: Any) -> None:
    """All members clear: the ticket stays open through the hold-down, then resolves with the resolve note."""
    bridge = await make_bridge(desk_mapping(sim, resolve_after="1s"))
    await post(url(bridge), group(alert(), alert(device="/dev/sda1")))
    await eventually(sim.tickets)
    await post(url(bridge), group(alert("resolved"), alert("resolved", device="/dev/sda1")))
    await asyncio.sleep(0.5)
    assert one(sim).phase == "open", "resolved before the hold-down passed"
    await eventually(lambda: one(sim).phase == "resolved", within=6)
    ticket = one(sim)
    assert any("Resolved automatically" in text for text in [*ticket.notes, ticket.resolution])


async def test_reopens_within_the_window_and_opens_a_new_ticket_after_it(sim: Sim, make_bridge: Any) -> None:
    """Firing again within the reopen window reopens the ticket; after the window, a new ticket (new epoch)."""
    bridge = await make_bridge(desk_mapping(sim, resolve_after="200ms", reopen_within="1500ms"))
    await post(url(bridge), group(alert()))
    await eventually(sim.tickets)
    await post(url(bridge), group(alert("resolved")))
    await eventually(lambda: one(sim).phase == "resolved", within=6)

    await post(url(bridge), group(alert(starts="2024-05-14T10:30:00Z")))
    await eventually(lambda: one(sim).phase == "open", within=6)
    assert any("reopened" in note for note in one(sim).notes)

    await post(url(bridge), group(alert("resolved", starts="2024-05-14T10:30:00Z")))
    await eventually(lambda: one(sim).phase == "resolved", within=6)
    await asyncio.sleep(1.7)  # past the reopen window
    await post(url(bridge), group(alert(starts="2024-05-14T11:30:00Z")))
    await eventually(lambda: len(sim.tickets()) == 2, within=6)
    old, new = sim.tickets()
    assert (old.phase, new.phase) == ("resolved", "open")
    assert new.correlation != old.correlation
    assert new.correlation.rsplit(":", 1)[0] == old.correlation.rsplit(":", 1)[0]


async def test_429_5xx_and_a_lost_answer_still_make_one_ticket(sim: Sim, make_bridge: Any) -> None:
    """The delivery retries 429 and 503, and adopts the ticket whose open answer was lost: one ticket."""
    bridge = await make_bridge(desk_mapping(sim))
    await post(url(bridge), group(alert(instance="warm-up:9100")))  # signs in, learns the API
    await eventually(sim.tickets)
    sim.faults.set(rate_limit=1, fail_5xx=1, retry_after=0)
    await post(url(bridge), group(alert(instance="flaky:9100")))
    await eventually(lambda: len(sim.tickets()) == 2, within=10)
    sim.faults.set(timeout_after_commit=1)
    await post(url(bridge), group(alert(instance="lost:9100")))
    await eventually(lambda: len(sim.tickets()) == 3, within=10)
    await asyncio.sleep(2.5)  # time for a duplicate to appear, were the lost open not adopted
    tickets = sim.tickets()
    assert len(tickets) == 3 and len({t.correlation for t in tickets}) == 3
    assert sim.faults.as_dict()["timeout_after_commit"] == 0, "the lost answer was exercised"


async def test_an_expired_session_is_renewed_and_the_note_lands_once(sim: Sim, make_bridge: Any) -> None:
    """The desk's session or token expires mid-incident: the bridge signs in again and writes the note once."""
    bridge = await make_bridge(desk_mapping(sim))
    await post(url(bridge), group(alert()))
    await eventually(sim.tickets)
    sim.variant.expire(sim.app)
    await post(url(bridge), group(alert(), alert(device="/dev/sdc1")))
    await eventually(lambda: one(sim).notes, within=6)
    await asyncio.sleep(0.5)
    assert len(one(sim).notes) == 1
