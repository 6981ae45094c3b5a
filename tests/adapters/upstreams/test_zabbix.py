"""The zabbix upstream against the Zabbix simulator: event.acknowledge's exact JSON-RPC calls, the token, and
which errors are transient and which rejected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.simulators import zabbix
from adapters.upstreams.zabbix import ZabbixEvents, ZabbixUpstream
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement
from tests.conftest import start_app


def ack(*event_ids: str) -> Acknowledgement:
    return Acknowledgement(
        incident="zabbix:abc", source="zabbix", ticket=TicketRef("INC0010001", "INC0010001", ""), author="jane",
        comment=f"Acknowledged from ticket INC0010001 by jane {MARKER}",
        members=[{"host": "db-01", "event_id": e, "zabbix_event": "problem"} for e in event_ids],
    )  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[tuple[web.Application, str]]:
    app = zabbix.make_app(token="t0ken")
    runner, url = await start_app(app)
    yield app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def upstream(url: str, session: aiohttp.ClientSession, **settings: Any) -> ZabbixEvents:
    return ZabbixUpstream.model_validate({"url": url, "token": "t0ken", **settings}).build("zabbix", session)


def store(app: web.Application) -> zabbix.ZabbixStore:
    return app[zabbix.STORE]


async def test_acknowledge_is_one_call_with_every_event(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """One event.acknowledge: the members' event ids once each, action 6 (acknowledge + message), MARKER first."""
    app, url = sim
    store(app).add("101")
    store(app).add("102")
    assert await upstream(url, session).acknowledge(ack("101", "102", "101")) == ""
    [call] = store(app).requests
    assert call["path"] == "/api_jsonrpc.php" and call["status"] == 200
    assert call["body"] == {
        "jsonrpc": "2.0", "method": "event.acknowledge", "id": 1,
        "params": {"eventids": ["101", "102"], "action": 6,
                   "message": f"{MARKER} Acknowledged from ticket INC0010001 by jane"},
    }  # fmt: skip
    assert [e["acknowledged"] for e in store(app).events.values()] == [1, 1]


async def test_release_and_comment(sim: tuple[web.Application, str], session: aiohttp.ClientSession) -> None:
    """release is action 20 (unacknowledge + message); a desk comment action 4 (message only)."""
    app, url = sim
    store(app).add("101")
    client = upstream(url, session)
    await client.acknowledge(ack("101"))
    await client.release(ack("101"))
    await client.comment(ack("101"), f"restarted the pool\n{MARKER}")
    event = store(app).events["101"]
    assert event["acknowledged"] == 0
    assert [(a["action"], a["message"]) for a in event["acknowledges"]] == [
        (6, f"{MARKER} Acknowledged from ticket INC0010001 by jane"),
        (20, f"{MARKER} Acknowledgement released (INC0010001)"),
        (4, f"{MARKER} restarted the pool (INC0010001)"),
    ]


async def test_the_token_as_bearer_or_in_the_body(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """Bearer by default; `auth_in_body` for Zabbix before 6.4 (never kept in the record); a wrong token rejected."""
    app, url = sim
    store(app).add("101")
    await upstream(url, session, auth_in_body=True).acknowledge(ack("101"))
    assert store(app).requests[-1]["body"]["auth"] == "********"
    with pytest.raises(DeskRejected, match="Not authorized"):
        await upstream(url, session, token="wrong").acknowledge(ack("101"))
    with pytest.raises(DeskRejected, match="Not authorized") as refused:
        await upstream(url, session, token="wrong", auth_in_body=True).acknowledge(ack("101"))
    assert "wrong" not in str(refused.value.record())  # the dead letter keeps the request without the token
    assert refused.value.record()["request"]["json"]["auth"] == "********"


async def test_an_unknown_event_does_not_block_the_others(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """Zabbix refuses the whole call for one unknown id; each id is then tried alone; none known: rejected."""
    app, url = sim
    store(app).add("101")
    await upstream(url, session).acknowledge(ack("101", "999"))
    assert store(app).events["101"]["acknowledged"] == 1
    assert [r["body"]["params"]["eventids"] for r in store(app).requests] == [["101", "999"], ["101"], ["999"]]
    with pytest.raises(DeskRejected, match="No permissions to referred object"):
        await upstream(url, session).acknowledge(ack("998"))
    with pytest.raises(DeskRejected, match="no member has an `event_id` label"):
        await upstream(url, session).acknowledge(Acknowledgement("z:a", "zabbix", TicketRef("1"), "", "", [{}]))


async def test_transient_and_rejected(sim: tuple[web.Application, str], session: aiohttp.ClientSession) -> None:
    """HTTP 503 and a timeout are transient; a message Zabbix refuses is rejected."""
    app, url = sim
    store(app).add("101")
    app[zabbix.FAULTS].set(fail_5xx=1)
    with pytest.raises(DeskTransient, match="HTTP 503"):
        await upstream(url, session).acknowledge(ack("101"))
    app[zabbix.FAULTS].set(timeout=1, hang_s=5)
    with pytest.raises(DeskTransient, match="timeout"):
        await upstream(url, session, timeout=0.3).acknowledge(ack("101"))
    with pytest.raises(DeskRejected, match="cannot be empty"):
        await upstream(url, session)._call("acknowledge", {"eventids": ["101"], "action": 4, "message": ""})
    with pytest.raises(DeskRejected, match="value must be one of 2, 16"):
        await upstream(url, session)._call("acknowledge", {"eventids": ["101"], "action": 18, "message": "x"})


async def test_a_long_message_is_cut_to_what_zabbix_takes(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """A comment longer than 2,048 characters is cut, not refused."""
    app, url = sim
    store(app).add("101")
    await upstream(url, session).comment(ack("101"), "x" * 5000)
    assert len(store(app).events["101"]["acknowledges"][0]["message"]) == 2048


def test_settings() -> None:
    """The URL gains /api_jsonrpc.php; plain http elsewhere needs allow_insecure_http; the token is required."""
    assert ZabbixUpstream.model_validate({"url": "https://z.example.com/", "token": "t"}).url == (
        "https://z.example.com/api_jsonrpc.php"
    )
    with pytest.raises(ValueError, match="plain http"):
        ZabbixUpstream.model_validate({"url": "http://z.example.com", "token": "t"})
    with pytest.raises(ValueError, match="token"):
        ZabbixUpstream.model_validate({"url": "https://z.example.com"})
