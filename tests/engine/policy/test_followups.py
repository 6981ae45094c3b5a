"""Follow-ups reach the ticket: each source kind's acknowledgements, comments, flapping, downtime,
severity and summary changes become work notes through a running bridge, as the route's `notes:` say;
identical repeats make none."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import show_incident
from bridge.core.config import MappingConfig
from bridge.core.sync import MARKER
from tests.amp import alert, group
from tests.conftest import Snow, eventually, fixture_json, post

FIELDS = {
    "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
    "impact": "{{ {'critical': '1', 'major': '2'}.get(severity, '3') }}",
}
NAGIOS_START = 1715678102 - 185  # the recorded PROBLEM's timet minus its duration: when the problem began


def config(desk_url: str, source: str, **route: Any) -> MappingConfig:
    """One source of kind `source` (named as its kind) into one route to the ServiceNow simulator."""
    base: dict[str, Any] = {
        "name": "ops",
        "desk": "snow",
        "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
        "ticket": {"fields": FIELDS},
        **route,
    }
    return MappingConfig.model_validate(
        {
            "sources": {source: {"kind": source}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [base],
        }
    )


def webhook(bridge: Any, source: str) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/{source}"


def nagios(kind: str, ntype: str, state: str = "CRITICAL", author: str = "", comment: str = "", at: int = 0) -> Any:
    """A Nagios (or Icinga 2) service notification of the recorded problem, sent `at` seconds after it
    began, with the problem's start unchanged as Nagios sends it."""
    if kind == "nagios":
        body = copy.deepcopy(fixture_json("nagios_service_problem.json"))
        body["service_duration_sec"] = str(185 + at)
    else:
        body = copy.deepcopy(fixture_json("icinga2_problem.json"))
    body.update(
        notification_type=ntype,
        service_state=state,
        service_state_id={"OK": "0", "WARNING": "1", "CRITICAL": "2"}[state],
        notification_author=author,
        notification_comment=comment,
        timet=str(1715678102 + at),
    )
    return body


async def note_after(snow: Snow, ticket: dict[str, str], count: int) -> str:
    """The ticket's newest work note once it has `count` of them."""
    notes = await eventually(lambda: len(snow.notes(ticket)) >= count and snow.notes(ticket), within=5)
    assert len(notes) == count, notes
    return str(notes[-1]).removesuffix(f"\n\n{MARKER}")  # the note as the route wrote it, without the desk's marker


@pytest.mark.parametrize("kind", ["nagios", "icinga2"])
async def test_nagios_follow_ups_become_notes_and_repeats_do_not(snow: Snow, make_bridge: Any, kind: str) -> None:
    """Acknowledgement (author, comment), custom, flapping and downtime notifications of an open problem each
    make one work note, sent twice or not; the recovery still resolves the ticket."""
    bridge = await make_bridge(config(snow.url, kind))
    url = webhook(bridge, kind)
    await post(url, nagios(kind, "PROBLEM"))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    flapping_end = "FLAPPINGSTOP" if kind == "nagios" else "FLAPPINGEND"
    downtime_end = "DOWNTIMEEND" if kind == "nagios" else "DOWNTIMEREMOVED"
    sent = [
        (nagios(kind, "ACKNOWLEDGEMENT", author="jdoe", comment="Looking into it", at=60), "Acknowledged by jdoe"),
        (nagios(kind, "CUSTOM", author="jdoe", comment="escalating to DBA", at=120), "Comment by jdoe"),
        (nagios(kind, "FLAPPINGSTART", at=180), "Flapping started"),
        (nagios(kind, flapping_end, at=240), "Flapping stopped"),
        (nagios(kind, "DOWNTIMESTART", author="ops", comment="patching", at=300), "Scheduled downtime started"),
        (nagios(kind, downtime_end, at=360), "Scheduled downtime ended"),
    ]
    for count, (body, said) in enumerate(sent, start=1):
        for _ in range(2):  # each notification twice: a retry, an HA pair
            status, _ = await post(url, body)
            assert status == 202
        note = await note_after(snow, ticket, count)
        assert said in note, note
    notes = [n.removesuffix(f"\n\n{MARKER}") for n in snow.notes(ticket)]  # the desk's marker line
    assert notes[0].endswith("Acknowledged by jdoe: Looking into it")
    assert notes[1].endswith("Comment by jdoe: escalating to DBA")
    assert notes[4].endswith("Scheduled downtime started by ops: patching")
    await post(url, nagios(kind, "RECOVERY", state="OK", at=420))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    assert len(snow.notes(ticket)) == len(sent)
    assert len(snow.incidents()) == 1


