"""The icinga2 upstream against the Icinga 2 simulator: the exact bodies, auth, and which answers are
transient and which rejected."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.simulators import icinga2
from adapters.upstreams.icinga2 import Icinga2Actions, Icinga2Upstream
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement
from tests.conftest import start_app

SERVICE = {"host": "web-01", "service": "HTTP", "object_type": "service"}
HOST = {"host": "db-01", "object_type": "host"}


def ack(members: list[dict[str, str]], *, until_s: float = 3600, handle: str = "") -> Acknowledgement:
    return Acknowledgement(
        incident="icinga:abc", source="icinga", ticket=TicketRef("INC0010001", "INC0010001", ""), author="jane",
        comment=f"Acknowledged from ticket INC0010001 by jane {MARKER}", members=members,
        until_ms=int((time.time() + until_s) * 1000), handle=handle,
    )  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[tuple[web.Application, str]]:
    app = icinga2.make_app(user="bridge", password="s3cret")
    runner, url = await start_app(app)
    yield app, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def upstream(url: str, session: aiohttp.ClientSession, **settings: Any) -> Icinga2Actions:
    config = {"url": url, "user": "bridge", "password": "s3cret", **settings}
    return Icinga2Upstream.model_validate(config).build("icinga", session)


def store(app: web.Application) -> icinga2.IcingaStore:
    return app[icinga2.STORE]


async def test_acknowledge_each_object_with_the_documented_body(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """One POST per object, named by the simple filter, with author, comment (MARKER first), sticky, notify."""
    app, url = sim
    store(app).add("web-01", "HTTP", state=2)
    store(app).add("db-01", state=1)
    assert await upstream(url, session).acknowledge(ack([SERVICE, SERVICE, HOST])) == ""
    calls = [(r["method"], r["path"], r["body"], r["status"]) for r in store(app).requests]
    body = {"author": "alert-ticket-bridge", "comment": f"{MARKER} Acknowledged from ticket INC0010001 by jane",
            "sticky": True, "notify": True, "persistent": False}  # fmt: skip
    assert calls == [
        ("POST", "/v1/actions/acknowledge-problem", {"type": "Service", "service": "web-01!HTTP", **body}, 200),
        ("POST", "/v1/actions/acknowledge-problem", {"type": "Host", "host": "db-01", **body}, 200),
    ]
    assert store(app).objects["web-01!HTTP"]["acknowledgement"] == 2  # sticky
    assert store(app).objects["db-01"]["acknowledgement"] == 2


async def test_acknowledging_twice_and_a_recovered_object_are_fine(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """409 "already acknowledged" (a retry) is done; 409 "is OK" (recovered meanwhile) is nothing to do."""
    app, url = sim
    store(app).add("web-01", "HTTP", state=2)
    store(app).add("db-01", state=0)
    client = upstream(url, session)
    await client.acknowledge(ack([SERVICE]))
    await client.acknowledge(ack([SERVICE, HOST]))
    assert [r["status"] for r in store(app).requests] == [200, 409, 409]


async def test_release_and_comment(sim: tuple[web.Application, str], session: aiohttp.ClientSession) -> None:
    """release removes the acknowledgement (and its comment); a desk comment is add-comment with the marker."""
    app, url = sim
    store(app).add("web-01", "HTTP", state=2)
    client = upstream(url, session)
    await client.acknowledge(ack([SERVICE]))
    await client.release(ack([SERVICE]))
    await client.comment(ack([SERVICE]), f"restarted the pool\n{MARKER}")
    obj = store(app).objects["web-01!HTTP"]
    assert obj["acknowledgement"] == 0
    assert obj["comments"] == [
        {"entry_type": 1, "author": "alert-ticket-bridge", "text": f"{MARKER} restarted the pool (INC0010001)"}
    ]
    assert [r["path"] for r in store(app).requests][1:] == [
        "/v1/actions/remove-acknowledgement",
        "/v1/actions/add-comment",
    ]
    assert store(app).requests[1]["body"] == {
        "type": "Service",
        "service": "web-01!HTTP",
        "author": "alert-ticket-bridge",
    }


async def test_expiring_acknowledgement_is_renewed(
    sim: tuple[web.Application, str], session: aiohttp.ClientSession
) -> None:
    """expire: true sends `expiry` (seconds) and a handle; extend removes it and acknowledges again, silently."""
    app, url = sim
    store(app).add("web-01", "HTTP", state=2)
    client = upstream(url, session, expire=True)
    first = ack([SERVICE], until_s=600)
    handle = await client.acknowledge(first)
    assert handle
    assert store(app).requests[0]["body"]["expiry"] == pytest.approx(first.until_ms / 1000)
    later = ack([SERVICE], until_s=7200, handle=handle)
    assert await client.extend(later) == handle
    assert [r["path"].rsplit("/", 1)[1] for r in store(app).requests] == [
        "acknowledge-problem", "remove-acknowledgement", "acknowledge-problem",
    ]  # fmt: skip
    assert store(app).requests[2]["body"]["notify"] is False
    assert store(app).objects["web-01!HTTP"]["acknowledgement_expiry"] == pytest.approx(later.until_ms / 1000)
    assert await upstream(url, session).extend(later) == handle  # without expire: nothing to do
    assert len(store(app).requests) == 3


async def test_auth_and_accept_header(sim: tuple[web.Application, str], session: aiohttp.ClientSession) -> None:
    """The upstream sends Basic auth and Accept: application/json; the simulator refuses either missing."""
    app, url = sim
    store(app).add("web-01", "HTTP", state=2)
    with pytest.raises(DeskRejected, match="HTTP 401"):
        await upstream(url, session, password="wrong").acknowledge(ack([SERVICE]))
    basic = "Basic " + base64.b64encode(b"bridge:s3cret").decode()
    async with session.post(f"{url}/v1/actions/acknowledge-problem", headers={"Authorization": basic}) as resp:
        assert resp.status == 400  # no Accept: application/json
    async with session.post(f"{url}/v1/actions/acknowledge-problem", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="Icinga 2"'


async def test_unknown_objects_and_errors(sim: tuple[web.Application, str], session: aiohttp.ClientSession) -> None:
    """No object by that name: nothing there (404), rejected only when no member's object took it; 5xx and a
    reload are transient; a name with '!' is refused before any call."""
    app, url = sim
    client = upstream(url, session)
    with pytest.raises(DeskRejected, match="no member has a `host` label"):
        await client.acknowledge(ack([{"alertname": "x"}]))
    await client.acknowledge(ack([SERVICE]))  # renamed or removed in Icinga: nothing to acknowledge there
    assert store(app).requests[-1]["status"] == 404
    with pytest.raises(DeskRejected, match="'!'"):
        await client.acknowledge(ack([{"host": "a!b", "service": "c"}]))
    store(app).add("web-01", "HTTP", state=2)
    app[icinga2.FAULTS].set(fail_5xx=1)
    with pytest.raises(DeskTransient, match="HTTP 503"):
        await client.acknowledge(ack([SERVICE]))
    with pytest.raises(DeskRejected, match="require author and comment"):
        await client._one("acknowledge", "acknowledge-problem", {"type": "Service", "service": "web-01!HTTP"})
    with pytest.raises(DeskRejected, match="must be in the future"):
        await client._one(
            "acknowledge", "acknowledge-problem",
            {"type": "Service", "service": "web-01!HTTP", "author": "a", "comment": "c", "expiry": 1},
        )  # fmt: skip


async def test_a_timeout_is_transient(session: aiohttp.ClientSession) -> None:
    """A simulator that holds the answer past the timeout: transient, naming the timeout."""
    app = icinga2.make_app(user="bridge", password="s3cret")
    runner, url = await start_app(app)
    try:
        store(app).add("web-01", "HTTP", state=2)
        app[icinga2.FAULTS].set(timeout=1, hang_s=5)
        with pytest.raises(DeskTransient, match="timeout"):
            await upstream(url, session, timeout=0.3).acknowledge(ack([SERVICE]))
    finally:
        await runner.cleanup()


def test_settings() -> None:
    """The API is https; plain http elsewhere needs allow_insecure_http; unknown keys fail."""
    with pytest.raises(ValueError, match="plain http"):
        Icinga2Upstream.model_validate({"url": "http://icinga.example.com:5665", "user": "u", "password": "p"})
    with pytest.raises(ValueError, match="Extra inputs"):
        Icinga2Upstream.model_validate({"url": "https://i:5665", "user": "u", "password": "p", "sticky_ack": 1})
