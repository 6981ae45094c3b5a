"""The ServiceNow desk's loop back: the Business Rule's push (the simulator sends it over HTTP, the desk
reads it) and the poll on `sys_updated_on` and `sys_journal_field`, against the ServiceNow simulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.desks.events import parse_time
from adapters.desks.servicenow import ServiceNowDesk
from adapters.simulators.servicenow import PUSH, STORE, make_app
from adapters.simulators.servicenow_store import ServiceNowStore
from bridge.core.errors import PayloadError
from bridge.core.sync import MARKER, DeskEvent, DeskEventKind
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.pushes import Receiver, receiving

FIXTURES = Path(__file__).parents[2] / "fixtures" / "desks"
USER, PASSWORD = "bridge", "s3cret"
CORRELATION = "route:abc123:1"
RESOLVE = {"state": "6", "close_code": "Solution provided", "close_notes": "replaced the disk"}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    async with receiving() as got:
        yield got, got.url.rsplit("/desk-events/", 1)[0]


@pytest.fixture
async def snow() -> AsyncIterator[tuple[web.Application, str]]:
    app = make_app(user=USER, password=PASSWORD)
    seconds = itertools.count(0)

    def clock() -> str:
        # One second per save, so that `sys_updated_on` orders every change (the platform counts seconds).
        second = next(seconds)
        return f"2026-12-04 10:{second // 60:02d}:{second % 60:02d}"

    app[STORE].clock = clock
    runner, url = await serve(app)
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def desk(snow: tuple[web.Application, str]) -> AsyncIterator[ServiceNowDesk]:
    async with aiohttp.ClientSession() as session:
        config = {"kind": "servicenow", "url": snow[1], "user": USER, "password": PASSWORD}
        yield cast(ServiceNowDesk, build(config, session))


def store(snow: tuple[web.Application, str]) -> ServiceNowStore:
    return snow[0][STORE]


async def pushed(snow: tuple[web.Application, str], got: Receiver, desk: ServiceNowDesk) -> list[DeskEvent]:
    await snow[0][PUSH].drained()
    return [event for body in got.bodies for event in desk.parse_events(body, {})]


async def test_every_update_is_pushed_and_the_bridges_own_are_marked_ours(
    snow: tuple[web.Application, str], desk: ServiceNowDesk, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    snow[0][PUSH].target(f"{url}/desk-events/snow", {"Authorization": "Bearer sync-secret"})
    ref = await desk.open(CORRELATION, {"short_description": "disk full"})
    await desk.note(ref, "disk at 97%")
    sn = store(snow)
    sn.act_as_human(ref.id, "jdoe", assigned_to="a" * 32)
    sn.act_as_human(ref.id, "jdoe", comments="looking into it")
    sn.act_as_human(ref.id, "jdoe", **RESOLVE)
    await desk.reopen(ref, "fired again")
    sn.act_as_human(ref.id, "asmith", state="8")

    events = await pushed(snow, got, desk)
    assert got.headers[0]["Authorization"] == "Bearer sync-secret"
    shown = [(e.kind, e.author, e.ours) for e in events]
    assert shown == [
        (DeskEventKind.COMMENTED, USER, True),  # the bridge's note: its user, and the marker
        (DeskEventKind.ASSIGNED, "jdoe", False),
        (DeskEventKind.COMMENTED, "jdoe", False),
        (DeskEventKind.RESOLVED, "jdoe", False),
        (DeskEventKind.REOPENED, USER, True),  # the bridge's reopen: state event and its work note
        (DeskEventKind.COMMENTED, USER, True),
        (DeskEventKind.CANCELLED, "asmith", False),
    ]
    assert all(e.ticket.id == ref.id and e.ticket.display == ref.display for e in events)
    assert all(e.correlation_id == CORRELATION and e.desk == "desk" for e in events)
    assert [e.text for e in events if e.kind is DeskEventKind.COMMENTED][1] == "looking into it"
    assert events[3].text == "Resolved"
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    record = sn.get(ref.id)
    assert events[-1].event_id == f"{ref.id}:{record['sys_mod_count']}"
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)


async def test_the_bridges_notes_carry_the_marker(snow: tuple[web.Application, str], desk: ServiceNowDesk) -> None:
    ref = await desk.open(CORRELATION, {"short_description": "disk full"})
    await desk.note(ref, "disk at 97%")
    await desk.reopen(ref, "fired again")
    assert store(snow).notes(ref.id) == [f"disk at 97%\n\n{MARKER}", f"fired again\n\n{MARKER}"]


async def test_a_shared_integration_user_is_told_apart_by_the_marker_only(
    snow: tuple[web.Application, str], desk: ServiceNowDesk, receiver: tuple[Receiver, str]
) -> None:
    """With `integration_user` set to another account, the configured user's changes count as human,
    except a note carrying the marker."""
    got, url = receiver
    snow[0][PUSH].target(f"{url}/desk-events/snow")
    desk.integration_user = "svc-bridge"
    assert desk.integration_user == "svc-bridge"
    ref = await desk.open(CORRELATION, {"short_description": "disk full"})
    store(snow).act_as_human(ref.id, "svc-bridge", comments="by the integration account")
    store(snow).act_as_human(ref.id, "jdoe", comments=f"quoted {MARKER} text")
    events = await pushed(snow, got, desk)
    assert [(e.author, e.ours) for e in events] == [("svc-bridge", True), ("jdoe", True)]


async def test_the_poll_pages_in_time_order_and_merges_the_journal(
    snow: tuple[web.Application, str], desk: ServiceNowDesk
) -> None:
    sn = store(snow)
    refs = [await desk.open(f"route:{n:06x}:1", {"short_description": f"alert {n}"}) for n in range(5)]
    sn.create({"short_description": "a human's own incident"})  # not the bridge's: never polled
    human = next(r for r in sn.incidents.values() if not r["correlation_id"])
    start = sn.clock()  # the second after the opens
    sn.act_as_human(human["sys_id"], "jdoe", comments="not ours to see")
    for n, ref in enumerate(refs):
        sn.act_as_human(ref.id, "jdoe", comments=f"comment {n}")
        if n % 2:
            sn.act_as_human(ref.id, "jdoe", **RESOLVE)
        else:
            sn.act_as_human(ref.id, "jdoe", state="2")
    desk.page_size = 3
    since = _ms(start)
    pages, cursor, events = 0, None, []
    while True:
        page = await desk.changes_since(since, cursor)
        pages += 1
        events += page.events
        assert len(page.events) <= 2 * desk.page_size
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages >= 3
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    assert all(e.at_ms >= since for e in events)
    by_ticket = {ref.id: [e.kind for e in events if e.ticket.id == ref.id] for ref in refs}
    for n, ref in enumerate(refs):
        final = DeskEventKind.RESOLVED if n % 2 else DeskEventKind.ASSIGNED
        assert by_ticket[ref.id] == [DeskEventKind.COMMENTED, final], (n, by_ticket[ref.id])
    assert human["sys_id"] not in {e.ticket.id for e in events}
    assert {e.text for e in events if e.kind is DeskEventKind.COMMENTED} == {f"comment {n}" for n in range(5)}
    assert len({e.event_id for e in events}) == len(events)
    assert not any(e.ours for e in events)


async def test_the_poll_sees_state_changes_from_since_on_and_marks_the_bridges_own(
    snow: tuple[web.Application, str], desk: ServiceNowDesk
) -> None:
    sn = store(snow)
    ref = await desk.open(CORRELATION, {"short_description": "disk full"})
    sn.act_as_human(ref.id, "jdoe", **RESOLVE)
    before = sn.clock()
    await desk.reopen(ref, "fired again")
    page = await desk.changes_since(_ms(before), None)
    assert page.cursor is None
    kinds = [(e.kind, e.author, e.ours) for e in page.events]
    assert kinds == [(DeskEventKind.REOPENED, USER, True), (DeskEventKind.COMMENTED, USER, True)]
    sn.act_as_human(ref.id, "asmith", state="8")
    later = await desk.changes_since(_ms(before), None)
    assert [(e.kind, e.author) for e in later.events if not e.ours] == [(DeskEventKind.CANCELLED, "asmith")]
    assert (await desk.changes_since(_ms("2026-12-04 12:00:00"), None)).events == []


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("servicenow_br_resolved.json", [DeskEventKind.RESOLVED]),
        ("servicenow_br_comment.json", [DeskEventKind.COMMENTED]),
        ("servicenow_br_reopened_with_note.json", [DeskEventKind.REOPENED, DeskEventKind.COMMENTED]),
    ],
)
def test_recorded_bodies(desk: ServiceNowDesk, name: str, kinds: list[DeskEventKind]) -> None:
    events = desk.parse_events((FIXTURES / name).read_bytes(), {"Content-Type": "application/json"})
    assert [e.kind for e in events] == kinds
    assert events[0].ticket.display.startswith("INC") and events[0].correlation_id


BASE: dict[str, Any] = {
    "sys_id": "9d385017c611228701d22104cc95c371",
    "number": "INC0010002",
    "state": "6",
    "previous_state": "2",
    "sys_updated_on": "2026-12-04 10:00:05",
    "sys_updated_by": "jdoe",
    "sys_mod_count": "4",
}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps(BASE | {"sys_id": None}), "sys_id is missing"),
        (orjson.dumps(BASE | {"state": {"value": "6"}}), "state is not a string"),
        (orjson.dumps(BASE | {"sys_mod_count": "four"}), "sys_mod_count is not a number"),
        (orjson.dumps(BASE | {"sys_updated_on": "yesterday"}), "sys_updated_on is not a time"),
        (orjson.dumps(BASE | {"journal": "text"}), "journal is not an object"),
        (orjson.dumps(BASE | {"journal": {"value": "x"}}), "journal.sys_id is missing"),
        (b"{" * 5000, "not JSON"),
        (b" " * (2 << 20), "more than"),
    ],
)
def test_malformed_bodies_are_payload_errors(desk: ServiceNowDesk, body: bytes, says: str) -> None:
    with pytest.raises(PayloadError, match=says):
        desk.parse_events(body, {})


def _ms(text: str) -> int:
    at = parse_time(text, ["%Y-%m-%d %H:%M:%S"])
    assert at is not None
    return at
