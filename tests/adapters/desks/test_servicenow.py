"""The ServiceNow desk client against the ServiceNow simulator: exact calls, and every error translated."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest
from aiohttp import web

from adapters.desks.servicenow import ServiceNowConfig, ServiceNowDesk
from adapters.simulators.faults import FAULTS, Faults
from adapters.simulators.servicenow import STORE, make_app
from adapters.simulators.servicenow_store import ServiceNowStore
from bridge.core.desk import TicketPhase, TicketRef
from bridge.core.errors import ConfigError, DeskAuthExpired, DeskRejected, DeskTransient
from bridge.core.sync import MARKER
from tests.tls import private_ca as make_private_ca

PASSWORD = "s3cret-pw"
TABLE = "/api/now/table/incident"


@dataclass
class Sim:
    app: web.Application
    url: str

    @property
    def store(self) -> ServiceNowStore:
        return self.app[STORE]

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    def calls(self) -> list[tuple[str, str, dict[str, str], Any, int | None]]:
        return [(r["method"], r["path"], r["query"], r["body"], r["status"]) for r in self.store.requests]


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    app = make_app(user="bridge", password=PASSWORD)
    runner, port = await serve(app)
    yield Sim(app, f"http://127.0.0.1:{port}")
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_desk(sim: Sim, session: aiohttp.ClientSession) -> Callable[..., ServiceNowDesk]:
    def make(**overrides: Any) -> ServiceNowDesk:
        config = {"kind": "servicenow", "url": sim.url + "/", "user": "bridge", "password": PASSWORD}
        return ServiceNowConfig.model_validate(config | overrides).build("snow", session)

    return make


@pytest.fixture
def desk(make_desk: Callable[..., ServiceNowDesk]) -> ServiceNowDesk:
    return make_desk()


async def caught(call: Awaitable[Any]) -> Any:
    """The desk error a call raised, checked to be safe to keep in the dead-letter stream."""
    with pytest.raises((DeskTransient, DeskAuthExpired, DeskRejected)) as info:
        await call
    record = repr(info.value.record())
    assert PASSWORD not in record and "Authorization" not in record
    assert info.value.desk == "snow"
    return info.value


async def test_round_trip_makes_exactly_the_documented_calls(sim: Sim, desk: ServiceNowDesk) -> None:
    """open, find, note, update, state, resolve, reopen: each is one Table API call with the right body."""
    fields = {"short_description": "HighCPU on web-01", "impact": "2", "urgency": "2"}
    ref = await desk.open("route:abc:1", fields)
    sys_id = ref.id
    assert ref == TicketRef(id=sys_id, display="INC0010001", url=f"{sim.url}/nav_to.do?uri=incident.do?sys_id={sys_id}")
    assert await desk.find("route:abc:1") == ref
    await desk.note(ref, "first note")
    await desk.update(ref, {"urgency": "1"})
    opened = await desk.state(ref)
    await desk.resolve(ref, "cleared at source", {"description": "over"})
    resolved = await desk.state(ref)
    await desk.reopen(ref, "fired again")
    reopened = await desk.state(ref)

    assert (opened.phase, opened.raw_state, opened.fields["priority"]) == (TicketPhase.OPEN, "1", "2")
    assert opened.fields["opened_by"] == sim.store.incidents[sys_id]["opened_by"], "references as strings"
    assert (resolved.phase, resolved.fields["close_code"], resolved.fields["close_notes"]) == (
        TicketPhase.RESOLVED,
        "Solution provided",
        "cleared at source",
    )
    assert (reopened.phase, reopened.raw_state, reopened.fields["reopen_count"]) == (
        TicketPhase.OPEN,
        "2",
        "1",
    )
    assert sim.store.notes(sys_id) == [f"first note\n\n{MARKER}", f"fired again\n\n{MARKER}"]

    one = f"{TABLE}/{sys_id}"
    state_call = ("GET", one, {"sysparm_exclude_reference_link": "true"}, None, 200)
    patch = {"sysparm_fields": "sys_id"}
    assert sim.calls() == [
        (
            "POST",
            TABLE,
            {"sysparm_fields": "sys_id,number"},
            fields | {"correlation_id": "route:abc:1", "correlation_display": "alert-ticket-bridge"},
            201,
        ),
        (
            "GET",
            TABLE,
            {
                "sysparm_query": "correlation_id=route:abc:1^ORDERBYDESCsys_created_on",
                "sysparm_fields": "sys_id,number,state",
                "sysparm_limit": "1",
            },
            None,
            200,
        ),
        ("PATCH", one, patch, {"work_notes": f"first note\n\n{MARKER}"}, 200),
        ("PATCH", one, patch, {"urgency": "1"}, 200),
        state_call,
        (
            "PATCH",
            one,
            patch,
            {
                "description": "over",
                "state": "6",
                "close_code": "Solution provided",
                "close_notes": "cleared at source",
            },
            200,
        ),
        state_call,
        ("PATCH", one, patch, {"state": "2", "work_notes": f"fired again\n\n{MARKER}"}, 200),
        state_call,
    ]


async def test_find_returns_the_newest_record_or_none(desk: ServiceNowDesk) -> None:
    """find() answers the newest record with the correlation id, and None when there is none."""
    assert await desk.find("route:x:1") is None
    await desk.open("route:x:1", {"short_description": "first"})
    newest = await desk.open("route:x:1", {"short_description": "second"})
    await desk.open("route:y:1", {"short_description": "other"})
    assert await desk.find("route:x:1") == newest


async def test_resolve_uses_the_close_code_given_in_fields(sim: Sim, desk: ServiceNowDesk) -> None:
    """A close_code among the fields replaces the configured one; state is 6 whatever the fields say."""
    ref = await desk.open("c", {"short_description": "x"})
    await desk.resolve(ref, "done", {"close_code": "Workaround provided", "state": "1"})
    record = sim.store.incidents[ref.id]
    assert (record["state"], record["close_code"], record["close_notes"]) == (
        "6",
        "Workaround provided",
        "done",
    )


async def test_state_maps_closed_and_canceled_to_closed(sim: Sim, desk: ServiceNowDesk) -> None:
    """States 7 (Closed) and 8 (Canceled) are CLOSED; 3 (On Hold) is OPEN."""
    ref = await desk.open("c", {"short_description": "x"})
    for raw, phase in (("3", TicketPhase.OPEN), ("8", TicketPhase.CLOSED)):
        await desk.update(ref, {"state": raw})
        assert (await desk.state(ref)).phase == phase
    await desk.update(ref, {"state": "7", "close_code": "Duplicate", "close_notes": "dup"})
    assert (await desk.state(ref)).phase == TicketPhase.CLOSED


async def test_rate_limit_is_transient_with_retry_after(sim: Sim, desk: ServiceNowDesk) -> None:
    """429 becomes DeskTransient carrying the Retry-After seconds, the request and the answer."""
    sim.faults.set(rate_limit=1, retry_after=7)
    error = await caught(desk.open("c", {"short_description": "x"}))
    assert type(error) is DeskTransient
    assert (error.retry_after, error.status, error.action) == (7.0, 429, "open")
    assert error.request == {
        "method": "POST",
        "url": f"{sim.url}{TABLE}?sysparm_fields=sys_id,number",
        "json": {
            "short_description": "x",
            "correlation_id": "c",
            "correlation_display": "alert-ticket-bridge",
        },
    }
    assert "Rate limit exceeded" in error.answer and "Rate limit exceeded" in str(error)


async def test_unavailable_is_transient(sim: Sim, desk: ServiceNowDesk) -> None:
    """503 becomes DeskTransient without a Retry-After."""
    sim.faults.set(fail_5xx=1)
    error = await caught(desk.find("c"))
    assert (type(error), error.status, error.retry_after) == (DeskTransient, 503, None)


async def test_bad_request_is_rejected_with_request_and_answer(
    sim: Sim, make_desk: Callable[..., ServiceNowDesk]
) -> None:
    """400 (here: a table the instance does not have) becomes DeskRejected with the request and answer."""
    error = await caught(make_desk(table="u_nope").open("c", {"short_description": "x"}))
    assert (type(error), error.status) == (DeskRejected, 400)
    assert error.request["url"] == f"{sim.url}/api/now/table/u_nope?sysparm_fields=sys_id,number"
    assert "Invalid table u_nope" in error.answer


async def test_data_policy_refusal_is_rejected(sim: Sim, make_desk: Callable[..., ServiceNowDesk]) -> None:
    """403 from the data policy (a close code the instance does not know) becomes DeskRejected."""
    desk = make_desk(close_code="Fixed")
    ref = await desk.open("c", {"short_description": "x"})
    error = await caught(desk.resolve(ref, "done", {}))
    assert (type(error), error.status, error.action) == (DeskRejected, 403, "resolve")
    assert error.request["json"] == {"state": "6", "close_code": "Fixed", "close_notes": "done"}
    assert "Data Policy Exception" in error.answer
    assert sim.store.incidents[ref.id]["state"] == "1"


async def test_unknown_record_is_rejected(desk: ServiceNowDesk) -> None:
    """404 for a sys_id the instance does not have becomes DeskRejected."""
    error = await caught(desk.note(TicketRef(id="0" * 32), "hello"))
    assert (type(error), error.status) == (DeskRejected, 404)
    assert "No Record found" in error.answer


async def test_unauthorized_is_auth_expired(sim: Sim, make_desk: Callable[..., ServiceNowDesk]) -> None:
    """401, from wrong credentials or an expired session, becomes DeskAuthExpired."""
    error = await caught(make_desk(password="wrong").find("c"))
    assert (type(error), error.status) == (DeskAuthExpired, 401)
    sim.faults.set(expire_auth=1)
    error = await caught(make_desk().state(TicketRef(id="0" * 32)))
    assert (type(error), error.status) == (DeskAuthExpired, 401)


async def test_timeout_is_transient(sim: Sim, make_desk: Callable[..., ServiceNowDesk]) -> None:
    """No answer within the configured timeout becomes DeskTransient caused by the TimeoutError."""
    sim.faults.set(timeout=1)
    error = await caught(make_desk(timeout=0.3).find("c"))
    assert (type(error), error.status) == (DeskTransient, None)
    assert isinstance(error.__cause__, TimeoutError)


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    """A desk that is not listening becomes DeskTransient caused by the connect error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {"kind": "servicenow", "url": f"http://127.0.0.1:{port}", "user": "u", "password": PASSWORD}
    desk = ServiceNowConfig.model_validate(config).build("snow", session)
    error = await caught(desk.find("c"))
    assert type(error) is DeskTransient
    assert isinstance(error.__cause__, aiohttp.ClientConnectionError)


