"""ServiceNow OAuth (token endpoint and client) and Event Management (jsonv2 endpoint and desk)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pydantic
import pytest
from aiohttp import web

from adapters.desks.servicenow import ServiceNowConfig
from adapters.desks.servicenow_em import ServiceNowEventsConfig
from adapters.simulators import servicenow
from adapters.simulators.servicenow import EVENTS, OAUTH, STORE
from bridge.core.errors import DeskRejected
from bridge.core.sync import MARKER
from tests.adapters.desks.conftest import serve

CLIENT = {"client_id": "bridge-client", "client_secret": "client-s3cret"}
DENIED = {"error_description": "access_denied", "error": "server_error"}
BASIC = {"Authorization": "Basic " + base64.b64encode(b"bridge:s3cret").decode()}


@pytest.fixture
async def instance() -> AsyncIterator[tuple[web.Application, str]]:
    runner, url = await serve(servicenow.make_app(user="bridge", password="s3cret", token_ttl_s=60.5))
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def token(session: aiohttp.ClientSession, url: str, **form: str) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/oauth_token.do", data=form, headers={"Accept": "application/json"}) as answer:
        return answer.status, await answer.json()


async def test_token_endpoint_grants_and_refusals(instance: tuple[web.Application, str]) -> None:
    """Password and refresh grants answer the token JSON; a wrong secret or a disabled grant is the opaque 401."""
    app, url = instance
    async with aiohttp.ClientSession() as session:
        status, body = await token(session, url, grant_type="password", username="bridge", password="s3cret", **CLIENT)
        assert status == 200
        assert set(body) == {"scope", "token_type", "expires_in", "refresh_token", "access_token"}
        assert (body["token_type"], body["expires_in"]) == ("Bearer", 60)
        refreshed = await token(session, url, grant_type="refresh_token", refresh_token=body["refresh_token"], **CLIENT)
        assert refreshed[0] == 200 and refreshed[1]["access_token"] != body["access_token"]
        async with session.get(
            f"{url}/api/now/table/incident", headers={"Authorization": f"Bearer {refreshed[1]['access_token']}"}
        ) as answer:
            assert answer.status == 200
        assert await token(session, url, grant_type="password", username="bridge", password="nope", **CLIENT) == (
            401,
            DENIED,
        )
        assert await token(session, url, grant_type="client_credentials", client_id="bridge-client") == (401, DENIED)
        app[OAUTH].client_credentials = False
        assert await token(session, url, grant_type="client_credentials", **CLIENT) == (401, DENIED)
    assert app[OAUTH].grants == ["password", "refresh_token"]


async def test_desk_renews_its_token_with_the_refresh_grant_before_expiry(
    instance: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """A token near its expiry is renewed with grant_type=refresh_token; a refused refresh falls back to the grant."""
    app, url = instance
    config = {"kind": "servicenow", "url": url, "auth": "oauth", "user": "bridge", "password": "s3cret"} | CLIENT
    desk = ServiceNowConfig.model_validate(config).build("snow", session)
    ref = await desk.open("c:1:1", {"short_description": "x"})
    await asyncio.sleep(0.6)  # the 60.5 s token is due for renewal 60 s before it expires
    await desk.note(ref, "after renewal")
    app[OAUTH].refresh.clear()  # refresh tokens revoked
    app[OAUTH].expire_tokens()
    await asyncio.sleep(0.6)
    await desk.note(ref, "after a refused refresh")
    assert app[OAUTH].grants == ["password", "refresh_token", "password"]
    assert app[STORE].notes(ref.id) == [f"after renewal\n\n{MARKER}", f"after a refused refresh\n\n{MARKER}"]


async def test_refused_sign_in_is_rejected_with_secrets_masked(
    instance: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """The token endpoint refusing the credentials is DeskRejected; the kept form masks password and secret."""
    _, url = instance
    config = {"kind": "servicenow", "url": url, "auth": "oauth", "user": "bridge", "password": "wrong-pw"} | CLIENT
    desk = ServiceNowConfig.model_validate(config).build("snow", session)
    with pytest.raises(DeskRejected) as info:
        await desk.find("c:1:1")
    error = info.value
    assert error.status == 401 and "access_denied" in str(error)
    assert error.request["form"]["password"] == "********" and error.request["form"]["client_secret"] == "********"
    assert "wrong-pw" not in repr(error.record()) and "client-s3cret" not in repr(error.record())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"auth": "basic", "user": "u"}, "basic needs password"),
        ({"auth": "oauth", "user": "u", "password": "p"}, "needs client_id and client_secret"),
        ({"auth": "oauth", "grant": "client_credentials", "client_id": "c"}, "needs client_secret"),
        ({"auth": "token", "user": "u", "password": "p"}, "auth"),
    ],
)
def test_sign_in_config_needs_the_keys_of_its_mode(config: dict[str, Any], message: str) -> None:
    """Each auth mode names the keys it lacks; client_credentials needs no user."""
    with pytest.raises(pydantic.ValidationError, match=message):
        ServiceNowConfig.model_validate({"kind": "servicenow", "url": "https://x.service-now.com"} | config)
    ok = {"auth": "oauth", "grant": "client_credentials"} | CLIENT
    assert ServiceNowConfig.model_validate({"kind": "servicenow", "url": "https://x.service-now.com"} | ok).user is None


async def test_jsonv2_inserts_processes_and_closes(instance: tuple[web.Application, str]) -> None:
    """jsonv2 answers the insert count; events become alerts, a clear closes one, bad events are state Error."""
    app, url = instance
    records = [
        {"source": "Prometheus", "node": "web-01", "type": "CPU", "severity": "2", "message_key": "k1"},
        {"source": "Prometheus", "node": "web-01", "type": "CPU", "severity": "9"},
        {"node": "web-02", "severity": "3"},
        {"source": "Prometheus", "severity": "3", "additional_info": '{"n": 1}', "message_key": "k2"},
        {"source": "Prometheus", "severity": "0", "message_key": "k1"},
    ]
    async with aiohttp.ClientSession(headers=BASIC) as session:
        async with session.post(f"{url}/api/global/em/jsonv2", json={"records": records}) as answer:
            assert answer.status == 200
            assert await answer.json() == {"result": {"Default Bulk Endpoint": "5 events were inserted"}}
        async with session.post(f"{url}/api/global/em/jsonv2", data=b"{nope") as answer:
            assert answer.status == 400 and (await answer.json())["status"] == "failure"
    events = app[EVENTS].events
    assert [e["state"] for e in events] == ["Processed", "Error", "Error", "Error", "Processed"]
    assert events[1]["message_key"] == "Prometheusweb-01CPU", "default key: source+node+type+resource+metric"
    assert "values must be strings" in events[3]["processing_notes"] or "strings" in events[3]["processing_notes"]
    assert [(a["number"], a["message_key"], a["state"]) for a in app[EVENTS].alerts] == [
        ("Alert0010001", "k1", "Closed")
    ]


async def test_em_desk_sends_string_records_keyed_by_the_correlation_id(
    instance: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """open sends one string-valued record: message_key, mapped severity, stringified additional_info, GMT time."""
    app, url = instance
    config = {"kind": "servicenow_em", "url": url, "user": "bridge", "password": "s3cret", "source": "Prom"}
    desk = ServiceNowEventsConfig.model_validate(config).build("em", session)
    ref = await desk.open("r:k:1", {"severity": "major", "node": "db-1", "additional_info": '{"runbook": 7}'})
    assert (ref.id, ref.display) == ("r:k:1", "r:k:1")
    sent = next(r for r in app[STORE].requests if r["path"] == "/api/global/em/jsonv2")["body"]["records"]
    assert len(sent) == 1 and all(isinstance(v, str) for v in sent[0].values())
    assert {k: sent[0][k] for k in ("source", "severity", "node", "message_key")} == {
        "source": "Prom",
        "severity": "2",
        "node": "db-1",
        "message_key": "r:k:1",
    }
    assert orjson.loads(sent[0]["additional_info"]) == {"runbook": "7"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", sent[0]["time_of_event"])
    with pytest.raises(DeskRejected, match="severity 'disaster'"):
        await desk.open("r:k:2", {"severity": "disaster"})
    with pytest.raises(DeskRejected, match="no event with message_key r:none:1"):
        await desk.note(type(ref)(id="r:none:1"), "hello")
    await desk.resolve(ref, "cleared", {})
    await desk.reopen(ref, "again")
    severities = [e["severity"] for e in app[EVENTS].events]
    assert severities == ["2", "0", "2"], "the reopen resends the last firing event, not the clear"


async def test_oversized_payload_is_a_400_in_the_platform_envelope(instance: tuple[web.Application, str]) -> None:
    """A body over the instance's limit answers the documented 400 'Rejected large REST payload'."""
    small = servicenow.make_app(user="bridge", password="s3cret", max_payload=100)
    runner, url = await serve(small)
    try:
        async with (
            aiohttp.ClientSession(headers=BASIC) as session,
            session.post(f"{url}/api/now/table/incident", json={"short_description": "x" * 200}) as answer,
        ):
            assert answer.status == 400
            body = await answer.json()
        assert body["error"]["message"] == "Exception while reading request"
        assert body["error"]["detail"].startswith("Rejected large REST payload with content-length = ")
    finally:
        await runner.cleanup()
