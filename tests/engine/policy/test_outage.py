"""The issue-30 outage, seeded and smaller (bench/outage.py at a fifth of the hosts): a dead switch, a failed
database seen by Prometheus and Splunk, a degrading storage array, 5 flapping services and 20 unrelated
problems, replayed through the engine, the Lua steps and delivery (virtual time) with the bench's mapping.
One ticket per root cause in every shape, whatever comes first; no resolve/reopen churn."""

from __future__ import annotations

import pytest

from bench.outage import SHAPES, generate, replay_outage
from tests.conftest import require

SHAPE = {s.name: s for s in SHAPES}


@pytest.mark.parametrize("shape", ["parent_first", "parent_last", "parent_last_repeat_10m", "parent_last_one_am"])
async def test_one_ticket_per_root_cause_in_either_order(shape: str) -> None:
    """With `topology.hold`, the switch first or last, repeats slow or fast, one Alertmanager or two: as many
    tickets as root causes (28), each resolved once, none reopened, nothing dead-lettered."""
    require("redis-server")
    outage = generate(SHAPE[shape], seed=30, scale=0.2)
    row = await replay_outage(outage)
    assert row["alerts"] > 400 and row["ideal"] == 28
    assert row["tickets"] == row["root_cause_tickets"] == 28, row
    assert row["churn"] == {"reopens": 0, "resolves_after_the_first": 0}
    assert row["left_open"] == 0 and row["dead_letters"] == 0
    assert row["per_alert_tickets"] > 2 * row["tickets"] and row["per_group_tickets"] > row["tickets"]


async def test_without_hold_a_late_switch_closes_its_hosts_tickets_as_duplicates() -> None:
    """Without `topology.hold` the hosts' tickets open before the switch's; when it comes they are closed as
    its duplicates: 28 tickets stand, one per root cause, and the same seed gives the same figures."""
    require("redis-server")
    first = await replay_outage(generate(SHAPE["parent_last_no_hold"], seed=30, scale=0.2))
    again = await replay_outage(generate(SHAPE["parent_last_no_hold"], seed=30, scale=0.2))
    assert first["root_cause_tickets"] == 28
    assert first["closed_as_duplicates"] == first["tickets"] - 28 > 0
    assert first["churn"] == {"reopens": 0, "resolves_after_the_first": 0}
    assert (first["tickets"], first["desk_calls"], first["alerts"]) == (
        again["tickets"],
        again["desk_calls"],
        again["alerts"],
    )
