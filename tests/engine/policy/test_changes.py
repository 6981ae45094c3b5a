"""Change-aware tickets (route `change:`), against real Redis and the ServiceNow simulator's change_request
table, with the exact desk calls."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.admin.incidents import list_incidents, show_incident
from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.engine.policy.test_knobs import FIELDS, webhook

CI = "{{ labels.instance.split(':')[0] }}"


def config(desk_url: str, *, desk: dict[str, Any] | None = None, **change: Any) -> MappingConfig:
    """One route into the simulator that asks for a change on the alert's host before it opens."""
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {
                "snow": {
                    "kind": "servicenow",
                    "url": desk_url,
                    "user": "bridge",
                    "password": "s3cret",
                    "timeout": 1.0,
                    **(desk or {}),
                }
            },
            "routes": [
                {
                    "name": "ops",
                    "desk": "snow",
                    "correlate": {"by": ["{{ labels.alertname }}", "{{ labels.instance }}"]},
                    "lifecycle": {"resolve_after": "100ms", "reopen_within": "5s"},
                    "ticket": {"fields": FIELDS},
                    "change": {"ci": CI, "during_change": "suppress", "cache_ttl": "1m", **change},
                }
            ],
        }
    )


def at(offset_s: float) -> str:
    """A glide_date_time `offset_s` from now, as the Table API writes it (UTC)."""
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def calls(snow: Snow) -> list[tuple[str, str]]:
    """The Table API calls made, as (method, table[:fields written])."""
    out = []
    for r in snow.store.requests:
        table = r["path"].split("/api/now/table/", 1)[-1].split("/", 1)[0]
        body = r.get("body") or {}
        out.append((r["method"], table + (":" + ",".join(sorted(body)) if r["method"] == "PATCH" else "")))
    return out


async def audit_of(redis: Any, outcome: str) -> list[dict[str, Any]]:
    """The CHANGE entries with `outcome` in the audit trails of every incident."""
    found = []
    for row in await list_incidents(redis, limit=50):
        shown = await show_incident(redis, row["id"])
        assert shown is not None
        found += [e for e in shown["audit"] if e.get("decision") == "CHANGE" and e.get("outcome") == outcome]
    return found


async def test_suppress_during_a_covering_approved_change(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """An alert on a CI under an approved change being implemented opens nothing; the audit names the change."""
    change = snow.store.itsm.add_change("web-01", at(-3600), at(3600), short_description="Kernel upgrade")
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    entries = await eventually(lambda: audit_of(redis, "suppressed"))
    await asyncio.sleep(0.5)
    assert snow.incidents() == []
    assert calls(snow) == [("GET", "change_request")]
    assert entries[0]["change"] == change["number"] and entries[0]["ci"] == "web-01"
    assert "Kernel upgrade" in entries[0]["reason"]
    query = snow.store.requests[0]["query"]["sysparm_query"]
    assert query.startswith("cmdb_ci.name=web-01^approval=approved^stateIN-2,-1^start_date<=")


async def test_annotate_links_the_change(snow: Snow, make_bridge: Any) -> None:
    """`annotate` opens the ticket with its "Caused by Change" set to the change and a work note naming it."""
    change = snow.store.itsm.add_change("web-01", at(-60), at(600))
    bridge = await make_bridge(config(snow.url, during_change="annotate"))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: snow.incidents() and snow.incidents()[0]["caused_by"])
    record = snow.incidents()[0]
    assert record["caused_by"] == change["sys_id"]
    assert change["number"] in snow.notes(record)[0]
    assert calls(snow) == [("GET", "change_request"), ("POST", "incident"), ("PATCH", "incident:caused_by,work_notes")]


