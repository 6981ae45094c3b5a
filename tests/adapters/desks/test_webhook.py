"""The generic webhook desk: templated requests, JMESPath/JSONPath reading, strict config; the ticketing simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pydantic
import pytest
from aiohttp import web

from adapters.desks.events import marked  # a note as the desk writes it: MARKER at the end
from adapters.desks.webhook import WebhookConfig, WebhookDesk, to_jmespath
from adapters.simulators import webhook
from bridge.core.desk import TicketPhase, TicketRef
from bridge.core.errors import DeskRejected
from tests.adapters.desks.conftest import serve
from tests.adapters.desks.variants import WEBHOOK_DESK

FIELDS = {"title": "HighCPU on web-01", "description": "CPU > 95%", "priority": "P2"}


@pytest.fixture
async def tickets() -> AsyncIterator[tuple[web.Application, str]]:
    runner, url = await serve(webhook.make_app(token="ticket-token"))
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make(url: str, session: aiohttp.ClientSession, **config: Any) -> WebhookDesk:
    return WebhookConfig.model_validate(WEBHOOK_DESK | {"url": url} | config).build("tickets", session)


@pytest.mark.parametrize(
    ("expression", "translated"),
    [
        ("ticket.id", "ticket.id"),
        ("$.ticket.id", '"ticket"."id"'),
        ("$['tickets'][0].number", '"tickets"[0]."number"'),
        ('$["a b"].c', '"a b"."c"'),
        ("$", "@"),
    ],
)
def test_jsonpath_becomes_jmespath(expression: str, translated: str) -> None:
    """JMESPath passes through; a simple JSONPath ($.a, $['a'], [n]) is translated to JMESPath."""
    assert to_jmespath(expression) == translated


async def test_each_action_is_its_templated_request(
    tickets: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """open, find, note, update, resolve, reopen and state send exactly the configured requests."""
    app, url = tickets
    desk = make(url, session)
    ref = await desk.open("r:a:1", FIELDS)
    assert ref == TicketRef(id="1", display="T-0001", url="https://tickets.example.com/t/1")
    assert await desk.find("r:a:1") == ref
    await desk.note(ref, 'a "quoted" note')
    await desk.update(ref, {"priority": "P1"})
    await desk.resolve(ref, "cleared", {})
    resolved = await desk.state(ref)
    await desk.reopen(ref, "again")
    assert (resolved.phase, resolved.raw_state, resolved.fields["resolution"]) == (
        TicketPhase.RESOLVED,
        "resolved",
        "cleared",
    )
    sent = [(r["method"], r["path"], r["query"], r["body"]) for r in app[webhook.STORE].requests]
    assert sent == [
        (
            "POST",
            "/api/tickets",
            {},
            {"title": "HighCPU on web-01", "description": "CPU > 95%", "priority": "P2", "correlation_id": "r:a:1"},
        ),
        ("GET", "/api/tickets", {"correlation_id": "r:a:1"}, None),
        ("POST", "/api/tickets/1/comments", {}, {"body": marked('a "quoted" note')}),
        ("PATCH", "/api/tickets/1", {}, {"priority": "P1"}),
        ("PATCH", "/api/tickets/1", {}, {"status": "resolved", "resolution": "cleared"}),
        ("GET", "/api/tickets/1", {}, None),
        ("PATCH", "/api/tickets/1", {}, {"status": "open", "comment": marked("again")}),
    ]


async def test_without_find_or_state_the_desk_says_so(
    tickets: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """No find action: find() is None (nothing to adopt); no state action: state() is DeskRejected."""
    _, url = tickets
    desk = make(url, session, find=None, state=None, update=None)
    ref = await desk.open("r:a:1", FIELDS)
    assert await desk.find("r:a:1") is None
    await desk.update(ref, {"priority": "P1"})  # no update action: skipped
    with pytest.raises(DeskRejected, match="no state action"):
        await desk.state(ref)


async def test_an_answer_without_the_ticket_id_is_rejected_not_retried(
    tickets: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """An id expression that reads nothing is DeskRejected with the answer: a retry would open another ticket."""
    _, url = tickets
    desk = make(url, session, open={**WEBHOOK_DESK["open"], "id": "ticket.ident"})
    with pytest.raises(DeskRejected, match="has no ticket id") as info:
        await desk.open("r:a:1", FIELDS)
    assert '"number": "T-0001"' in info.value.answer


async def test_errors_carry_the_services_message(
    tickets: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """A 400 from the service is DeskRejected with its error.message; a closed ticket's 409 is rejected too."""
    app, url = tickets
    desk = make(url, session)
    with pytest.raises(DeskRejected, match="priority must be one of") as info:
        await desk.open("r:a:1", FIELDS | {"priority": "urgent"})
    assert info.value.status == 400
    ref = await desk.open("r:a:1", FIELDS)
    app[webhook.STORE].tickets[1]["status"] = "closed"
    assert (await desk.state(ref)).phase is TicketPhase.CLOSED
    with pytest.raises(DeskRejected, match="is closed") as info:
        await desk.reopen(ref, "again")
    assert info.value.status == 409


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"open": {"path": "/api/tickets"}}, "open needs `id`"),
        ({"state": {"path": "/x", "method": "GET"}}, "state needs `state`"),
        ({"note": {"path": "/t/{{ ticket.id"}}, "template does not compile"),
        ({"find": {"path": "/t", "id": "tickets[0"}}, "does not compile"),
        ({"find": {"path": "/t", "id": "$..id"}}, "unsupported JSONPath"),
        ({"user": "u"}, "Basic auth needs both"),
        ({"user": "u", "password": "p"}, "not both"),
        ({"verify": False}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses_what_cannot_work(change: dict[str, Any], message: str) -> None:
    """Actions need their expressions, templates and expressions must compile, auth is one kind, keys are known."""
    with pytest.raises(pydantic.ValidationError, match=message):
        WebhookConfig.model_validate(WEBHOOK_DESK | {"url": "https://tickets.example.com"} | change)


async def test_simulator_validates_like_a_small_rest_service(tickets: tuple[web.Application, str]) -> None:
    """Unknown keys, a missing title, resolving without a resolution and a bad token are refused with JSON errors."""
    _, url = tickets
    headers = {"Authorization": "Bearer ticket-token"}
    async with aiohttp.ClientSession(headers=headers) as client:
        async with client.post(f"{url}/api/tickets", json={"title": "x", "colour": "red"}) as answer:
            assert (answer.status, (await answer.json())["error"]["code"]) == (400, "validation_failed")
        async with client.post(f"{url}/api/tickets", json={"description": "x"}) as answer:
            assert (await answer.json())["error"]["message"] == "title is required"
        async with client.post(f"{url}/api/tickets", json={"title": "x"}) as answer:
            assert answer.status == 201 and answer.headers["Location"].endswith("/api/tickets/1")
        async with client.patch(f"{url}/api/tickets/1", json={"status": "resolved"}) as answer:
            assert (await answer.json())["error"]["message"] == "resolution is required to resolve a ticket"
        async with client.get(f"{url}/api/tickets/42") as answer:
            assert answer.status == 404
    async with aiohttp.ClientSession() as client, client.get(f"{url}/api/tickets") as answer:
        assert (answer.status, (await answer.json())["error"]["code"]) == (401, "unauthorized")
