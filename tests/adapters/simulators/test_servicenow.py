"""The ServiceNow simulator speaks the Table API's wire format, rules, errors and injected faults."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.simulators.faults import FAULTS, Faults
from adapters.simulators.servicenow import STORE, make_app
from adapters.simulators.servicenow_query import parse
from adapters.simulators.servicenow_store import INCIDENT_FIELDS

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
TABLE = "/api/now/table/incident"
UNAUTHENTICATED = {
    "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
    "status": "failure",
}
NOT_FOUND = {
    "error": {
        "message": "No Record found",
        "detail": "Record doesn't exist or ACL restricts the record retrieval",
    },
    "status": "failure",
}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def app() -> web.Application:
    return make_app()


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app)) as client:
        yield client


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    async with client.post(TABLE, json=fields, headers=AUTH) as response:
        assert response.status == 201, await response.text()
        result: dict[str, Any] = (await response.json())["result"]
        return result


async def patch(client: Client, sys_id: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    async with client.patch(f"{TABLE}/{sys_id}", json=fields, headers=AUTH) as response:
        return response.status, await response.json()


async def query(client: Client, table: str = "incident", **params: str) -> list[dict[str, Any]]:
    async with client.get(f"/api/now/table/{table}", params=params, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        rows: list[dict[str, Any]] = (await response.json())["result"]
        return rows


# -- records -------------------------------------------------------------------------------------


async def test_create_answers_201_location_and_string_values(client: Client) -> None:
    """POST stores strings only, ignores unknown fields, overrides priority and sets Location."""
    body = {"short_description": "disk full", "impact": 2, "urgency": "1", "priority": "5", "u_x": "y"}
    async with client.post(TABLE, json=body, headers=AUTH) as response:
        assert response.status == 201
        record = (await response.json())["result"]
        location = response.headers["Location"]
    assert re.fullmatch(r"[0-9a-f]{32}", record["sys_id"])
    assert location == str(client.make_url(f"{TABLE}/{record['sys_id']}"))
    assert record["number"] == "INC0010001"
    assert (record["impact"], record["urgency"], record["priority"]) == ("2", "1", "2")
    assert (record["state"], record["incident_state"], record["active"]) == ("1", "1", "true")
    assert record["sys_mod_count"] == "0"
    assert record["sys_created_on"] == record["opened_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["sys_created_on"])
    assert "u_x" not in record
    assert record["opened_by"]["link"].endswith("/api/now/table/sys_user/" + record["opened_by"]["value"])
    assert all(isinstance(v, str) for k, v in record.items() if k != "opened_by" and k != "sys_domain")
    assert (await create(client, short_description="second"))["number"] == "INC0010002"


@pytest.mark.parametrize(
    ("impact", "urgency", "cell_3_3", "priority"),
    [
        ("1", "1", "4", "1"),
        ("2", "2", "4", "3"),
        ("1", "3", "4", "3"),
        ("3", "3", "4", "4"),
        ("3", "3", "5", "5"),
    ],
)
async def test_priority_follows_the_lookup_rules(impact: str, urgency: str, cell_3_3: str, priority: str) -> None:
    """Priority is computed from impact x urgency; the 3/3 cell is configurable."""
    async with TestClient(TestServer(make_app(priority_3_3=cell_3_3))) as client:
        record = await create(client, impact=impact, urgency=urgency)
    assert record["priority"] == priority


async def test_sysparm_fields_and_reference_links(client: Client) -> None:
    """sysparm_fields limits the answer; sysparm_exclude_reference_link turns references into strings."""
    sys_id = (await create(client, short_description="x", assignment_group="a" * 32))["sys_id"]
    async with client.get(
        f"{TABLE}/{sys_id}", params={"sysparm_fields": "number,assignment_group,nope"}, headers=AUTH
    ) as response:
        assert (await response.json())["result"] == {
            "number": "INC0010001",
            "assignment_group": {
                "link": str(client.make_url("/api/now/table/sys_user_group/" + "a" * 32)),
                "value": "a" * 32,
            },
        }
    plain = await query(client, sysparm_fields="assignment_group", sysparm_exclude_reference_link="true")
    assert plain == [{"assignment_group": "a" * 32}]


async def test_bad_credentials_answer_401_with_the_platform_body(client: Client) -> None:
    """Wrong or missing credentials get 401 and ServiceNow's 'User Not Authenticated' body."""
    async with client.get(
        TABLE, headers={"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    ) as response:
        assert response.status == 401
        assert await response.json() == UNAUTHENTICATED
    async with client.get(TABLE) as response:
        assert response.status == 401
        assert await response.json() == UNAUTHENTICATED


async def test_resolve_without_close_fields_is_refused_by_the_data_policy(client: Client, app: web.Application) -> None:
    """State 6 without close_code and close_notes is a 403 data policy error and changes nothing."""
    sys_id = (await create(client, short_description="x"))["sys_id"]
    status, body = await patch(client, sys_id, state="6")
    assert status == 403
    assert body == {
        "error": {
            "message": "Operation Failed",
            "detail": "Data Policy Exception: \n\tThe following fields are mandatory: Resolution code, Close notes",
        },
        "status": "failure",
    }
    status, body = await patch(client, sys_id, state="7", close_code="Solution provided")
    assert status == 403
    assert body["error"]["detail"].endswith("mandatory: Close notes")
    status, body = await patch(client, sys_id, state="6", close_code="Fixed it", close_notes="done")
    assert status == 403, "a close_code outside the choice list is refused too"
    assert "Fixed it" in body["error"]["detail"]
    assert app[STORE].incidents[sys_id]["state"] == "1"
    assert app[STORE].incidents[sys_id]["sys_mod_count"] == "0"


async def test_resolve_close_and_reopen_maintain_the_derived_fields(client: Client) -> None:
    """Resolving sets resolved_at, closing clears active, reopening counts and clears resolution times."""
    sys_id = (await create(client, short_description="x"))["sys_id"]
    status, body = await patch(client, sys_id, state="6", close_code="Solution provided", close_notes="ok")
    resolved = body["result"]
    assert status == 200
    assert (resolved["state"], resolved["incident_state"], resolved["active"]) == ("6", "6", "true")
    assert resolved["resolved_at"] != "" and resolved["sys_mod_count"] == "1"
    _, body = await patch(client, sys_id, state="2")
    reopened = body["result"]
    assert (reopened["state"], reopened["reopen_count"], reopened["resolved_at"]) == ("2", "1", "")
    _, body = await patch(client, sys_id, state="7", close_notes="closing")
    assert (body["result"]["state"], body["result"]["active"]) == ("7", "false")
    assert body["result"]["closed_at"] != ""


async def test_put_updates_like_patch_and_unchanged_saves_do_not_count(client: Client) -> None:
    """PUT has PATCH semantics; an update that changes nothing does not bump sys_mod_count."""
    sys_id = (await create(client, short_description="x"))["sys_id"]
    async with client.put(f"{TABLE}/{sys_id}", json={"urgency": "1"}, headers=AUTH) as response:
        assert response.status == 200
        assert (await response.json())["result"]["sys_mod_count"] == "1"
    _, body = await patch(client, sys_id, urgency="1", unknown_field="z")
    assert body["result"]["sys_mod_count"] == "1"


async def test_journal_fields_append_rows_and_read_back_empty(client: Client, app: web.Application) -> None:
    """work_notes and comments append sys_journal_field rows and read back as ''."""
    sys_id = (await create(client, short_description="x", work_notes="opened"))["sys_id"]
    _, body = await patch(client, sys_id, work_notes="second")
    assert body["result"]["work_notes"] == "" and body["result"]["sys_mod_count"] == "1"
    await patch(client, sys_id, comments="for the caller")
    rows = await query(
        client,
        "sys_journal_field",
        sysparm_query=f"element_id={sys_id}^element=work_notes^ORDERBYDESCsys_created_on",
    )
    assert [r["value"] for r in rows] == ["second", "opened"]
    assert all(r["name"] == "incident" and r["element_id"] == sys_id for r in rows)
    assert app[STORE].notes(sys_id, "comments") == ["for the caller"]


async def test_encoded_queries_filter_sort_and_page(client: Client) -> None:
    """=, !=, IN, NOT IN, LIKE, STARTSWITH, ^OR, ORDERBYDESC, limit and offset with X-Total-Count."""
    for n, category in enumerate(["network", "database", "software"]):
        await create(client, short_description=f"alert {n}", category=category, correlation_id=f"am:{n}")

    async def numbers(q: str, **params: str) -> list[str]:
        return [r["number"][-1] for r in await query(client, sysparm_query=q, **params)]

    assert await numbers("correlation_id=am:1") == ["2"]
    assert await numbers("category!=network") == ["2", "3"]
    assert await numbers("categoryINnetwork,software") == ["1", "3"]
    assert await numbers("categoryNOT INnetwork,software") == ["2"]
    assert await numbers("short_descriptionLIKEert 2") == ["3"]
    assert await numbers("correlation_idSTARTSWITHam:^category=database^ORcategory=network") == ["1", "2"]
    assert await numbers("ORDERBYDESCnumber") == ["3", "2", "1"]
    assert await numbers("bogus_field=1^category=software") == ["3"], "unknown fields are ignored"
    async with client.get(
        TABLE,
        params={"sysparm_query": "ORDERBYnumber", "sysparm_limit": "1", "sysparm_offset": "1"},
        headers=AUTH,
    ) as response:
        assert response.headers["X-Total-Count"] == "3"
        assert 'rel="next"' in response.headers["Link"] and 'rel="prev"' in response.headers["Link"]
        assert [r["number"] for r in (await response.json())["result"]] == ["INC0010002"]


def test_or_binds_tighter_than_and() -> None:
    """a^ORb^c reads as (a OR b) AND c; ORDERBY terms become the sort order."""
    q = parse("state=1^ORstate=2^active=true^ORDERBYDESCsys_created_on", INCIDENT_FIELDS)
    assert [[c.field for c in group] for group in q.groups] == [["state", "state"], ["active"]]
    assert q.order == (("sys_created_on", True),)
    assert q.matches({"state": "2", "active": "true"})
    assert not q.matches({"state": "2", "active": "false"})


async def test_unknown_record_and_empty_results(client: Client) -> None:
    """Unknown sys_id is 404 with the platform body; an empty list is [] on v2 and 404 on v1."""
    async with client.get(f"{TABLE}/{'0' * 32}", headers=AUTH) as response:
        assert response.status == 404
        assert await response.json() == NOT_FOUND
    status, body = await patch(client, "0" * 32, work_notes="x")
    assert (status, body) == (404, NOT_FOUND)
    async with client.get(TABLE, params={"sysparm_query": "number=nope"}, headers=AUTH) as response:
        assert (response.status, await response.json()) == (200, {"result": []})
        assert response.headers["X-Total-Count"] == "0"
    async with client.get("/api/now/v1/table/incident", params={"sysparm_query": "number=x"}, headers=AUTH) as r:
        assert (r.status, await r.json()) == (404, NOT_FOUND)


async def test_bad_requests_use_the_error_envelope(client: Client) -> None:
    """Unknown tables, unreadable bodies and unknown resources answer 400 in the platform's envelope."""
    async with client.get("/api/now/table/nope", headers=AUTH) as response:
        assert response.status == 400
        assert (await response.json())["error"]["detail"] == "Invalid table nope"
    async with client.post(TABLE, data=b"{not json", headers=AUTH) as response:
        assert response.status == 400
        assert (await response.json())["error"]["message"] == "Exception while reading request"
    async with client.get("/api/now/nothing/here", headers=AUTH) as response:
        assert response.status == 400
        assert (await response.json())["status"] == "failure"


# -- faults --------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_then_recovers(client: Client, app: web.Application) -> None:
    """rate_limit=N: the next N requests get 429, Retry-After and the documented body; then it recovers."""
    app[FAULTS].set(rate_limit=2, retry_after=7)
    for _ in range(2):
        async with client.get(TABLE, headers=AUTH) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "7"
            assert {"X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Rule"} <= set(response.headers)
            assert (await response.json())["error"]["message"] == "Rate limit exceeded"
    async with client.get(TABLE, headers=AUTH) as response:
        assert response.status == 200


async def test_fail_5xx_answers_503_in_the_envelope(client: Client, app: web.Application) -> None:
    """fail_5xx=1: one 503 with the platform's error envelope, and nothing is stored."""
    app[FAULTS].set(fail_5xx=1)
    async with client.post(TABLE, json={"short_description": "x"}, headers=AUTH) as response:
        assert response.status == 503
        assert (await response.json())["status"] == "failure"
    assert app[STORE].incidents == {}


async def test_expire_auth_answers_401_even_with_good_credentials(client: Client, app: web.Application) -> None:
    """expire_auth=1: one 401 as if the session expired, then the same credentials work again."""
    app[FAULTS].set(expire_auth=1)
    async with client.get(TABLE, headers=AUTH) as response:
        assert (response.status, await response.json()) == (401, UNAUTHENTICATED)
    async with client.get(TABLE, headers=AUTH) as response:
        assert response.status == 200


async def test_timeout_holds_the_request_and_stores_nothing(client: Client, app: web.Application) -> None:
    """timeout=1: the request hangs past the client's timeout and is never processed."""
    app[FAULTS].set(timeout=1)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            TABLE, json={"short_description": "x"}, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    assert app[STORE].incidents == {}
    assert app[FAULTS].timeout == 0


async def test_timeout_after_commit_stores_the_record_but_loses_the_answer(
    client: Client, app: web.Application
) -> None:
    """timeout_after_commit=1: the write is stored, the answer never arrives; reads are not affected."""
    app[FAULTS].set(timeout_after_commit=1)
    assert (await query(client)) == [], "a read does not consume a write fault"
    with pytest.raises(asyncio.TimeoutError):
        await client.post(TABLE, json={"correlation_id": "c-1"}, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.2))
    assert [r["correlation_id"] for r in app[STORE].incidents.values()] == ["c-1"]
    assert app[STORE].requests[-1]["status"] is None, "the log shows the answer was withheld"


async def test_latency_delays_every_request(client: Client, app: web.Application) -> None:
    """latency_ms: a request cannot be answered sooner than the injected latency."""
    app[FAULTS].set(latency_ms=1000)
    with pytest.raises(asyncio.TimeoutError):
        await client.get(TABLE, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.1))