async def test_a_route_notes_only_the_follow_ups_it_lists(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """`notes: [acknowledgement]`: a custom notification and flapping make no note, the acknowledgement does;
    the member record keeps the acknowledgement's mark after the resource of a record written without one."""
    bridge = await make_bridge(config(snow.url, "nagios", notes=["acknowledgement"]))
    url = webhook(bridge, "nagios")
    await post(url, nagios("nagios", "PROBLEM"))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    shown = await show_incident(redis, ticket["correlation_id"])
    assert shown is not None and "marks" not in shown["members"]["web-01!HTTP"]  # as records were before marks
    await post(url, nagios("nagios", "CUSTOM", author="jdoe", comment="escalating", at=60))
    await post(url, nagios("nagios", "FLAPPINGSTART", at=120))
    await post(url, nagios("nagios", "ACKNOWLEDGEMENT", author="jdoe", comment="mine", at=180))
    assert (await note_after(snow, ticket, 1)).endswith("Acknowledged by jdoe: mine")
    await asyncio.sleep(0.3)
    assert len(snow.notes(ticket)) == 1
    shown = await show_incident(redis, ticket["correlation_id"])
    assert shown is not None
    member = shown["members"]["web-01!HTTP"]
    assert member["status"] == "acknowledged" and member["resource"] == "web-01" and len(member["marks"]) == 1


async def test_an_acknowledgement_moves_the_ticket_to_the_state_the_route_names(snow: Snow, make_bridge: Any) -> None:
    """`ticket.acknowledge_fields: {state: "2"}`: the acknowledgement's note comes with the ticket In Progress."""
    bridge = await make_bridge(
        config(snow.url, "nagios", ticket={"fields": FIELDS, "acknowledge_fields": {"state": "2"}})
    )
    url = webhook(bridge, "nagios")
    await post(url, nagios("nagios", "PROBLEM"))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await post(url, nagios("nagios", "CUSTOM", author="jdoe", comment="escalating", at=60))
    await note_after(snow, ticket, 1)
    assert snow.store.get(ticket["sys_id"])["state"] == "1"  # a comment is not an acknowledgement
    await post(url, nagios("nagios", "ACKNOWLEDGEMENT", author="jdoe", comment="mine", at=120))
    await note_after(snow, ticket, 2)
    assert snow.store.get(ticket["sys_id"])["state"] == "2"


def zabbix(update: str = "", *, user: str = "Admin", message: str = "", nseverity: str = "4", ack: str = "No") -> Any:
    """The recorded Zabbix problem, or an update of it (`update` is Zabbix's {EVENT.UPDATE.ACTION})."""
    body = copy.deepcopy(fixture_json("zabbix_problem.json"))
    body["event_nseverity"] = nseverity
    if update:
        body.update(
            event_update_status="1",
            event_update_action=update,
            event_update_user=user,
            event_update_message=message,
            event_ack_status=ack,
        )
    return body


async def test_zabbix_updates_become_notes(snow: Snow, make_bridge: Any) -> None:
    """A Zabbix comment, an acknowledgement and a severity change (which updates the severity-derived field
    the route keeps in sync) each make one note; an update sent again makes none."""
    ticket_cfg = {"fields": FIELDS, "ownership": {"impact": "sync_until_edited"}}
    bridge = await make_bridge(config(snow.url, "zabbix", ticket=ticket_cfg))
    url = webhook(bridge, "zabbix")
    await post(url, zabbix())
    ticket = (await eventually(lambda: snow.incidents()))[0]
    assert ticket["impact"] == "2"
    comment = zabbix("commented", message="escalating to DBA")
    await post(url, comment)
    await post(url, comment)
    assert (await note_after(snow, ticket, 1)).endswith("Comment by Admin: escalating to DBA")
    await post(url, zabbix("acknowledged", message="on it", ack="Yes"))
    assert (await note_after(snow, ticket, 2)).endswith("Acknowledged by Admin: on it")
    await post(url, zabbix("changed severity from High to Disaster", nseverity="5", ack="Yes"))
    note = await note_after(snow, ticket, 3)
    assert "changed severity from High to Disaster" in note and "severity major -> critical" in note, note
    await eventually(lambda: snow.store.get(ticket["sys_id"])["impact"] == "1")
    await post(url, comment)  # a late copy of the first update
    recovery = fixture_json("zabbix_recovery.json")
    await post(url, recovery)
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=5)
    assert len(snow.notes(ticket)) == 3


