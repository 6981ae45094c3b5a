"""The Jira desk's loop back, Cloud, Data Center and JSM: the simulator pushes Jira's webhooks over HTTP and
the desk reads them; the poll on `updated >=` pages through `/search/jql` (Cloud) and `/search` (Data
Center) with the changelog expanded."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.desks.jira import JiraDesk
from adapters.simulators import jira
from adapters.simulators.jira_store import JiraStore
from bridge.core.errors import PayloadError
from bridge.core.sync import MARKER, DeskEvent, DeskEventKind
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.pushes import Receiver, receiving
from tests.adapters.desks.test_jira import PLATFORM, _validator, schema_problems
from tests.adapters.desks.variants import JIRA_CLOUD, JIRA_DATACENTER, JSM, Variant

FIXTURES = Path(__file__).parents[2] / "fixtures" / "desks"
K = DeskEventKind


@pytest.fixture(params=[JIRA_CLOUD, JIRA_DATACENTER, JSM], ids=lambda v: v.name)
async def site(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Variant, web.Application, JiraDesk]]:
    variant = cast(Variant, request.param)
    runner, url = await serve(variant.app())
    async with aiohttp.ClientSession() as session:
        yield variant, runner.app, cast(JiraDesk, build(variant.config(url), session))
    await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as got:
        yield got


def done_status(variant: Variant) -> tuple[str, str]:
    """(resolved status, cancelled status) of the variant's workflow."""
    return ("Resolved", "Canceled") if variant is JSM else ("Resolved", "Closed")


async def pushed(app: web.Application, got: Receiver, desk: JiraDesk) -> list[DeskEvent]:
    await app[jira.PUSH].drained()
    events = [event for body in got.bodies for event in desk.parse_events(body, {})]
    unique: dict[str, DeskEvent] = {}
    for event in events:  # a comment comes twice (comment_created, then issue_commented): kept once
        unique.setdefault(event.event_id, event)
    return list(unique.values())  # in the order Jira sent them


async def test_webhooks_give_each_human_change_once_and_mark_the_bridges_own(
    site: tuple[Variant, web.Application, JiraDesk], receiver: Receiver
) -> None:
    variant, app, desk = site
    app[jira.PUSH].target(receiver.url, secret="hook-secret", sign="X-Hub-Signature")
    await desk.identify()  # the accountId (Cloud) or name (Data Center) from /myself
    store: JiraStore = app[jira.STORE]
    ref = await desk.open("route:abc123:1", variant.fields)
    await desk.note(ref, "disk at 97%")
    in_progress = "In Progress"
    store.act_as_human(ref.id, "jdoe", assignee="jdoe")
    store.act_as_human(ref.id, "jdoe", to=in_progress)
    store.act_as_human(ref.id, "jdoe", comment="looking into it")
    store.act_as_human(ref.id, "jdoe", to=done_status(variant)[0], resolution="Fixed")
    await desk.reopen(ref, "fired again")

    events = await pushed(app, receiver, desk)
    shown = [(e.kind, e.ours) for e in events]
    assert shown == [
        (K.COMMENTED, True),
        (K.ASSIGNED, False),
        (K.ASSIGNED, False),
        (K.COMMENTED, False),
        (K.RESOLVED, False),
        (K.REOPENED, True),  # the bridge's reopen transition: its account
        (K.COMMENTED, True),
    ], [(e.kind, e.author, e.text) for e in events]
    assert {e.author for e in events if not e.ours} == {"557058:jdoe" if variant is not JIRA_DATACENTER else "jdoe"}
    assert all(e.ticket.id == ref.id and e.correlation_id == "route:abc123:1" for e in events)
    assert next(e for e in events if e.kind is K.RESOLVED).text == "Resolved"
    for raw, headers in zip(receiver.bodies, receiver.headers, strict=True):
        digest = hmac.new(b"hook-secret", raw, hashlib.sha256).hexdigest()
        assert headers["X-Hub-Signature"] == f"sha256={digest}"


