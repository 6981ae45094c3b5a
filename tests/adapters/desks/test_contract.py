"""The desk Protocol contract: every adapter, against its simulator, behaves the same way.

Parametrised over tests.adapters.desks.variants.VARIANTS (ServiceNow Basic and OAuth, ServiceNow Event
Management, Jira Cloud, Jira Data Center, JSM, Remedy, the generic webhook, JSM Operations). Retries are always
those of bridge.delivery.guard (`retried`): the adapters themselves never retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import aiohttp
import pytest

from bridge.core.desk import Desk, TicketPhase, TicketRef
from bridge.core.errors import DeskAuthExpired, DeskError, DeskRejected, DeskTransient
from bridge.core.sync import DeskEvent, DeskEventKind, DeskEvents
from tests.adapters.desks.conftest import Sim, build, retried, serve
from tests.adapters.desks.pushes import receiving
from tests.adapters.desks.variants import MAX_PAYLOAD, VARIANTS

CORRELATION = "route:abc123:1"


async def failure(call: Any) -> DeskError:
    """The DeskError a call raised, checked to be safe to keep in the dead-letter stream."""
    with pytest.raises(DeskError) as info:
        await call
    error = info.value
    record = repr(error.record())
    for secret in ("s3cret", "api-token", "pat-token", "bridge-pw", "ticket-token", "client-s3cret"):
        assert secret not in record, f"{secret} leaked into the error record"
    assert "Authorization" not in record
    assert error.desk == "desk"
    return error


def only(sim: Sim) -> Any:
    tickets = sim.tickets()
    assert len(tickets) == 1, [t.display for t in tickets]
    return tickets[0]


async def test_open_note_update_resolve_reopen(sim: Sim, desk: Desk) -> None:
    """One ticket carries the correlation id, the note, the update, the resolution and the reopening."""
    ref = await desk.open(CORRELATION, sim.variant.fields)
    ticket = only(sim)
    assert (ticket.id, ticket.display, ticket.correlation, ticket.phase) == (ref.id, ref.display, CORRELATION, "open")
    assert (await desk.state(ref)).phase is TicketPhase.OPEN

    await desk.note(ref, "first note: disk at 97%")
    assert "first note: disk at 97%" in only(sim).notes

    await desk.update(ref, sim.variant.update)
    shown = (await desk.state(ref)).fields
    assert {k: shown.get(k) for k in sim.variant.update} == sim.variant.update

    await desk.resolve(ref, "cleared at source", {})
    resolved = only(sim)
    assert resolved.phase == "resolved"
    assert "cleared at source" in [*resolved.notes, resolved.resolution]
    assert (await desk.state(ref)).phase is TicketPhase.RESOLVED

    await desk.reopen(ref, "fired again within the window")
    reopened = only(sim)
    assert reopened.phase == "open" and reopened.id == ref.id
    assert "fired again within the window" in reopened.notes
    assert (await desk.state(ref)).phase is TicketPhase.OPEN


async def test_find_answers_none_or_the_newest_ticket(sim: Sim, desk: Desk) -> None:
    """find() is None for an unknown correlation id, else the newest ticket that carries it."""
    assert await desk.find(CORRELATION) is None
    await desk.open(CORRELATION, sim.variant.fields)
    newest = await desk.open(CORRELATION, sim.variant.fields)
    other = await desk.open("route:other:1", sim.variant.fields)
    assert await desk.find(CORRELATION) == newest
    assert await desk.find("route:other:1") == other


async def test_find_adopts_an_open_whose_answer_was_lost(sim: Sim, make_desk: Callable[..., Desk]) -> None:
    """The desk stored the ticket but the answer never came: open is transient, find returns that ticket."""
    desk = make_desk(timeout=1.0)  # long enough for the write to land on a busy machine
    assert await desk.find("warm:up:0") is None  # sign in / discover the API first
    sim.faults.set(timeout_after_commit=1)
    error = await failure(desk.open(CORRELATION, sim.variant.fields))
    assert type(error) is DeskTransient
    found = await desk.find(CORRELATION)
    assert found is not None
    ticket = only(sim)
    assert (found.id, found.display) == (ticket.id, ticket.display)
    await desk.note(found, "adopted")
    assert "adopted" in only(sim).notes
    await desk.aclose()


@pytest.mark.parametrize("switch", ["rate_limit", "fail_5xx"])
async def test_429_and_5xx_are_transient_and_retried_by_the_delivery_policy(sim: Sim, desk: Desk, switch: str) -> None:
    """429 (with its Retry-After) and 503 are DeskTransient; the delivery's retry then opens exactly one ticket."""
    assert await desk.find("warm:up:0") is None
    sim.faults.set(**{switch: 1, "retry_after": 7})
    error = await failure(desk.open(CORRELATION, sim.variant.fields))
    assert type(error) is DeskTransient
    assert error.status == (429 if switch == "rate_limit" else 503)
    assert error.retry_after == (7.0 if switch == "rate_limit" else None)
    assert error.request["method"] in ("GET", "POST") and error.answer
    assert sim.tickets() == []

    sim.faults.set(**{switch: 2, "retry_after": 0})
    ref = await retried(lambda: desk.open(CORRELATION, sim.variant.fields))
    assert only(sim).id == ref.id


