"""The generic webhook desk's loop back, in its documented format: the in-house ticketing simulator pushes
each change over HTTP and answers the `changes` poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.desks.events import parse_time
from adapters.desks.webhook import WebhookDesk
from adapters.simulators import webhook
from adapters.simulators.webhook import TicketStore
from bridge.core.errors import DeskRejected, PayloadError
from bridge.core.sync import MARKER, DeskEvent, DeskEventKind
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.pushes import receiving
from tests.adapters.desks.variants import WEBHOOK, WEBHOOK_DESK

K = DeskEventKind


@pytest.fixture
async def site() -> AsyncIterator[tuple[web.Application, str, aiohttp.ClientSession]]:
    runner, url = await serve(WEBHOOK.app())
    async with aiohttp.ClientSession() as session:
        yield runner.app, url, session
    await runner.cleanup()


def desk_of(site: tuple[web.Application, str, aiohttp.ClientSession], **overrides: Any) -> WebhookDesk:
    return cast(WebhookDesk, build(WEBHOOK.config(site[1]) | overrides, site[2]))


async def test_pushed_changes_and_the_bridges_own(
    site: tuple[web.Application, str, aiohttp.ClientSession],
) -> None:
    app = site[0]
    desk = desk_of(site)
    desk.integration_user = "bridge"  # the token's owner: Bearer auth names no user
    store: TicketStore = app[webhook.STORE]
    async with receiving() as got:
        app[webhook.PUSH].target(got.url, {"Authorization": "Bearer sync-secret"})
        ref = await desk.open("route:abc123:1", WEBHOOK.fields)
        await desk.note(ref, "disk at 97%")
        store.act_as_human(ref.id, "jdoe", status="in_progress")
        store.act_as_human(ref.id, "jdoe", comment="looking into it")
        store.act_as_human(ref.id, "jdoe", status="resolved", resolution="disk replaced")
        await desk.reopen(ref, "fired again")
        store.act_as_human(ref.id, "asmith", status="cancelled")
        await app[webhook.PUSH].drained()
        events = [e for body in got.bodies for e in desk.parse_events(body, {})]
        assert got.headers[0]["Authorization"] == "Bearer sync-secret"
    assert [(e.kind, e.author, e.ours) for e in events] == [
        (K.COMMENTED, "bridge", True),
        (K.ASSIGNED, "jdoe", False),
        (K.COMMENTED, "jdoe", False),
        (K.RESOLVED, "jdoe", False),
        (K.REOPENED, "bridge", True),
        (K.CANCELLED, "asmith", False),
    ]
    assert events[0].text == f"disk at 97%\n\n{MARKER}"
    assert all(e.ticket.id == ref.id and e.correlation_id == "route:abc123:1" for e in events)
    assert events[0].ticket.url == f"https://tickets.example.com/t/{ref.id}"


async def test_the_poll_pages_with_the_changes_action(site: tuple[web.Application, str, aiohttp.ClientSession]) -> None:
    app = site[0]
    desk = desk_of(site)
    store: TicketStore = app[webhook.STORE]
    refs = [await desk.open(f"route:{n:06x}:1", WEBHOOK.fields) for n in range(3)]
    await desk.note(refs[0], "before")
    since = _ms(store.changes[-1]["at"]) + 1
    await asyncio.sleep(0.003)  # the changes below come after `since`
    for n, ref in enumerate(refs * 40):
        store.act_as_human(ref.id, "jdoe", comment=f"comment {n}")
    events: list[DeskEvent] = []
    cursor, pages = None, 0
    while True:
        page = await desk.changes_since(since, cursor)
        events += page.events
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages == 2  # 120 changes, 100 a page
    assert [e.text for e in events] == [f"comment {n}" for n in range(120)]
    assert all(e.kind is K.COMMENTED and not e.ours and e.at_ms >= since for e in events)


async def test_without_a_changes_action_the_desk_is_push_only(
    site: tuple[web.Application, str, aiohttp.ClientSession],
) -> None:
    config = {k: v for k, v in WEBHOOK_DESK.items() if k != "changes"} | {"url": site[1]}
    desk = cast(WebhookDesk, build(config, site[2]))
    with pytest.raises(DeskRejected, match="push-only"):
        await desk.changes_since(0, None)


def test_the_documented_format_with_explicit_kinds(site: tuple[web.Application, str, aiohttp.ClientSession]) -> None:
    desk = desk_of(site)
    one = {"id": 7, "ticket": "42", "at": 1764842400000, "author": "jdoe", "kind": "assigned"}
    many = {"events": [one, one | {"id": "8", "kind": None, "comment": "ok", "at": "2025-12-04T10:00:00Z"}]}
    assert [(e.event_id, e.kind, e.at_ms) for e in desk.parse_events(orjson.dumps(many), {})] == [
        ("7", K.ASSIGNED, 1764842400000),
        ("8", K.COMMENTED, 1764842400000),
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"nope", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"events": {}}', "events is not a list"),
        (b'{"events": [1]}', r"events\[0\] is not an object"),
        (b'{"ticket": "1", "at": 1}', "id is missing"),
        (b'{"id": "1", "at": 1}', "ticket is missing"),
        (b'{"id": "1", "ticket": "1"}', "at is missing"),
        (b'{"id": "1", "ticket": "1", "at": "noon"}', "at is not a time"),
        (b'{"id": "1", "ticket": "1", "at": 1, "kind": "exploded"}', "kind is not one of"),
        (b'{"id": "1", "ticket": ["1"], "at": 1}', "ticket is not a string"),
    ],
)
def test_malformed_pushes_are_payload_errors(
    site: tuple[web.Application, str, aiohttp.ClientSession], body: bytes, says: str
) -> None:
    with pytest.raises(PayloadError, match=says):
        desk_of(site).parse_events(body, {})


def _ms(text: str) -> int:
    at = parse_time(text, ["%Y-%m-%dT%H:%M:%S.%f%z"])
    assert at is not None
    return at
