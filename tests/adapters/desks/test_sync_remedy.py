"""The Remedy desk's loop back: poll-only (AR System has no outgoing webhook), on 'Last Modified Date'
and the work log's 'Submit Date', against the Remedy simulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from adapters.desks.events import parse_time
from adapters.desks.remedy import RemedyDesk
from adapters.simulators import remedy
from adapters.simulators.remedy_store import RemedyStore
from bridge.core.errors import PayloadError
from bridge.core.sync import MARKER, DeskEventKind
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.variants import REMEDY

K = DeskEventKind
RESOLVE = {"Status": "Resolved", "Status_Reason": "No Further Action Required", "Resolution": "disk replaced"}


@pytest.fixture
async def site() -> AsyncIterator[tuple[web.Application, RemedyDesk]]:
    app = REMEDY.app()
    seconds = itertools.count(0)

    def clock() -> str:  # one second per change: AR System's dates count seconds
        second = next(seconds)
        return f"2026-12-04T10:{second // 60:02d}:{second % 60:02d}.000+0000"

    app[remedy.STORE].clock = clock
    runner, url = await serve(app)
    async with aiohttp.ClientSession() as session:
        desk = cast(RemedyDesk, build(REMEDY.config(url), session))
        yield runner.app, desk
        await desk.aclose()
    await runner.cleanup()


def ms(text: str) -> int:
    at = parse_time(text, ["%Y-%m-%dT%H:%M:%S.%f%z"])
    assert at is not None
    return at


async def test_the_poll_pages_through_incidents_and_work_logs_in_time_order(
    site: tuple[web.Application, RemedyDesk],
) -> None:
    app, desk = site
    store: RemedyStore = app[remedy.STORE]
    refs = [await desk.open(f"route:{n:06x}:1", REMEDY.fields) for n in range(4)]
    extra = {"Status": "Assigned", "Reported Source": "Phone", "Service_Type": "User Service Restoration"}
    _, other = store.create({"z1D_Action": "CREATE", **REMEDY.fields, **extra})  # a person's, no correlation id
    since = store.clock()
    store.act_as_human(other["Request ID"], "Allen", work_log="not the bridge's incident")
    store.act_as_human(refs[0].id, "Allen", work_log="looking into it")
    store.act_as_human(refs[0].id, "Allen", **RESOLVE)
    store.act_as_human(refs[1].id, "Allen", Status="Cancelled", Status_Reason="No longer a Causal CI")
    store.act_as_human(refs[2].id, "Allen", Status="In Progress")
    store.act_as_human(refs[3].id, "Allen", Assignee="Allen Allbrook")
    await desk.note(refs[3], "disk at 97%")
    desk.page_size = 2
    events, cursor, pages = [], None, 0
    while True:
        page = await desk.changes_since(ms(since), cursor)
        events += page.events
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages >= 3
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    shown = [(e.ticket.id, e.kind, e.author, e.ours) for e in events]
    assert shown == [
        (refs[0].id, K.COMMENTED, "Allen", False),
        (refs[0].id, K.RESOLVED, "Allen", False),
        (refs[1].id, K.CANCELLED, "Allen", False),
        (refs[2].id, K.ASSIGNED, "Allen", False),
        (refs[3].id, K.ASSIGNED, "Allen", False),
        (refs[3].id, K.COMMENTED, "Bridge", True),  # the bridge's own work log: its user and the marker
    ]
    assert events[0].text == "looking into it" and events[-1].text == f"disk at 97%\n\n{MARKER}"
    assert all(e.correlation_id.startswith("route:") and e.ticket.display.startswith("INC") for e in events)
    assert len({e.event_id for e in events}) == len(events)
    later = await desk.changes_since(ms(store.clock()), None)
    assert later.events == [] and later.cursor is None


async def test_a_reopening_by_the_bridge_is_its_own(site: tuple[web.Application, RemedyDesk]) -> None:
    app, desk = site
    store: RemedyStore = app[remedy.STORE]
    ref = await desk.open("route:abc123:1", REMEDY.fields)
    store.act_as_human(ref.id, "Allen", **RESOLVE)
    since = store.clock()
    await desk.reopen(ref, "fired again")
    page = await desk.changes_since(ms(since), None)
    assert [(e.kind, e.author, e.ours) for e in page.events] == [
        (K.REOPENED, "Bridge", True),
        (K.COMMENTED, "Bridge", True),
    ]
    desk.integration_user = "svc-other"  # a shared account: only the marker tells the bridge's notes now
    page = await desk.changes_since(ms(since), None)
    assert [(e.kind, e.ours) for e in page.events] == [(K.REOPENED, False), (K.COMMENTED, True)]


@pytest.mark.parametrize("body", [b"", b"{}", b'{"values": {"Status": "Resolved"}}', b"\x00" * 10])
async def test_remedy_pushes_nothing(site: tuple[web.Application, RemedyDesk], body: bytes) -> None:
    with pytest.raises(PayloadError, match="polled"):
        site[1].parse_events(body, {})
