"""Remedy / Helix: JWT session, the interface-form calls, AR error classification, and the simulator's workflow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.desks.events import marked  # a work log as the desk writes it: MARKER at the end
from adapters.desks.remedy import RemedyConfig, RemedyDesk
from adapters.simulators import remedy
from adapters.simulators.remedy_qual import QualificationError, parse
from adapters.simulators.remedy_store import ENUMS, INCIDENT_FIELDS
from bridge.core.desk import TicketPhase, TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from tests.adapters.desks.conftest import serve

FIELDS = {
    "First_Name": "Bridge",
    "Last_Name": "Integration",
    "Description": "HighCPU on web-01",
    "Detailed_Decription": "CPU > 95% for 10m",
    "Impact": "2-Significant/Large",
    "Urgency": "1-Critical",
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[web.Application, str]]:
    runner, url = await serve(remedy.make_app(user="Bridge", password="bridge-pw"))
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make(url: str, session: aiohttp.ClientSession, **config: Any) -> RemedyDesk:
    base = {"kind": "remedy", "url": url, "user": "Bridge", "password": "bridge-pw"}
    return RemedyConfig.model_validate(base | config).build("remedy", session)


def calls(app: web.Application) -> list[tuple[str, str, dict[str, str], Any, int | None]]:
    return [(r["method"], r["path"], r["query"], r["body"], r["status"]) for r in app[remedy.STORE].requests]


async def test_round_trip_makes_exactly_the_documented_calls(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """Login, create through _Create with z1D_Action, work log, PUT updates, resolve, reopen, logout on aclose."""
    app, url = server
    desk = make(url, session)
    ref = await desk.open("r:a:1", FIELDS)
    assert (ref.id, ref.display) == ("INC000000001000", "INC000000000001"), "entry id and number differ"
    await desk.note(ref, "first line\nsecond line")
    await desk.resolve(ref, "cleared at source", {})
    await desk.reopen(ref, "fired again")
    await desk.aclose()
    interface = "/api/arsys/v1/entry/HPD:IncidentInterface/INC000000001000"
    worklog = "/api/arsys/v1/entry/HPD:WorkLog"
    log = {"Incident Number": "INC000000000001", "Work Log Type": "General Information"}
    log |= {"View Access": "Internal", "Secure Work Log": "No"}
    assert calls(app) == [
        ("POST", "/api/jwt/login", {}, None, 200),
        (
            "POST",
            "/api/arsys/v1/entry/HPD:IncidentInterface_Create",
            {"fields": "values(Incident_Entry_ID,Incident Number)"},
            {
                "values": {
                    "Status": "Assigned",
                    "Reported Source": "Systems Management",
                    "Service_Type": "Infrastructure Event",
                    **FIELDS,
                    "Vendor Ticket Number": "r:a:1",
                    "z1D_Action": "CREATE",
                }
            },
            201,
        ),
        (
            "POST",
            worklog,
            {},
            {"values": log | {"Description": "first line", "Detailed Description": marked("first line\nsecond line")}},
            201,
        ),
        (
            "PUT",
            interface,
            {},
            {
                "values": {
                    "Status_Reason": "Automated Resolution Reported",
                    "Status": "Resolved",
                    "Resolution": "cleared at source",
                }
            },
            204,
        ),
        ("PUT", interface, {}, {"values": {"Status": "In Progress", "Status_Reason": None}}, 204),
        (
            "POST",
            worklog,
            {},
            {"values": log | {"Description": "fired again", "Detailed Description": marked("fired again")}},
            201,
        ),
        ("POST", "/api/jwt/logout", {}, None, 204),
    ]
    record = app[remedy.STORE].incident("INC000000001000|INC000000001000")
    assert (record["Status"], record["Status_Reason"], record["Priority"], record["Priority Weight"]) == (
        "In Progress",
        None,
        "Critical",
        25,
    )
    assert app[remedy.TOKENS].live == {}, "the session was released"


async def test_find_uses_a_qualification_on_the_correlation_field(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """find() asks HPD:IncidentInterface with q='field'="id", newest first, and reads the composite Request ID."""
    app, url = server
    desk = make(url, session, correlation_field="Vendor Ticket Number")
    first = await desk.open('r:"quoted":1', FIELDS)
    second = await desk.open('r:"quoted":1', FIELDS)
    assert await desk.find('r:"quoted":1') == second != first
    query = [r["query"] for r in app[remedy.STORE].requests if r["method"] == "GET"][-1]
    assert query["q"] == '\'Vendor Ticket Number\'="r:""quoted"":1"'
    assert query["sort"] == "Submit Date.desc,Incident Number.desc"


async def test_missing_required_fields_are_refused_before_any_call(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """A route without customer, impact or urgency is DeskRejected naming them; nothing is sent."""
    app, url = server
    desk = make(url, session, defaults={})
    with pytest.raises(DeskRejected, match="no Status, Reported Source, Service_Type"):
        await desk.open("r:a:1", FIELDS)
    assert calls(app) == []


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, [{"messageType": "ERROR", "messageText": "No matching records", "messageNumber": 1291053}], DeskRejected),
        (
            500,
            [{"messageType": "ERROR", "messageText": "Timeout during database update", "messageNumber": 93}],
            DeskTransient,
        ),
        (500, {"messageType": "ERROR", "messageText": "RPC call failed", "messageNumber": 91}, DeskTransient),
        (500, "<html>proxy error</html>", DeskTransient),
        (400, [{"messageType": "ERROR", "messageText": "Field does not exist", "messageNumber": 314}], DeskRejected),
    ],
)
async def test_ar_errors_are_classified_by_number(
    session: aiohttp.ClientSession, status: int, body: Any, error: type[Exception]
) -> None:
    """A 500 with a workflow error number is rejected; server-side failures (90-94, 552) and bare 500s are transient."""

    async def login(request: web.Request) -> web.Response:
        return web.Response(text="token", content_type="text/plain")

    async def fail(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/api/jwt/login", login)
    app.router.add_put("/api/arsys/v1/entry/HPD:IncidentInterface/{id}", fail)
    runner, url = await serve(app)
    try:
        desk = make(url, session)
        with pytest.raises(error) as info:
            await desk.update(TicketRef(id="INC1", display="INC1"), {"Urgency": "2-High"})
        assert getattr(info.value, "status", None) == status
        if not isinstance(body, str):
            number = (body if isinstance(body, dict) else body[0])["messageNumber"]
            assert f"ARERR {number}" in str(info.value)
    finally:
        await runner.cleanup()


async def test_refused_login_is_rejected_without_the_password(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """A login answered with ARERR 623 is DeskRejected; the kept form masks the password."""
    _, url = server
    with pytest.raises(DeskRejected, match="login refused: ARERR 623 Authentication failed") as info:
        await make(url, session, password="wrong-pw").find("r:a:1")
    assert info.value.request["form"] == {"username": "Bridge", "password": "********"}
    assert "wrong-pw" not in repr(info.value.record())


async def test_workflow_rules_of_the_simulator(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """Unknown people, a status reason from another status, and resolving unassigned incidents are refused."""
    app, url = server
    desk = make(url, session)
    with pytest.raises(DeskRejected, match="ARERR 1291053"):
        await desk.open("r:a:1", FIELDS | {"First_Name": "Nobody"})
    ref = await desk.open("r:a:1", FIELDS)
    with pytest.raises(DeskRejected, match="ARERR 1291034 Incorrect Status reason"):
        await desk.resolve(ref, "x", {"Status_Reason": "Client Hold"})
    unassigned = await make(
        url, session, defaults={"Status": "New", "Reported Source": "Email", "Service_Type": "User Service Request"}
    ).open("r:b:1", FIELDS)
    with pytest.raises(DeskRejected, match="assigned group is required"):
        await desk.resolve(unassigned, "x", {})
    app[remedy.STORE].incident(ref.id)["Status"] = "Closed"
    assert (await desk.state(ref)).phase is TicketPhase.CLOSED
    with pytest.raises(DeskRejected, match="cannot be modified"):
        await desk.reopen(ref, "again")


async def test_state_shows_display_and_create_form_names(
    server: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """state() fields carry both `Service Type` and `Service_Type`, so field ownership compares like with like."""
    _, url = server
    desk = make(url, session)
    ref = await desk.open("r:a:1", FIELDS)
    state = await desk.state(ref)
    assert state.fields["Service Type"] == state.fields["Service_Type"] == "Infrastructure Event"
    assert state.fields["Detailed_Decription"] == FIELDS["Detailed_Decription"]
    assert (state.phase, state.raw_state) == (TicketPhase.OPEN, "Assigned")


@pytest.mark.parametrize(
    ("qualification", "expected"),
    [
        ("'Status' = \"Resolved\"", ["b"]),
        ("'Status' < \"Resolved\"", ["a", "c"]),
        ("'Description' LIKE \"%CPU%\" AND NOT 'Status' = \"New\"", ["a"]),
        ("'Assignee' = $NULL$ OR 'Impact' = \"1-Extensive/Widespread\"", ["a", "c"]),
        ("('Status' = \"New\" OR 'Status' = \"Resolved\") AND 'Description' != \"memory\"", ["c"]),
        ("", ["a", "b", "c"]),
    ],
)
def test_qualifications_filter_like_ar_system(qualification: str, expected: list[str]) -> None:
    """Quoted field labels, AND/OR/NOT, LIKE with %, $NULL$ and enum fields compared by ordinal."""
    rows: list[dict[str, Any]] = [
        {"id": "a", "Status": "Assigned", "Description": "HighCPU", "Assignee": None, "Impact": IMPACT},
        {"id": "b", "Status": "Resolved", "Description": "memory", "Assignee": "Allen", "Impact": IMPACT},
        {"id": "c", "Status": "New", "Description": "disk CPU", "Assignee": None, "Impact": IMPACT},
    ]
    test = parse(qualification, sorted(INCIDENT_FIELDS), ENUMS)
    assert [row["id"] for row in rows if test(row)] == expected


IMPACT = "2-Significant/Large"


def test_qualification_errors_are_ar_errors() -> None:
    """An unknown field is ARERR 314; an unreadable line ARERR 1587."""
    with pytest.raises(QualificationError) as info:
        parse("'Nope' = \"x\"", sorted(INCIDENT_FIELDS), ENUMS)
    assert (info.value.number, info.value.appended) == (314, "Nope")
    with pytest.raises(QualificationError) as info:
        parse("'Status' = ", sorted(INCIDENT_FIELDS), ENUMS)
    assert info.value.number == 1587


def test_config_is_strict() -> None:
    """Unknown keys and non-http URLs are refused; the password is a secret."""
    base = {"kind": "remedy", "url": "https://remedy.example.com:8443/", "user": "u", "password": "p"}
    assert RemedyConfig.model_validate(base).url == "https://remedy.example.com:8443"
    assert "p'" not in repr(RemedyConfig.model_validate(base).password)
    for bad in ({"verify": False}, {"url": "remedy.example.com"}, {"view_access": "Everyone"}):
        with pytest.raises(ValueError):
            RemedyConfig.model_validate(base | bad)