async def test_no_answer_in_time_is_transient(sim: Sim, make_desk: Callable[..., Desk]) -> None:
    """A request held past the desk's timeout is DeskTransient caused by the TimeoutError."""
    desk = make_desk(timeout=0.3)
    assert await desk.find("warm:up:0") is None
    sim.faults.set(timeout=1)
    error = await failure(desk.find(CORRELATION))
    assert (type(error), error.status) == (DeskTransient, None)
    assert isinstance(error.__cause__, TimeoutError)
    await desk.aclose()


async def test_400_is_rejected(sim: Sim, desk: Desk) -> None:
    """A request the desk cannot accept (a bad value, or a body over the size limit) is DeskRejected."""
    ref = await desk.open(CORRELATION, sim.variant.fields)
    bad_note = sim.variant.bad_note
    error = await failure(
        desk.note(ref, "x" * (MAX_PAYLOAD + 1)) if bad_note else desk.update(ref, sim.variant.bad_update)
    )
    assert (type(error), error.status) == (DeskRejected, sim.variant.rejected_status)
    assert error.answer and error.request["url"].startswith(sim.url)


async def test_403_is_rejected(sim: Sim, desk: Desk) -> None:
    """A desk that forbids the write (ACL, permission, role) makes it DeskRejected; nothing is written."""
    ref = await desk.open(CORRELATION, sim.variant.fields)
    sim.variant.forbid(sim.app)
    error = await failure(desk.note(ref, "not allowed"))
    assert (type(error), error.status) == (DeskRejected, 403)
    assert "not allowed" not in only(sim).notes


async def test_404_is_rejected(sim: Sim, desk: Desk) -> None:
    """A ticket the desk does not have is DeskRejected, for reads and writes alike."""
    missing = TicketRef(id=sim.variant.missing_id, display=sim.variant.missing_id)
    for call in (desk.state(missing), desk.update(missing, sim.variant.update)):
        error = await failure(call)
        assert (type(error), error.status) == (DeskRejected, sim.variant.missing_status)


async def test_expired_auth_signs_in_again_once(sim: Sim, desk: Desk) -> None:
    """A 401 on credentials that worked is DeskAuthExpired; the next call (the delivery's one retry) signs in again."""
    ref = await desk.open(CORRELATION, sim.variant.fields)
    sign_ins = sim.variant.sign_ins(sim.app) if sim.variant.sign_ins else None
    sim.variant.expire(sim.app)
    error = await failure(desk.note(ref, "lost to the expiry"))
    assert (type(error), error.status) == (DeskAuthExpired, 401)
    await desk.note(ref, "after expiry")
    sim.variant.expire(sim.app)
    await retried(lambda: desk.note(ref, "after the second expiry"))
    notes = only(sim).notes
    assert (notes.count("after expiry"), notes.count("after the second expiry")) == (1, 1)
    assert "lost to the expiry" not in notes
    if sign_ins is not None and sim.variant.sign_ins:
        assert sim.variant.sign_ins(sim.app) == sign_ins + 2, "signed in once after each expiry"