async def test_solarwinds_acknowledgement_becomes_a_note(snow: Snow, make_bridge: Any) -> None:
    """A SolarWinds ACKNOWLEDGE names who acknowledged in a note; the same action sent again adds nothing."""
    bridge = await make_bridge(config(snow.url, "solarwinds"))
    url = webhook(bridge, "solarwinds")
    trigger = fixture_json("solarwinds_trigger.json")
    await post(url, trigger)
    ticket = (await eventually(lambda: snow.incidents()))[0]
    ack = {**trigger, "event_type": "ACKNOWLEDGE", "acknowledged": "Acknowledged", "acknowledged_by": "NET\\kim"}
    ack["timestamp_utc"] = "2024-05-14 09:30:00"
    await post(url, ack)
    await post(url, ack)
    assert (await note_after(snow, ticket, 1)).endswith("Acknowledged by NET\\kim")
    await asyncio.sleep(0.3)
    assert len(snow.notes(ticket)) == 1


@pytest.mark.parametrize("notes", [None, ["summary"]], ids=["default", "summary"])
async def test_alertmanager_summary_changes_are_noted_only_where_asked(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, notes: list[str] | None
) -> None:
    """A changed summary makes a note only on a route with `notes: [summary]`; HA double-sends of the same
    alert make none either way."""
    bridge = await make_bridge(config(snow.url, "alertmanager", **({"notes": notes} if notes else {})))
    url = webhook(bridge, "alertmanager")
    first = alert()
    changed = copy.deepcopy(first)
    changed["annotations"]["summary"] = "Disk 97% full"
    answers = [(await post(url, group(body)))[1] for body in (first, first, changed, changed)]
    # Each double-send's second copy is answered by the repeat window (bridge/ingress/repeats.py).
    assert [a.get("repeated", 0) for a in answers] == [0, 1, 0, 1]
    ticket = (await eventually(lambda: snow.incidents()))[0]

    async def decided() -> bool:  # the two copies written
        shown = await show_incident(redis, ticket["correlation_id"])
        return shown is not None and len(shown["audit"]) + sum(shown["repeats"].values()) >= 2

    await eventually(decided)
    await asyncio.sleep(0.3)
    if notes:
        assert snow.notes(ticket) == [
            "[firing] NodeFilesystemAlmostOutOfSpace on db-prod-01.example.com:9100 (critical): summary: Disk 97% full"
            f"\n\n{MARKER}"
        ]
    else:
        assert snow.notes(ticket) == []


async def test_grafana_summary_change_is_a_note_where_asked(snow: Snow, make_bridge: Any) -> None:
    """Grafana: with `notes: [summary]` the new summary of a firing alert is a note; a repeat is not."""
    bridge = await make_bridge(config(snow.url, "grafana", notes=["summary"]))
    url = webhook(bridge, "grafana")
    body = fixture_json("grafana_firing.json")
    await post(url, body)
    ticket = (await eventually(lambda: snow.incidents()))[0]
    changed = copy.deepcopy(body)
    changed["alerts"][0]["annotations"]["summary"] = "CPU at 99% on web-01"
    await post(url, changed)
    await post(url, changed)
    assert (await note_after(snow, ticket, 1)).endswith("summary: CPU at 99% on web-01")
    await asyncio.sleep(0.3)
    assert len(snow.notes(ticket)) == 1