async def test_a_cancel_or_a_wont_do_resolution_is_cancelled(
    site: tuple[Variant, web.Application, JiraDesk], receiver: Receiver
) -> None:
    variant, app, desk = site
    app[jira.PUSH].target(receiver.url)
    store: JiraStore = app[jira.STORE]
    first = await desk.open("route:abc123:1", variant.fields)
    second = await desk.open("route:abc124:1", variant.fields)
    store.act_as_human(first.id, "jdoe", to=done_status(variant)[1], resolution="Won't Do")
    store.act_as_human(second.id, "jdoe", to=done_status(variant)[0], resolution="Done")
    events = await pushed(app, receiver, desk)
    assert [(e.ticket.id, e.kind) for e in events] == [(first.id, K.CANCELLED), (second.id, K.RESOLVED)]


async def test_the_bridges_comments_carry_the_marker(site: tuple[Variant, web.Application, JiraDesk]) -> None:
    variant, app, desk = site
    ref = await desk.open("route:abc123:1", variant.fields)
    await desk.note(ref, "disk at 97%")
    comments = app[jira.STORE].get(ref.id).comments
    text = comments[0]["body"] if isinstance(comments[0]["body"], str) else orjson.dumps(comments[0]["body"]).decode()
    assert "disk at 97%" in text and MARKER in text


async def test_the_poll_pages_through_the_changes_since_a_time(site: tuple[Variant, web.Application, JiraDesk]) -> None:
    variant, app, desk = site
    store: JiraStore = app[jira.STORE]
    refs = [await desk.open(f"route:{n:06x}:1", variant.fields) for n in range(5)]
    if variant is not JSM:
        other = store.create(
            {"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Task"}, "summary": "a person's own"}},
            version=2,
            clock=0.0,
        )
        store.act_as_human(other.key, "jdoe", comment="not the bridge's issue")
    await asyncio.sleep(0.002)
    since = int(datetime.now(UTC).timestamp() * 1000)
    await asyncio.sleep(0.002)
    for n, ref in enumerate(refs):
        store.act_as_human(ref.id, "jdoe", comment=f"comment {n}")
        await asyncio.sleep(0.002)  # Jira's times count milliseconds: one change per millisecond at least
        store.act_as_human(ref.id, "jdoe", to="In Progress")
    desk.page_size = 2
    events: list[DeskEvent] = []
    cursor, pages = None, 0
    while True:
        page = await desk.changes_since(since, cursor)
        events += page.events
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages == 3
    assert {e.ticket.id for e in events} == {r.id for r in refs}
    for n, ref in enumerate(refs):
        mine = [e for e in events if e.ticket.id == ref.id]
        assert [e.kind for e in mine] == [K.COMMENTED, K.ASSIGNED]
        assert mine[0].text == f"comment {n}" and mine[0].at_ms <= mine[1].at_ms
    assert all(e.at_ms >= since and not e.ours for e in events)
    assert len({e.event_id for e in events}) == len(events)
    later = int((datetime.now(UTC) + timedelta(minutes=2)).timestamp() * 1000)
    assert (await desk.changes_since(later, None)).events == []
    search = [r for r in store.requests if "/search" in r["path"]]
    shown = search[-1]["body"] or search[-1]["query"]
    assert 'updated >= "' in shown["jql"] and "ORDER BY updated ASC" in shown["jql"]


async def test_the_poll_writes_its_time_in_the_integration_users_time_zone(
    site: tuple[Variant, web.Application, JiraDesk],
) -> None:
    """JQL reads a date in the searching user's profile time zone (here New York, UTC-5 or -4): the poll
    asks `/myself` for it and writes `since` in it, so a change made after `since` is found. Written as
    UTC, the search would have started hours later and found nothing."""
    variant, app, desk = site
    store: JiraStore = app[jira.STORE]
    store.time_zone = "America/New_York"
    ref = await desk.open("route:abc123:1", variant.fields)
    since = int(datetime.now(UTC).timestamp() * 1000) - 1000
    store.act_as_human(ref.id, "jdoe", comment="seen from New York")
    events = (await desk.changes_since(since, None)).events
    assert [(e.ticket.id, e.kind, e.text) for e in events] == [(ref.id, K.COMMENTED, "seen from New York")]
    search = [r for r in store.requests if "/search" in r["path"]]
    shown = search[-1]["body"] or search[-1]["query"]
    local = datetime.fromtimestamp(since / 1000, ZoneInfo("America/New_York")).strftime("%Y/%m/%d %H:%M")
    assert f'updated >= "{local}"' in shown["jql"]