@pytest.mark.parametrize(
    ("state", "approval", "start", "end"),
    [
        ("-1", "requested", -60, 600),  # not approved
        ("-3", "approved", -60, 600),  # still being authorized
        ("3", "approved", -60, 600),  # closed
        ("-1", "approved", -7200, -3600),  # its window is over
        ("-2", "approved", 3600, 7200),  # not begun
    ],
)
async def test_a_change_that_does_not_cover_now_opens_normally(
    snow: Snow, make_bridge: Any, state: str, approval: str, start: int, end: int
) -> None:
    """A change not approved, not scheduled or implementing, or outside its window: the ticket opens as usual."""
    snow.store.itsm.add_change("web-01", at(start), at(end), state=state, approval=approval)
    snow.store.itsm.add_change("web-02", at(-60), at(600))  # another CI's change
    bridge = await make_bridge(config(snow.url, during_change="annotate"))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: snow.incidents())
    await asyncio.sleep(0.3)
    assert snow.incidents()[0]["caused_by"] == ""
    assert calls(snow) == [("GET", "change_request"), ("POST", "incident")]


@pytest.mark.parametrize("fault", ["timeout", "fail_5xx"])
async def test_a_desk_that_cannot_answer_fails_open(snow: Snow, make_bridge: Any, redis: Any, fault: str) -> None:
    """The change lookup times out or fails: the ticket opens anyway and the audit says the check failed."""
    snow.store.itsm.add_change("web-01", at(-60), at(600))
    snow.faults.set(**{fault: 1, "hang_s": 5})
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: snow.incidents(), within=15)
    failed = await eventually(lambda: audit_of(redis, "check_failed"))
    assert failed[0]["ci"] == "web-01" and "fails open" in failed[0]["reason"]
    assert [c for c in calls(snow) if c[0] == "POST"] == [("POST", "incident")]


async def test_a_table_the_desk_refuses_fails_open(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """A change table the desk refuses (400 Invalid table) is a failed check, not a dead letter: the ticket opens."""
    bridge = await make_bridge(config(snow.url, desk={"change_table": "u_no_such_table"}))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: snow.incidents())
    assert await eventually(lambda: audit_of(redis, "check_failed"))


async def test_the_answer_is_cached_and_shared_by_replicas(snow: Snow, make_bridge: Any) -> None:
    """A second incident on the same CI within the TTL, delivered by another replica, asks the desk no more."""
    first = await make_bridge(config(snow.url, during_change="annotate"))
    second = await make_bridge(config(snow.url, during_change="annotate"))
    await post(webhook(first), group(alert(instance="web-01:9100", alertname="DiskFull")))
    await eventually(lambda: len(snow.incidents()) == 1)
    await post(webhook(second), group(alert(instance="web-01:9200", alertname="CpuHigh")))
    await post(webhook(second), group(alert(instance="web-02:9100", alertname="CpuHigh")))
    await eventually(lambda: len(snow.incidents()) == 3)
    lookups = [r["query"]["sysparm_query"].split("^")[0] for r in snow.store.requests if "change_request" in r["path"]]
    assert lookups == ["cmdb_ci.name=web-01", "cmdb_ci.name=web-02"]


async def test_still_firing_when_the_window_ends_opens_the_ticket(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """Held while the change lasts, the ticket opens once its window is over if the alert still fires, noted so."""
    change = snow.store.itsm.add_change("web-01", at(-60), at(2))
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: audit_of(redis, "suppressed"))
    assert snow.incidents() == []
    await eventually(lambda: snow.incidents(), within=10)
    await eventually(lambda: snow.notes(snow.incidents()[0]))
    assert f"approved change {change['number']}; its window is over" in snow.notes(snow.incidents()[0])[0]
    assert await audit_of(redis, "ended")


async def test_cleared_during_the_change_never_opens(snow: Snow, make_bridge: Any, redis: Any) -> None:
    """An alert that fires and clears within the change's window leaves no ticket, before or after the window."""
    snow.store.itsm.add_change("web-01", at(-60), at(2))
    bridge = await make_bridge(config(snow.url))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: audit_of(redis, "suppressed"))
    await post(webhook(bridge), group(alert("resolved", instance="web-01:9100")))
    assert await eventually(lambda: audit_of(redis, "cleared"), within=10)
    await asyncio.sleep(0.5)
    assert snow.incidents() == []
    assert {c for c in calls(snow)} == {("GET", "change_request")}
    assert await redis.xlen(keys.DLQ) == 0, "the resolve of an incident that never had a ticket was dead-lettered"
