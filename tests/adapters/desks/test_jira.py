"""Jira, Jira Data Center and JSM: bodies valid against Atlassian's schemas, API flavours, correlation, workflows."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pydantic
import pytest
from aiohttp import web

from adapters.desks.jira import JiraConfig, JiraDesk
from adapters.desks.jira_fields import adf, adf_text, jira_fields
from adapters.simulators import jira
from adapters.simulators.jira_adf import adf_problem
from bridge.core.desk import TicketPhase, TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from bridge.core.sync import MARKER
from tests.adapters.desks.conftest import serve
from tests.conftest import SPECS as ALL_SPECS

SPECS = ALL_SPECS / "jira"
CLOUD_AUTH = {"email": "bridge@example.com", "api_token": "api-token"}
FIELDS = {"summary": "HighCPU on web-01", "description": "CPU > 95%\n\nsee https://grafana/d/1", "priority": "High"}


@functools.cache
def _validator(spec: str, schema: str) -> Any:
    from openapi_schema_validator import OAS30Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    document = orjson.loads((SPECS / spec).read_bytes())
    registry = Registry().with_resource("urn:spec", Resource.from_contents(document, default_specification=DRAFT4))
    return OAS30Validator({"$ref": f"urn:spec#/components/schemas/{schema}"}, registry=registry)


PLATFORM, JSM_SPEC = "jira-platform-swagger-v3.v3.json", "jsm-servicedesk-swagger.v3.json"
_SCHEMAS = [
    (re.compile(r"POST /rest/api/[23]/issue$"), PLATFORM, "IssueUpdateDetails"),
    (re.compile(r"PUT /rest/api/[23]/issue/[^/]+$"), PLATFORM, "IssueUpdateDetails"),
    (re.compile(r"POST /rest/api/[23]/issue/[^/]+/transitions$"), PLATFORM, "IssueUpdateDetails"),
    (re.compile(r"POST /rest/api/[23]/issue/[^/]+/comment$"), PLATFORM, "Comment"),
    (re.compile(r"POST /rest/api/[23]/search/jql$"), PLATFORM, "SearchAndReconcileRequestBean"),
    (re.compile(r"POST /rest/servicedeskapi/request$"), JSM_SPEC, "RequestCreateDTO"),
    (re.compile(r"POST /rest/servicedeskapi/request/[^/]+/comment$"), JSM_SPEC, "CommentCreateDTO"),
]


def schema_problems(request: dict[str, Any]) -> list[str]:
    """What Atlassian's schema (and, on API v3, the ADF rules) say about one logged request body."""
    line = f"{request['method']} {request['path']}"
    for pattern, spec, schema in _SCHEMAS:
        if pattern.match(line):
            problems = [e.message for e in _validator(spec, schema).iter_errors(request["body"])]
            body = request["body"]
            if "/rest/api/3/issue" in line and isinstance(body, dict):
                fields = body["fields"] if isinstance(body.get("fields"), dict) else {}
                documents = [body.get("body")] if line.endswith("/comment") else [fields.get("description")]
                problems += [adf_problem(d) for d in documents if d is not None and adf_problem(d)]
            return problems
    if request["method"] in ("POST", "PUT") and "/properties/" not in line:
        return [f"no schema known for {line}"]
    return []


@pytest.fixture(params=["cloud", "datacenter"])
async def site(request: pytest.FixtureRequest) -> AsyncIterator[tuple[web.Application, str]]:
    runner, url = await serve(jira.make_app(mode=request.param, indexed_properties=["alert-bridge"]))
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make(url: str, session: aiohttp.ClientSession, **config: Any) -> JiraDesk:
    base = {"kind": "jira", "url": url, "project": "OPS"} | CLOUD_AUTH
    if config.pop("pat", False):
        base = {k: v for k, v in base.items() if k not in CLOUD_AUTH} | {"token": "pat-token"}
    return JiraConfig.model_validate(base | config).build("jira", session)


async def lifecycle(desk: JiraDesk, labels: bool) -> TicketRef:
    ref = await desk.open("r:abc:1", FIELDS | ({"labels": "alertmanager"} if labels else {}))
    assert await desk.find("r:abc:1") == ref
    await desk.note(ref, "note with a link https://example.com/x\nand a second line")
    await desk.update(ref, {"priority": "Highest"} | ({"labels": "refired"} if labels else {}))
    await desk.resolve(ref, "cleared", {})
    await desk.reopen(ref, "again")
    return ref


