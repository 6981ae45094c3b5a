"""The JSM Operations desk on the wire, against its simulator: the alias is the ticket, writes through the
integration events API (GenieKey), reads through the REST API; what the simulator answers, as JSM does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from adapters.simulators import jsm_ops
from bridge.core.desk import Desk, TicketPhase, TicketRef
from bridge.core.errors import DeskRejected
from bridge.core.sync import MARKER
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.variants import JSM_OPS

ALIAS = "prometheus:4f2a9c:mx8j"


@pytest.fixture
async def jsm() -> AsyncIterator[tuple[Any, str]]:
    runner, url = await serve(JSM_OPS.app())
    yield runner.app, url
    await runner.cleanup()


@pytest.fixture
async def desk(jsm: tuple[Any, str]) -> AsyncIterator[Desk]:
    async with aiohttp.ClientSession() as session:
        made = build(JSM_OPS.config(jsm[1]), session)
        yield made
        await made.aclose()


def writes(app: Any) -> list[dict[str, Any]]:
    return [r for r in app[jsm_ops.STORE].requests if r["method"] == "POST"]


def alerts(app: Any) -> list[dict[str, Any]]:
    return list(app[jsm_ops.STORE].alerts.values())


async def test_open_sends_the_alias_and_the_fields_in_jsms_vocabulary(jsm: tuple[Any, str], desk: Desk) -> None:
    """message, description, priority, entity, tags, responders, details; other fields are details too."""
    app, _ = jsm
    fields = {
        "message": "Disk full on db-1", "description": "97%", "entity": "db-1", "tags": "disk, db ,",
        "responders": '[{"name": "dba", "type": "team"}]', "details": '{"runbook": "https://r/1"}', "team": "dba",
    }  # fmt: skip
    ref = await desk.open(ALIAS, fields)
    assert ref == TicketRef(id=ALIAS, display=ALIAS)
    [sent] = writes(app)
    assert sent["path"] == "/jsm/ops/integration/v2/alerts"
    body = sent["body"]
    assert body["alias"] == ALIAS and body["source"] == "alert-ticket-bridge" and body["user"] == "alert-ticket-bridge"
    assert body["priority"] == "P3"  # the desk's default: the fields gave none
    assert body["tags"] == ["disk", "db"] and body["responders"] == [{"name": "dba", "type": "team"}]
    assert body["details"] == {"runbook": "https://r/1", "team": "dba"}
    [alert] = alerts(app)
    assert (alert["message"], alert["entity"], alert["extraProperties"]["team"]) == ("Disk full on db-1", "db-1", "dba")


async def test_an_open_alias_is_deduplicated_by_jsm(jsm: tuple[Any, str], desk: Desk) -> None:
    """A second open of an open alias (a retry whose first answer was lost) counts the alert, makes none."""
    app, _ = jsm
    await desk.open(ALIAS, {"message": "m"})
    await desk.open(ALIAS, {"message": "m"})
    [alert] = alerts(app)
    assert alert["count"] == 2


async def test_actions_name_the_alert_by_its_alias_escaped(jsm: tuple[Any, str], desk: Desk) -> None:
    """Notes, acknowledgements and closes go to {alias}/{action}?identifierType=alias, the alias one path segment."""
    app, _ = jsm
    odd = 'route/with "quotes":x:1'
    ref = await desk.open(odd, {"message": "m"})
    assert await desk.find(odd) == ref
    await desk.note(ref, "a note")
    await desk.update(ref, {"acknowledged": "true"})
    await desk.resolve(ref, "cleared", {})
    actions = writes(app)[1:]
    assert [r["path"].rsplit("/", 1)[-1] for r in actions] == ["notes", "acknowledge", "close"]
    assert all(r["query"] == {"identifierType": "alias"} for r in actions)
    [alert] = alerts(app)  # the slash and the quotes stayed in the one alias: each call reached its alert
    assert alert["alias"] == odd and alert["status"] == "closed" and alert["acknowledged"] is True
    assert [n["note"] for n in alert["notes"]] == [f"a note\n\n{MARKER}", f"cleared\n\n{MARKER}"]  # the bridge's own


async def test_reopen_creates_the_alias_again_from_the_last_alert(jsm: tuple[Any, str], desk: Desk) -> None:
    """A closed JSM alert cannot reopen: the alias gets a new alert with the last one's fields and the note."""
    app, _ = jsm
    ref = await desk.open(ALIAS, {"message": "m", "priority": "P1", "tags": "a,b", "team": "dba"})
    await desk.resolve(ref, "cleared", {})
    assert (await desk.state(ref)).phase is TicketPhase.RESOLVED
    await desk.reopen(ref, "fired again")
    first, again = alerts(app)
    assert (first["status"], again["status"]) == ("closed", "open")
    kept = ("message", "priority", "tags", "extraProperties", "alias")
    assert {k: again[k] for k in kept} == {k: first[k] for k in kept}
    assert [n["note"] for n in again["notes"]] == [f"fired again\n\n{MARKER}"]
    assert (await desk.state(ref)).phase is TicketPhase.OPEN