async def test_lost_answer_after_commit_is_found_by_correlation_id(
    sim: Sim, make_desk: Callable[..., ServiceNowDesk]
) -> None:
    """When the desk stored the record but the answer was lost, find() adopts that record."""
    desk = make_desk(timeout=0.3)
    sim.faults.set(timeout_after_commit=1)
    error = await caught(desk.open("route:lost:1", {"short_description": "x"}))
    assert type(error) is DeskTransient
    found = await desk.find("route:lost:1")
    assert found is not None
    assert [found.id] == list(sim.store.incidents)
    assert found.display == "INC0010001"


async def test_http_date_retry_after_and_non_json_answers(session: aiohttp.ClientSession) -> None:
    """Retry-After as an HTTP date counts the seconds until then; a 200 that is not JSON is transient."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": format_datetime(later, usegmt=True)})

    async def hibernating(request: web.Request) -> web.Response:
        return web.Response(text="<html>Instance hibernating</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get(TABLE, busy)
    app.router.add_get(TABLE + "/{sys_id}", hibernating)
    runner, port = await serve(app)
    try:
        config = {"kind": "servicenow", "url": f"http://127.0.0.1:{port}", "user": "u", "password": PASSWORD}
        desk = ServiceNowConfig.model_validate(config).build("snow", session)
        error = await caught(desk.find("c"))
        assert 100 < error.retry_after <= 120
        error = await caught(desk.state(TicketRef(id="a" * 32)))
        assert (type(error), error.status) == (DeskTransient, 200)
        assert "hibernating" in error.answer
    finally:
        await runner.cleanup()


def test_config_is_strict_and_normalised() -> None:
    """Unknown keys, URLs with credentials and non-positive timeouts are refused; a trailing / is dropped."""
    base = {"kind": "servicenow", "url": "https://acme.service-now.com/", "user": "u", "password": "p"}
    assert ServiceNowConfig.model_validate(base).url == "https://acme.service-now.com"
    assert "p" not in repr(ServiceNowConfig.model_validate(base).password)
    for bad in (
        {"verify": False},
        {"url": "https://u:p@acme.service-now.com"},
        {"url": "acme.service-now.com"},
        {"timeout": 0},
    ):
        with pytest.raises(pydantic.ValidationError):
            ServiceNowConfig.model_validate(base | bad)


async def test_unreadable_ca_file_is_a_config_error(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A ca_file that cannot be read fails at build time, naming the desk."""
    config = ServiceNowConfig.model_validate(
        {
            "kind": "servicenow",
            "url": "https://x",
            "user": "u",
            "password": "p",
            "ca_file": str(tmp_path / "no.pem"),
        }
    )
    with pytest.raises(ConfigError, match=r"desks\.snow\.ca_file"):
        config.build("snow", session)


async def test_custom_ca_is_trusted_and_verification_stays_on(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """With ca_file the desk trusts a private CA; without it the same server's certificate is refused."""
    ca_file, server_ssl = _private_ca(tmp_path)
    app = make_app(user="u", password=PASSWORD)
    runner, port = await serve(app, server_ssl)
    try:
        base = {"kind": "servicenow", "url": f"https://127.0.0.1:{port}", "user": "u", "password": PASSWORD}
        trusting = ServiceNowConfig.model_validate(base | {"ca_file": str(ca_file)}).build("snow", session)
        assert await trusting.find("c") is None
        error = await caught(ServiceNowConfig.model_validate(base).build("snow", session).find("c"))
        assert type(error) is DeskTransient
        assert isinstance(error.__cause__, aiohttp.ClientConnectorCertificateError)
    finally:
        await runner.cleanup()


def _private_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    pytest.importorskip("cryptography")
    return make_private_ca(tmp_path)