@pytest.mark.parametrize(
    ("mode", "config"),
    [
        ("cloud", {}),
        ("cloud", {"api_version": 2}),
        ("cloud", {"correlation": "property"}),
        ("datacenter", {"pat": True}),
        ("cloud", {"project": "HELP", "service_desk": "10", "request_type": "25"}),
        ("cloud", {"project": "HELP", "service_desk": "10", "request_type": "26", "request_labels": ["26"]}),
    ],
    ids=["cloud-v3", "cloud-v2", "cloud-property", "datacenter", "jsm-two-step", "jsm-labels-in-request"],
)
async def test_every_outgoing_body_is_valid_against_atlassians_schemas(
    session: aiohttp.ClientSession, mode: str, config: dict[str, Any]
) -> None:
    """Create, edit, comment, transition and search bodies validate against the vendor OpenAPI schemas (and ADF)."""
    runner, url = await serve(jira.make_app(mode=mode, indexed_properties=["alert-bridge"]))
    try:
        await lifecycle(make(url, session, **config), labels="service_desk" not in config)
        requests = runner.app[jira.STORE].requests
        assert all(r["status"] in (200, 201, 204) for r in requests), [(r["path"], r["status"]) for r in requests]
        checked = [r for r in requests if r["method"] in ("POST", "PUT")]
        assert len(checked) >= 6
        assert {r["path"]: schema_problems(r) for r in checked} == {r["path"]: [] for r in checked}
    finally:
        await runner.cleanup()


def test_the_schema_check_can_fail() -> None:
    """The validation rejects what Atlassian would: an int serviceDeskId, a property with extra keys, bad ADF."""
    assert schema_problems(
        {"method": "POST", "path": "/rest/servicedeskapi/request", "body": {"serviceDeskId": 10, "requestTypeId": "1"}}
    )
    bad_property = {"fields": {}, "properties": [{"key": "k", "value": 1, "extra": True}]}
    assert schema_problems({"method": "POST", "path": "/rest/api/3/issue", "body": bad_property})
    plain = {"fields": {"summary": "x", "description": "a plain string"}}
    assert schema_problems({"method": "POST", "path": "/rest/api/3/issue", "body": plain})


def test_text_becomes_adf_with_paragraphs_breaks_and_links() -> None:
    """Blank lines split paragraphs, newlines become hardBreaks, URLs get link marks; the text reads back."""
    text = "first line\nsecond https://grafana.example/d/1.\n\nlast"
    document = adf(text)
    assert adf_problem(document) == ""
    first = document["content"][0]["content"]
    assert [n["type"] for n in first] == ["text", "hardBreak", "text", "text", "text"]
    assert first[3] == {
        "type": "text",
        "text": "https://grafana.example/d/1",
        "marks": [{"type": "link", "attrs": {"href": "https://grafana.example/d/1"}}],
    }
    assert adf_text(document) == text
    assert adf("") == {"type": "doc", "version": 1, "content": []}


def test_field_shapes_follow_jira() -> None:
    """Named, listed, user, rich and declared JSON fields take Jira's shapes; other JSON-looking text stays text."""
    rendered = {
        "priority": "High",
        "labels": "a, b c",
        "components": "Web, DB",
        "assignee": "5b10a2844c20165700ede21g",
        "customfield_10030": '{"value": "Sev 2"}',
        "customfield_10010": "{not json",
        "customfield_10040": '{"value": "from alert text"}',
        "description": "x",
    }
    json_fields = ["customfield_10030", "customfield_10010"]
    assert jira_fields(rendered, adf_rich_text=False, cloud=False, json_fields=json_fields) == {
        "priority": {"name": "High"},
        "labels": ["a", "b", "c"],
        "components": [{"name": "Web"}, {"name": "DB"}],
        "assignee": {"name": "5b10a2844c20165700ede21g"},
        "customfield_10030": {"value": "Sev 2"},
        "customfield_10010": "{not json",
        "customfield_10040": '{"value": "from alert text"}',
        "description": "x",
    }
    assert jira_fields({"assignee": "abc"}, adf_rich_text=True)["assignee"] == {"accountId": "abc"}