async def test_control_endpoints_drive_faults_and_reset(client: Client, app: web.Application) -> None:
    """/_sim/faults sets and shows switches without auth; bad input is 400; /_sim/reset clears everything."""
    async with client.post("/_sim/faults", json={"fail_5xx": 2, "retry_after": 3}) as response:
        assert response.status == 200
        assert (await response.json())["fail_5xx"] == 2
    async with client.get("/_sim/faults") as response:
        shown = await response.json()
    assert (shown["fail_5xx"], shown["retry_after"], shown["rate_limit"]) == (2, 3, 0)
    for bad in ({"nope": 1}, {"fail_5xx": -1}, {"timeout": "x"}, {"timeout": 1.5}, [1]):
        async with client.post("/_sim/faults", json=bad) as response:
            assert response.status == 400, bad
    assert app[FAULTS].fail_5xx == 2, "a refused change changes nothing"
    app[FAULTS].set(fail_5xx=0)
    await create(client, short_description="x")
    app[FAULTS].set(fail_5xx=1)
    async with client.post("/_sim/reset") as response:
        assert response.status == 200
    assert app[FAULTS] == Faults()
    assert (app[STORE].incidents, app[STORE].journal, app[STORE].requests) == ({}, [], [])
    assert (await create(client))["number"] == "INC0010001"


