"""The JSM Operations desk's loop back, against its simulator: the outgoing Webhook integration's posts read
by `parse_events` (pushed), and the poll on the alert list's `updatedAt` with each alert's report and notes."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.desks.jsm_ops import JsmOpsDesk
from adapters.simulators import jsm_ops
from adapters.simulators.jsm_ops import OpsStore
from bridge.core.errors import PayloadError
from bridge.core.sync import MARKER, DeskEvent, DeskEventKind
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.pushes import receiving
from tests.adapters.desks.variants import JSM_OPS

K = DeskEventKind
PERSON = "jdoe@example.com"


@pytest.fixture
async def site() -> AsyncIterator[tuple[web.Application, JsmOpsDesk]]:
    app = JSM_OPS.app()
    ticks = itertools.count(0)

    def clock() -> str:  # one millisecond per change, from a fixed time: an order a test can tell
        tick = next(ticks)
        return f"2026-12-04T10:00:{tick // 1000:02d}.{tick % 1000:03d}Z"

    app[jsm_ops.STORE].clock = clock
    runner, url = await serve(app)
    async with aiohttp.ClientSession() as session:
        yield runner.app, cast(JsmOpsDesk, build(JSM_OPS.config(url), session))
    await runner.cleanup()


async def polled(desk: JsmOpsDesk, since_ms: int) -> list[DeskEvent]:
    page = await desk.changes_since(since_ms, None)
    assert page.cursor is None  # every list page in one call
    return page.events


def shown(events: list[DeskEvent]) -> list[tuple[str, str, str, bool]]:
    return [(e.kind.value, e.author, e.text.removesuffix(f"\n\n{MARKER}"), e.ours) for e in events]


async def test_every_action_is_pushed_with_who_made_it(site: tuple[web.Application, JsmOpsDesk]) -> None:
    """The simulator posts Opsgenie's Webhook body for every action: the user the request named, the note, and
    updatedAt in nanoseconds (createdAt in milliseconds), as JSM sends them."""
    app, desk = site
    async with receiving() as got:
        app[jsm_ops.PUSH].target(got.url, {"Authorization": "Bearer sync-secret"})
        ref = await desk.open("route:abc123:1", JSM_OPS.fields)
        await desk.note(ref, "disk at 97%")
        app[jsm_ops.STORE].act_as_human(ref.id, PERSON, "acknowledge")
        app[jsm_ops.STORE].act_as_human(ref.id, PERSON, "close", "replaced the disk")
        await app[jsm_ops.PUSH].drained()
        bodies = [orjson.loads(b) for b in got.bodies]
    assert [(b["action"], b["alert"]["username"], b["alert"].get("note", "")) for b in bodies] == [
        ("AddNote", "alert-ticket-bridge", f"disk at 97%\n\n{MARKER}"),  # the desk's `user` names its actions
        ("Acknowledge", PERSON, ""),
        ("Close", PERSON, "replaced the disk"),
    ]
    assert all(got.headers[0]["Authorization"] == "Bearer sync-secret" for _ in bodies)
    for body in bodies:
        assert body["alert"]["alias"] == ref.id
        assert body["alert"]["updatedAt"] // 1_000_000 > body["alert"]["createdAt"] > 1_600_000_000_000
        assert body["alert"]["updatedAt"] % 1_000_000 == 0


async def test_pushed_and_polled_a_person_is_heard_the_bridge_is_ours(site: tuple[web.Application, JsmOpsDesk]) -> None:
    """Acknowledge (with a note: one more comment), unacknowledge, a note and close by a person; the bridge's
    note and acknowledgement are `ours`. The poll finds the same changes under the same ids, but for the
    unacknowledgement, which only the webhook tells."""
    app, desk = site
    store: OpsStore = app[jsm_ops.STORE]
    async with receiving() as got:
        app[jsm_ops.PUSH].target(got.url)
        ref = await desk.open("route:abc123:1", JSM_OPS.fields)
        await desk.note(ref, "disk at 97%")
        await desk.update(ref, {"acknowledged": "true"})
        store.act_as_human(ref.id, PERSON, "unacknowledge")
        store.act_as_human(ref.id, PERSON, "acknowledge", "mine")
        store.act_as_human(ref.id, PERSON, "notes", "swapping the disk")
        store.act_as_human(ref.id, PERSON, "close")
        await app[jsm_ops.PUSH].drained()
        pushed = [e for body in got.bodies for e in desk.parse_events(body, {})]
    assert shown(pushed) == [
        ("commented", "alert-ticket-bridge", "disk at 97%", True),
        ("assigned", "alert-ticket-bridge", "Acknowledge", True),
        ("updated", PERSON, "UnAcknowledge", False),
        ("assigned", PERSON, "Acknowledge", False),
        ("commented", PERSON, "mine", False),
        ("commented", PERSON, "swapping the disk", False),
        ("resolved", PERSON, "Close", False),
    ]
    assert all(e.ticket.id == e.correlation_id == ref.id for e in pushed)
    assert [e.at_ms for e in pushed] == sorted(e.at_ms for e in pushed)
    assert len({e.event_id for e in pushed}) == len(pushed)
    events = await polled(desk, 0)
    # The poll sees the alert as it is: the last acknowledgement (the report keeps one), every note, the close.
    assert shown(events) == [
        ("commented", "alert-ticket-bridge", "disk at 97%", True),
        ("assigned", PERSON, "Acknowledge", False),
        ("commented", PERSON, "mine", False),
        ("commented", PERSON, "swapping the disk", False),
        ("resolved", PERSON, "Close", False),
    ]
    by_id = {e.event_id: e for e in pushed}
    assert all((by_id[e.event_id].kind, by_id[e.event_id].at_ms) == (e.kind, e.at_ms) for e in events)


async def test_the_poll_reads_the_desks_alerts_changed_since_a_time(site: tuple[web.Application, JsmOpsDesk]) -> None:
    """Only alerts of the desk's `source`, only changes at or after `since`, the alert list paged (offset/size)
    and an alert's notes paged (newest first, until an older one), all in time order in one page."""
    app, desk = site
    store: OpsStore = app[jsm_ops.STORE]
    refs = [await desk.open(f"route:{n:06x}:1", JSM_OPS.fields) for n in range(5)]
    for ref in refs:
        store.act_as_human(ref.id, PERSON, "notes", "before")
    stranger = store.alerts[store.find(refs[0].id, "alias")["id"]] | {"id": "other-1", "source": "zabbix"}
    stranger |= {"alias": "someone-elses", "notes": [], "report": {}}
    store.alerts["other-1"] = stranger
    store.act_as_human("someone-elses", PERSON, "acknowledge")
    since = max(e.at_ms for e in await polled(desk, 0)) + 1
    for n in range(120):  # past one notes page (100)
        store.act_as_human(refs[1].id, PERSON, "notes", f"note {n}")
    store.act_as_human(refs[3].id, PERSON, "acknowledge")
    store.act_as_human(refs[0].id, PERSON, "close")
    desk.page_size = 2
    store.requests.clear()
    events = await polled(desk, since)
    assert [(e.ticket.id, e.kind) for e in events] == [
        *[(refs[1].id, K.COMMENTED)] * 120,
        (refs[3].id, K.ASSIGNED),
        (refs[0].id, K.RESOLVED),
    ]
    assert [e.text for e in events[:120]] == [f"note {n}" for n in range(120)]
    assert all(e.at_ms >= since and e.author == PERSON and not e.ours for e in events)
    lists = [r for r in store.requests if r["path"].endswith("/v1/alerts")]
    assert len(lists) == 2 and all('source:"alert-ticket-bridge"' in r["query"]["query"] for r in lists)
    assert all(f"updatedAt>={since}" in r["query"]["query"] for r in lists)