async def test_update_of_fields_the_api_cannot_change_is_a_note(jsm: tuple[Any, str], desk: Desk) -> None:
    """Changed fields other than `acknowledged` are named in a note; unchanged ones and a second ack send nothing."""
    app, _ = jsm
    ref = await desk.open(ALIAS, {"message": "m", "priority": "P3"})
    await desk.update(ref, {"acknowledged": "true", "priority": "P1"})
    await desk.update(ref, {"acknowledged": "true", "priority": "P3"})
    paths = [r["path"].rsplit("/", 1)[-1] for r in writes(app)[1:]]
    assert paths == ["acknowledge", "notes"]
    [alert] = alerts(app)
    assert alert["notes"][0]["note"] == f"Fields changed (not editable through the alert API): priority: P1\n\n{MARKER}"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"description": "no message"}, "no `message`"),
        ({"message": "m", "responders": "ops team"}, "'responders' must be a JSON array"),
        ({"message": "m", "details": "[1]"}, "'details' must be a JSON object"),
    ],
)
async def test_fields_jsm_cannot_take_are_refused_before_any_call(
    jsm: tuple[Any, str], desk: Desk, fields: dict[str, str], problem: str
) -> None:
    """A ticket without a message, or a JSON field that is not JSON of its kind, is DeskRejected, unsent."""
    app, _ = jsm
    with pytest.raises(DeskRejected, match=problem):
        await desk.open(ALIAS, fields)
    assert app[jsm_ops.STORE].requests == []


async def test_the_simulator_answers_as_jsm(jsm: tuple[Any, str]) -> None:
    """202 with a request id whose status tells what became of it; 422 with errors; 401 without the key."""
    app, url = jsm
    genie = {"Authorization": "GenieKey genie-key"}
    async with aiohttp.ClientSession() as session:
        base = f"{url}/jsm/ops/integration/v2/alerts"
        async with session.post(f"{base}/nope/close", params={"identifierType": "alias"}, headers=genie) as resp:
            assert resp.status == 202
            request_id = (await resp.json())["requestId"]
        basic = {"Authorization": aiohttp.encode_basic_auth("bridge@example.com", "api-token")}
        api = f"{url}/jsm/ops/api/{jsm_ops.CLOUD_ID}/v1/alerts"
        async with session.get(f"{api}/requests/{request_id}", headers=basic) as resp:
            status = await resp.json()
            assert (status["isSuccess"], status["status"], status["action"]) == (False, "Alert does not exist", "Close")
        async with session.post(base, json={"message": "", "priority": "P9"}, headers=genie) as resp:
            assert resp.status == 422
            assert set((await resp.json())["errors"]) == {"message", "priority"}
        async with session.post(base, json={"message": "m"}, headers={"Authorization": "GenieKey wrong"}) as resp:
            assert resp.status == 401 and (await resp.json())["message"] == "Could not authenticate"
        async with session.get(api, params={"query": "owner:me"}, headers=basic) as resp:
            assert resp.status == 422
        async with session.get(f"{url}/jsm/ops/api/other-cloud/v1/alerts", headers=basic) as resp:
            assert resp.status == 404
    assert alerts(app) == []