async def test_records_and_request_log_show_what_the_client_did(client: Client) -> None:
    """/_sim/records lists incidents with journal rows; /_sim/requests logs every API call with its status."""
    sys_id = (await create(client, short_description="x"))["sys_id"]
    await patch(client, sys_id, work_notes="hello")
    async with client.get(TABLE, params={"sysparm_limit": "1"}) as response:
        assert response.status == 401
    async with client.get("/_sim/records") as response:
        incidents = (await response.json())["incidents"]
    assert [i["record"]["sys_id"] for i in incidents] == [sys_id]
    assert [j["value"] for j in incidents[0]["journal"]] == ["hello"]
    async with client.get("/_sim/requests") as response:
        requests = (await response.json())["requests"]
    assert requests == [
        {"method": "POST", "path": TABLE, "query": {}, "body": {"short_description": "x"}, "status": 201},
        {
            "method": "PATCH",
            "path": f"{TABLE}/{sys_id}",
            "query": {},
            "body": {"work_notes": "hello"},
            "status": 200,
        },
        {"method": "GET", "path": TABLE, "query": {"sysparm_limit": "1"}, "body": None, "status": 401},
    ]


async def test_faults_object_given_to_make_app_is_the_one_in_use() -> None:
    """A Faults object passed in is the live switch board of the app."""
    faults = Faults(fail_5xx=1)
    app = make_app(faults=faults)
    async with TestClient(TestServer(app)) as client, client.get(TABLE, headers=AUTH) as response:
        assert response.status == 503
    assert faults.fail_5xx == 0