async def test_the_integration_user_names_the_bridges_changes(site: tuple[web.Application, JsmOpsDesk]) -> None:
    """sync.integration_user replaces `user`: the account JSM names in the bridge's actions."""
    app, desk = site
    store: OpsStore = app[jsm_ops.STORE]
    ref = await desk.open("route:abc123:1", JSM_OPS.fields)
    store.act_as_human(ref.id, "Bridge Integration", "acknowledge")
    store.act_as_human(ref.id, PERSON, "notes", "seen")
    desk.integration_user = "bridge integration"
    assert [(e.author, e.ours) for e in await polled(desk, 0)] == [("Bridge Integration", True), (PERSON, False)]
    assert desk.integration_user == "bridge integration"


def webhook(action: str, **alert: object) -> bytes:
    """A Webhook integration post as JSM (Opsgenie) sends it: updatedAt in ns, createdAt in ms."""
    shown = {
        "alertId": "7ec331d7-f5f3-4f78-a49c-2ad886df69fe-1593475564295",
        "message": "[CRITICAL] HighCPU on web-01",
        "tags": [],
        "tinyId": "8",
        "entity": "",
        "alias": "ops:3fa8b2c1d4e5:1",
        "createdAt": 1593475564295,
        "updatedAt": 1593475564636000000,
        "username": PERSON,
        "userId": "e760568d-4e19-413e-9ff9-2661f416edbb",
        "description": "",
        "team": "operations",
        "responders": [{"id": "6ee84e52", "type": "team", "name": "operations"}],
        "teams": ["6ee84e52"],
        "actions": [],
        "details": {},
        "priority": "P3",
        "source": "alert-ticket-bridge",
    } | alert
    return orjson.dumps(
        {
            "action": action,
            "alert": shown,
            "source": {"name": "", "type": "web"},
            "integrationName": "operations_Webhook_2",
            "integrationId": "cab111af-f56b-4886-b20a-f947ea3163e2",
            "integrationType": "Webhook",
        }
    )


