"""The Opsgenie door through a running bridge: Opsgenie's calls and answers, tickets in the simulator."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.core.config import MappingConfig
from bridge.process.embedded import EmbeddedRedis
from tests.conftest import Snow, eventually

KEY = "genie-k3y"
NAGIOS_KEY = "nagios-k3y"


def og_mapping(snow_url: str) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sources": {
                "og": {"kind": "opsgenie", "secret": KEY},
                "am": {"kind": "alertmanager"},
                "nag": {"kind": "nagios", "secret": NAGIOS_KEY},
            },
            "desks": {"snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"}},
            "routes": [
                {
                    "name": "opsgenie",
                    "sources": ["og"],
                    "desk": "snow",
                    "lifecycle": {"resolve_after": "200ms"},
                    "ticket": {"fields": {"short_description": "[{{ severity }}] {{ summary }}"}},
                },
                {
                    "name": "nagios",
                    "sources": ["nag"],
                    "desk": "snow",
                    "ticket": {"fields": {"short_description": "{{ name }} on {{ resource }}"}},
                },
            ],
        }
    )


class Client:
    """An Opsgenie client whose API URL is the bridge's door for source `og`."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str = KEY, **query: str
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"GenieKey {key}", "Content-Type": "application/json"}
        data = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else None
        url = f"{self.base}/opsgenie/og/v2/alerts{path}"
        async with self.session.request(method, url, data=data, headers=headers, params=query) as resp:
            return resp.status, await resp.json(content_type=None)

    async def status(self, request_id: str) -> dict[str, Any]:
        code, body = await self.call("GET", f"/requests/{request_id}")
        assert code == 200, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
async def og(snow: Snow, make_bridge: Any) -> AsyncIterator[Client]:
    bridge = await make_bridge(og_mapping(snow.url))
    async with aiohttp.ClientSession() as session:
        yield Client(session, f"http://127.0.0.1:{bridge.port}")


def accepted(code: int, body: dict[str, Any]) -> str:
    """Opsgenie's 202: result, took, requestId; the request id."""
    assert code == 202, body
    assert body["result"] == "Request will be processed" and isinstance(body["took"], float)
    request_id: str = body["requestId"]
    return request_id


async def test_create_acknowledge_note_close_make_one_ticket_with_notes(og: Client, snow: Snow) -> None:
    """Create opens a ticket; acknowledge and a note are work notes on it; close resolves it."""
    alert = {"message": "Disk full on db-1", "alias": "disk-db-1", "priority": "P2", "entity": "db-1"}
    request_id = accepted(*await og.call("POST", "", alert))
    await eventually(snow.incidents)
    [ticket] = snow.incidents()
    assert ticket["short_description"] == "[major] Disk full on db-1"
    data = await og.status(request_id)
    assert data["success"] is True and data["action"] == "Create" and data["alias"] == "disk-db-1"

    accepted(*await og.call("POST", "/disk-db-1/acknowledge", {"user": "ann", "note": "on it"}, identifierType="alias"))
    accepted(*await og.call("POST", "/disk-db-1/notes", {"user": "bob", "note": "swapping"}, identifierType="alias"))

    def notes() -> str:
        return "\n".join(snow.notes(snow.incidents()[0]))

    await eventually(lambda: "Acknowledged by ann: on it" in notes() and "Comment by bob: swapping" in notes())
    accepted(*await og.call("POST", "", alert))  # a repeat while acknowledged: nothing new
    accepted(*await og.call("POST", "/disk-db-1/close", {"user": "ann"}, identifierType="alias"))
    await eventually(lambda: snow.incidents()[0]["state"] == "6")
    assert len(snow.incidents()) == 1
    assert notes().count("Acknowledged by ann") == 1


async def test_close_by_the_alert_id_of_a_requests_status(og: Client, snow: Snow) -> None:
    """The alertId a request's status gives closes the alert with the default identifierType (id)."""
    request_id = accepted(*await og.call("POST", "", {"message": "Queue stuck", "alias": "q/1 stuck"}))
    alert_id = (await og.status(request_id))["alertId"]
    await eventually(snow.incidents)
    close_id = accepted(*await og.call("POST", f"/{alert_id}/close", {}))
    assert (await og.status(close_id))["status"] == "Closed alert"
    await eventually(lambda: snow.incidents()[0]["state"] == "6")