@pytest.mark.parametrize(
    ("name", "kinds", "author"),
    [
        ("jira_cloud_issue_updated_resolved.json", [K.RESOLVED], "5b10ac8d82e05b22cc7d4ef5"),
        ("jira_cloud_comment_created.json", [K.COMMENTED], "5b10ac8d82e05b22cc7d4ef5"),
        ("jira_dc_issue_updated_reopened.json", [K.REOPENED], "jsmith"),
        ("jsm_issue_updated_cancelled.json", [K.CANCELLED], "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"),
    ],
)
async def test_recorded_webhooks(
    site: tuple[Variant, web.Application, JiraDesk], name: str, kinds: list[DeskEventKind], author: str
) -> None:
    desk = site[2]
    events = desk.parse_events((FIXTURES / name).read_bytes(), {"Content-Type": "application/json"})
    assert [e.kind for e in events] == kinds
    assert events[0].author == author and not events[0].ours
    assert events[0].correlation_id == "node-disk:3fa8b2c1d4e5:1"


BODY: dict[str, Any] = {
    "timestamp": 1764842467000,
    "webhookEvent": "jira:issue_updated",
    "user": {"accountId": "x"},
    "issue": {"key": "OPS-1", "fields": {"status": {"name": "Done", "statusCategory": {"key": "done"}}}},
    "changelog": {"id": "10100", "items": [{"field": "status", "toString": "Done"}]},
}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not JSON"),
        (b'"text"', "not a JSON object"),
        (orjson.dumps({"issue": {}}), "webhookEvent is missing"),
        (orjson.dumps(BODY | {"issue": None}), "issue is missing"),
        (orjson.dumps(BODY | {"issue": {"fields": {}}}), "issue.key is missing"),
        (orjson.dumps(BODY | {"changelog": {"id": "1", "items": "status"}}), "changelog.items is not a list"),
        (orjson.dumps(BODY | {"changelog": {"items": []}}), "changelog.id is missing"),
        (orjson.dumps(BODY | {"changelog": {"id": "1", "items": [1]}}), r"changelog.items\[0\] is not an object"),
        (orjson.dumps(BODY | {"timestamp": "soon"}), "timestamp is not a number"),
        (orjson.dumps(BODY | {"comment": {"id": "1", "created": "yesterday"}}), "comment.created is not a time"),
        (orjson.dumps(BODY | {"changelog": {"id": "1", "items": [{}] * 10_000}}), "more than"),
    ],
)
async def test_malformed_webhooks_are_payload_errors(
    site: tuple[Variant, web.Application, JiraDesk], body: bytes, says: str
) -> None:
    with pytest.raises(PayloadError, match=says):
        site[2].parse_events(body, {})


async def test_other_webhook_events_give_no_event(site: tuple[Variant, web.Application, JiraDesk]) -> None:
    assert site[2].parse_events(orjson.dumps({"webhookEvent": "worklog_created", "worklog": {}}), {}) == []


def _no_nulls(value: Any) -> Any:
    """Jira sends null for an empty `from`/`to`, where the published schema says string (not nullable)."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


async def test_changelogs_and_the_polls_search_follow_atlassians_schemas(
    site: tuple[Variant, web.Application, JiraDesk], receiver: Receiver
) -> None:
    """The simulator's changelog histories and webhook items validate against `Changelog` and
    `ChangeDetails` of Atlassian's platform OpenAPI; the poll's `/search/jql` body against
    `SearchAndReconcileRequestBean`."""
    variant, app, desk = site
    app[jira.PUSH].target(receiver.url)
    store: JiraStore = app[jira.STORE]
    ref = await desk.open("route:abc123:1", variant.fields)
    store.act_as_human(ref.id, "jdoe", assignee="jdoe")
    store.act_as_human(ref.id, "jdoe", to="Resolved", resolution="Fixed")
    await desk.changes_since(0, None)
    await app[jira.PUSH].drained()
    histories = store.get(ref.id).histories
    assert histories
    for history in histories:
        assert [e.message for e in _validator(PLATFORM, "Changelog").iter_errors(_no_nulls(history))] == []
    for raw in receiver.bodies:
        body = orjson.loads(raw)
        for item in (body.get("changelog") or {}).get("items", []):
            assert [e.message for e in _validator(PLATFORM, "ChangeDetails").iter_errors(_no_nulls(item))] == []
    search = [r for r in store.requests if r["path"].endswith("/search/jql")]
    for request in search:
        assert schema_problems(request) == []
    assert bool(search) == (variant is not JIRA_DATACENTER)