@pytest.mark.parametrize(
    ("action", "extra", "kinds"),
    [
        ("Acknowledge", {}, [K.ASSIGNED]),
        ("Close", {"note": "replaced the disk"}, [K.RESOLVED, K.COMMENTED]),
        ("AddNote", {"note": "looking"}, [K.COMMENTED]),
        ("AssignOwnership", {"owner": "ann@example.com"}, [K.ASSIGNED]),
        ("TakeOwnership", {}, [K.ASSIGNED]),
        ("UnAcknowledge", {}, [K.UPDATED]),
        ("Escalate", {}, [K.UPDATED]),
        ("Create", {"note": "from the integration"}, []),
    ],
)
async def test_the_webhook_integrations_actions(
    site: tuple[web.Application, JsmOpsDesk], action: str, extra: dict[str, str], kinds: list[DeskEventKind]
) -> None:
    events = site[1].parse_events(webhook(action, **extra), {})
    assert [e.kind for e in events] == kinds
    for event in events:
        assert (event.ticket.id, event.correlation_id) == ("ops:3fa8b2c1d4e5:1", "ops:3fa8b2c1d4e5:1")
        assert (event.at_ms, event.author, event.ours) == (1593475564636, PERSON, False)
        assert event.event_id.startswith("7ec331d7-f5f3-4f78-a49c-2ad886df69fe-1593475564295:")


async def test_the_bridges_own_pushes_are_ours(site: tuple[web.Application, JsmOpsDesk]) -> None:
    desk = site[1]
    [by_user] = desk.parse_events(webhook("Acknowledge", username="alert-ticket-bridge"), {})
    [by_marker] = desk.parse_events(webhook("AddNote", note=f"cleared\n\n{MARKER}", username="shared"), {})
    assert by_user.ours and by_marker.ours


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"[]", "not a JSON object"),
        (orjson.dumps({"alert": {}}), "action is missing"),
        (orjson.dumps({"action": "Close", "alert": "x"}), "alert is not an object"),
        (orjson.dumps({"action": "Close", "alert": {"alias": "a:b:1", "updatedAt": 1}}), "alert.alertId is missing"),
        (orjson.dumps({"action": "Close", "alert": {"alertId": "x", "updatedAt": 1}}), "alert.alias is missing"),
        (orjson.dumps({"action": "Close", "alert": {"alertId": "x", "alias": "a:b:1"}}), "alert.updatedAt is missing"),
        (orjson.dumps({"action": "Close", "alert": {"alertId": "x", "alias": "a", "updatedAt": "y"}}), "not a number"),
    ],
)
async def test_malformed_webhooks_are_payload_errors(
    site: tuple[web.Application, JsmOpsDesk], body: bytes, says: str
) -> None:
    with pytest.raises(PayloadError, match=says):
        site[1].parse_events(body, {})