async def test_calls_on_unknown_aliases_are_accepted_and_their_status_says_so(og: Client, snow: Snow) -> None:
    """A close of an alias never created is 202 (as Opsgenie answers); its status is not a success."""
    request_id = accepted(*await og.call("POST", "/nope/close", None, identifierType="alias"))
    data = await og.status(request_id)
    assert data["success"] is False and "There is no open alert" in data["status"]
    bogus = base64.urlsafe_b64encode(b"\xff\xfe").decode()
    accepted(*await og.call("POST", f"/{bogus}/acknowledge", {}))
    assert snow.incidents() == []


async def test_errors_are_shaped_as_opsgenies(og: Client) -> None:
    """401, 400, 422 (with errors by field), unknown actions and tiny ids answer Opsgenie's error bodies."""
    code, body = await og.call("POST", "", {"message": "m"}, key="wrong")
    assert code == 401 and body["message"] == "Could not authenticate" and "requestId" in body and "took" in body
    code, body = await og.call("POST", "", b"{not json")
    assert code == 400 and body["message"].startswith("Invalid JSON body")
    code, body = await og.call("POST", "", {"alias": "a"})
    assert code == 422 and body["errors"] == {"message": "Message can not be empty."}
    accepted(*await og.call("POST", "", {"message": "m", "alias": "a"}))
    code, body = await og.call("POST", "/a/notes", {"user": "ann"}, identifierType="alias")
    assert code == 422 and body["errors"] == {"note": "Note can not be empty."}
    code, body = await og.call("POST", "/a/close", {}, identifierType="tiny")
    assert code == 422 and "identifierType" in body["errors"]
    code, body = await og.call("POST", "/a/snooze", {}, identifierType="alias")
    assert code == 404 and "snooze" in body["message"]
    code, body = await og.call("GET", "/requests/not-an-id")
    assert code == 404 and body["message"] == "Request does not exist"


async def test_a_source_of_another_kind_has_no_door(og: Client) -> None:
    """/opsgenie/<source>/ of a non-Opsgenie source is a 404 naming its own path."""
    async with og.session.post(f"{og.base}/opsgenie/am/v2/alerts", json={"message": "m"}) as resp:
        assert resp.status == 404
        assert "/webhook/am" in (await resp.json())["message"]


async def test_redis_unreachable_is_a_503_in_opsgenies_shape(og: Client, redis_server: EmbeddedRedis) -> None:
    """Redis down: 503 with Opsgenie's error body, so that senders retry."""
    redis_server.stop(kill=True)
    code, body = await og.call("POST", "", {"message": "m", "alias": "a"})
    assert code == 503 and "message" in body and "requestId" in body


def nagios2opsgenie(**fields: str) -> dict[str, str]:
    """A service PROBLEM as Opsgenie's nagios2opsgenie posts it (its parameters as JSON, the key among them)."""
    return {
        "apiKey": NAGIOS_KEY, "nagios_server": "default", "entity_type": "service", "notification_type": "PROBLEM",
        "long_date_time": "Tue May 14 10:00:00 UTC 2024", "host_name": "web-01", "host_alias": "web-01",
        "host_address": "10.0.0.5", "host_state": "UP", "service_desc": "HTTP", "service_state": "CRITICAL",
        "service_state_id": "2", "service_output": "connection refused", "last_service_state_change": "1715680800",
        "service_problem_id": "41", "tags": "", "priority": "", **fields,
    }  # fmt: skip


async def test_nagios2opsgenie_posts_reach_a_nagios_source(og: Client, snow: Snow) -> None:
    """Opsgenie's Nagios integration script, its API URL at the bridge: a ticket; a wrong apiKey is a 401."""
    url = f"{og.base}/opsgenie/nag/v1/json/nagios"
    async with og.session.post(url, json=nagios2opsgenie(apiKey="wrong")) as resp:
        assert resp.status == 401 and (await resp.json())["message"] == "Could not authenticate"
    async with og.session.post(url, json=nagios2opsgenie()) as resp:
        assert resp.status == 200, await resp.text()
    await eventually(snow.incidents)
    assert snow.incidents()[0]["short_description"] == "HTTP on web-01"
    async with og.session.post(f"{og.base}/opsgenie/og/v1/json/nagios", json=nagios2opsgenie()) as resp:
        assert resp.status == 404  # only sources of kind nagios or icinga2 take it