async def test_auth_refused_again_is_final(sim: Sim, desk: Desk) -> None:
    """When signing in again fails too, the delivery policy stops after one retry: dead-letter, not transient."""
    ref = await desk.open(CORRELATION, sim.variant.fields)
    sim.variant.revoke(sim.app)
    before = len(sim.requests())
    with pytest.raises((DeskAuthExpired, DeskRejected)) as info:
        await retried(lambda: desk.note(ref, "never written"))
    assert info.value.status == 401
    assert "never written" not in only(sim).notes
    assert len(sim.requests()) - before <= 4, "no retry storm"


async def test_custom_ca_is_trusted_and_verification_stays_on(
    sim: Sim, session: aiohttp.ClientSession, private_ca: Any
) -> None:
    """With ca_file the desk trusts a private CA; without it the same server's certificate is refused."""
    ca_file, server_ssl = private_ca
    runner, url = await serve(sim.variant.app(), server_ssl)
    try:
        config = sim.variant.config(url)
        trusting = build(config | {"ca_file": str(ca_file)}, session)
        assert await trusting.find(CORRELATION) is None
        error = await failure(build(config, session).find(CORRELATION))
        assert type(error) is DeskTransient
        assert isinstance(error.__cause__, aiohttp.ClientConnectorCertificateError)
        await trusting.aclose()
    finally:
        await runner.cleanup()


# -- the loop back (bridge.core.sync) ---------------------------------------------------------------


async def polled(desk: Any, since_ms: int) -> list[DeskEvent]:
    events: list[DeskEvent] = []
    cursor = None
    while True:
        page = await desk.changes_since(since_ms, cursor)
        events += page.events
        if page.cursor is None:
            return events
        cursor = page.cursor


WITH_EVENTS = [v for v in VARIANTS if v.act is not None]


def test_the_desks_without_desk_events_are_the_documented_ones() -> None:
    """docs/desks.md: ServiceNow Event Management (the instance's own alert rules drive it) reports no desk
    events; every other desk does."""
    assert {v.name for v in VARIANTS if v.act is None} == {"servicenow-em"}


@pytest.mark.parametrize("variant", WITH_EVENTS, ids=lambda v: v.name)
async def test_desk_events_a_persons_changes_polled_and_pushed_alike(sim: Sim, desk: Any) -> None:
    """Every desk with a loop back: a person's comment and resolve come out of the poll as COMMENTED and
    RESOLVED by that person, the bridge's own note as `ours`; where the desk pushes, its webhooks give
    the same events with the same event ids (so the apply step takes each change once)."""
    variant = sim.variant
    assert callable(getattr(desk, "parse_events", None)) and callable(getattr(desk, "changes_since", None))
    desk = cast(DeskEvents, desk)
    async with receiving() as got:
        if variant.push is not None:
            variant.push(sim.app).target(got.url)
        ref = await desk.open(CORRELATION, variant.fields)
        await desk.note(ref, "disk at 97%")
        variant.act(sim.app, ref.id, "jdoe", "comment")
        variant.act(sim.app, ref.id, "jdoe", "resolve")
        events = await polled(desk, 0)
        if variant.push is not None:
            await variant.push(sim.app).drained()
            pushed = {e.event_id: e for body in got.bodies for e in desk.parse_events(body, {})}
    human = [(e.kind, e.text if e.kind is DeskEventKind.COMMENTED else "") for e in events if not e.ours]
    assert (DeskEventKind.COMMENTED, "seen, on it") in human
    assert DeskEventKind.RESOLVED in {kind for kind, _ in human}, human
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    assert all(e.author.endswith("jdoe") or e.author.lower().startswith("jdoe") for e in events if not e.ours)
    assert any(e.ours and e.kind is DeskEventKind.COMMENTED for e in events), "the bridge's note is its own"
    assert all(e.ticket.id == ref.id and e.correlation_id == CORRELATION for e in events)
    if variant.push is not None:
        for event in events:
            assert event.event_id in pushed, (event, sorted(pushed))
            assert (pushed[event.event_id].kind, pushed[event.event_id].ours) == (event.kind, event.ours)