async def test_auto_detects_the_flavour_once_and_uses_its_endpoints(
    site: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """api_type auto asks serverInfo once; Cloud searches /rest/api/3/search/jql, Data Center /rest/api/2/search."""
    app, url = site
    cloud = app[jira.STORE].cloud
    desk = make(url, session, pat=not cloud)
    await desk.find("x:y:1")
    await desk.open("x:y:1", FIELDS)
    paths = [(r["method"], r["path"]) for r in app[jira.STORE].requests]
    search = ("POST", "/rest/api/3/search/jql") if cloud else ("GET", "/rest/api/2/search")
    create = ("POST", "/rest/api/3/issue") if cloud else ("POST", "/rest/api/2/issue")
    assert paths == [("GET", "/rest/api/2/serverInfo"), search, create]


async def test_flavour_endpoints_of_the_other_kind_are_refused(site: tuple[web.Application, str]) -> None:
    """Cloud answers 410 Gone on the legacy /search; Data Center has neither /rest/api/3 nor /search/jql."""
    app, url = site
    cloud = app[jira.STORE].cloud
    basic = "Basic " + base64.b64encode(b"bridge@example.com:api-token").decode()
    headers = {"Authorization": basic if cloud else "Bearer pat-token"}
    async with aiohttp.ClientSession(headers=headers) as client:
        async with client.get(f"{url}/rest/api/2/search", params={"jql": "project = OPS"}) as answer:
            assert answer.status == (410 if cloud else 200)
            assert ("CHANGE-2046" in await answer.text()) == cloud
        async with client.get(f"{url}/rest/api/3/issue/OPS-1") as answer:
            body = await answer.json()
            assert answer.status == 404
            assert body == (
                {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}
                if cloud
                else {"message": f"null for uri: {answer.url}", "status-code": 404}
            )
        async with client.get(f"{url}/rest/api/2/search/jql", params={"jql": "x = 1"}) as answer:
            assert answer.status == (400 if cloud else 404)


async def test_v3_refuses_plain_text_where_adf_is_required(session: aiohttp.ClientSession) -> None:
    """A v2-style string description on API v3 is a 400 naming the field; the desk makes it DeskRejected."""
    runner, url = await serve(jira.make_app())
    try:
        desk = make(url, session, rich_text_fields=[])  # a misconfiguration: description sent as a string
        with pytest.raises(DeskRejected, match="description") as info:
            await desk.open("a:b:1", FIELDS)
        assert info.value.status == 400
    finally:
        await runner.cleanup()


async def test_property_correlation_needs_an_indexed_property(session: aiohttp.ClientSession) -> None:
    """With correlation: property, find works where the site indexes the property and is a loud 400 elsewhere."""
    runner, url = await serve(jira.make_app())  # no indexed properties
    try:
        desk = make(url, session, correlation="property")
        ref = await desk.open("a:b:1", FIELDS)
        assert runner.app[jira.STORE].get(ref.id).properties == {"alert-bridge": {"correlation_id": "a:b:1"}}
        with pytest.raises(DeskRejected, match="does not exist or you do not have permission") as info:
            await desk.find("a:b:1")
        assert info.value.status == 400
    finally:
        await runner.cleanup()


async def test_jsm_request_is_labelled_after_creation_and_notes_are_internal(session: aiohttp.ClientSession) -> None:
    """A JSM request gets its correlation label by a second call; notes are JSM comments with public false."""
    runner, url = await serve(jira.make_app())
    store = runner.app[jira.STORE]
    try:
        desk = make(url, session, project="HELP", service_desk="10", request_type="25")
        ref = await desk.open("a:b:1", FIELDS)
        await desk.note(ref, "internal note")
        issue = store.get(ref.id)
        assert issue.fields["labels"] == ["a:b:1"] and issue.fields["issuetype"] == "[System] Incident"
        assert [(c["body"], c["jsdPublic"]) for c in issue.comments] == [(f"internal note\n\n{MARKER}", False)]

        store.read_only.add("HELP")  # the label edit is refused after the request was created
        with pytest.raises(DeskRejected, match=r"created HELP-2 but could not record its correlation id"):
            await desk.open("a:c:1", FIELDS)
    finally:
        await runner.cleanup()


async def test_jsm_refuses_fields_its_request_type_does_not_show(session: aiohttp.ClientSession) -> None:
    """requestFieldValues outside the request type's fields is JSM's 400, in JSM's error shape."""
    runner, url = await serve(jira.make_app())
    try:
        desk = make(url, session, project="HELP", service_desk="10", request_type="25", request_labels=["25"])
        with pytest.raises(DeskRejected, match="not valid for this request type: labels") as info:
            await desk.open("a:b:1", FIELDS)
        assert orjson.loads(info.value.answer)["i18nErrorMessage"]["i18nKey"].startswith("sd.")
    finally:
        await runner.cleanup()


async def test_transitions_are_found_by_name_or_by_category(session: aiohttp.ClientSession) -> None:
    """An unknown transition name falls back to the done category, never a closed status; resolution if on screen."""
    runner, url = await serve(jira.make_app())
    store = runner.app[jira.STORE]
    try:
        desk = make(url, session, resolve_transition="Finish", resolution="Fixed")
        ref = await desk.open("a:b:1", FIELDS)
        await desk.resolve(ref, "cleared", {})
        issue = store.get(ref.id)
        assert (issue.status, issue.resolution) == ("Resolved", "Fixed")
        transition = [r for r in store.requests if r["path"].endswith("/transitions") and r["method"] == "POST"]
        assert transition[-1]["body"] == {"transition": {"id": "5"}, "fields": {"resolution": {"name": "Fixed"}}}

        await desk.resolve(ref, "cleared twice", {})  # already resolved: only the comment
        assert issue.status == "Resolved" and adf_text(issue.comments[-1]["body"]) == f"cleared twice\n\n{MARKER}"
        await desk.reopen(ref, "again")
        assert (issue.status, issue.resolution) == ("Reopened", None)
        assert [r["body"] for r in store.requests if r["path"].endswith("/transitions") and r["method"] == "POST"][
            -1
        ] == {"transition": {"id": "3"}}
    finally:
        await runner.cleanup()


async def test_a_canceled_request_is_closed_and_cannot_be_reopened(session: aiohttp.ClientSession) -> None:
    """Canceled is CLOSED; reopening it is DeskRejected naming the status and the transitions available."""
    runner, url = await serve(jira.make_app())
    store = runner.app[jira.STORE]
    try:
        desk = make(url, session, project="HELP", service_desk="10", request_type="25")
        ref = await desk.open("a:b:1", FIELDS)
        store.get(ref.id).status = "Canceled"  # a human cancelled it
        assert (await desk.state(ref)).phase is TicketPhase.CLOSED
        with pytest.raises(DeskRejected, match="from status 'Canceled' \\(available: none\\)"):
            await desk.reopen(ref, "again")
    finally:
        await runner.cleanup()


async def test_rate_limit_with_an_html_body_is_transient(session: aiohttp.ClientSession) -> None:
    """Jira's 429 comes as an HTML page with Retry-After and X-RateLimit-*: transient, Retry-After kept."""
    runner, url = await serve(jira.make_app())
    try:
        runner.app[jira.FAULTS].set(rate_limit=1, retry_after=3)
        with pytest.raises(DeskTransient) as info:
            await make(url, session).find("a:b:1")
        assert (info.value.status, info.value.retry_after) == (429, 3.0)
        assert "<html>" in info.value.answer
    finally:
        await runner.cleanup()


async def test_search_jql_is_eventually_consistent_when_the_site_lags(session: aiohttp.ClientSession) -> None:
    """With search lag, a just-created issue is not found yet by /search/jql (the documented Cloud behaviour)."""
    runner, url = await serve(jira.make_app(search_lag_s=30))
    try:
        desk = make(url, session)
        await desk.open("a:b:1", FIELDS)
        assert await desk.find("a:b:1") is None
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "either email and api_token"),
        ({"email": "a@b", "api_token": "t", "token": "p"}, "either email and api_token"),
        ({"email": "a@b"}, "needs both email and api_token"),
        ({"token": "p", "api_type": "datacenter", "api_version": 3}, "no REST API v3"),
        ({"token": "p", "request_type": "25"}, "request_type needs service_desk"),
        ({"token": "p", "label_prefix": "a b"}, "spaces"),
    ],
)
def test_config_refuses_what_cannot_work(config: dict[str, Any], message: str) -> None:
    """Auth must be one of Basic or Bearer, DC has no v3, a request type needs a service desk, labels have no spaces."""
    with pytest.raises(pydantic.ValidationError, match=message):
        JiraConfig.model_validate({"kind": "jira", "url": "https://x.atlassian.net", "project": "OPS"} | config)
