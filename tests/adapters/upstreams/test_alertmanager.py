"""The alertmanager upstream: which silences cover an incident (pure), and against the real Alertmanager
(Debian's prometheus-alertmanager): the silence in its API, its alerts suppressed and not notified again,
extended, expired; an HA pair gossiping it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from adapters.upstreams.alertmanager import AlertmanagerUpstream, escape, silence_groups
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement
from bridge.process.embedded import free_port
from tests.conftest import eventually, require, start_app

DISK = [
    {"alertname": "DiskFull", "instance": "web-01", "device": "sda", "severity": "critical"},
    {"alertname": "DiskFull", "instance": "web-01", "device": "sdb", "severity": "critical"},
]
OTHER = {"alertname": "DiskFull", "instance": "web-02", "device": "sda", "severity": "critical"}


def ack(members: list[dict[str, str]], *, until_s: float = 600, handle: str = "") -> Acknowledgement:
    return Acknowledgement(
        incident="prometheus:abc123",
        source="prom",
        ticket=TicketRef("INC0010001", "INC0010001", "https://snow.example.com/incident/INC0010001"),
        author="jane.doe",
        comment=f"Acknowledged from ticket INC0010001 by jane.doe {MARKER}",
        members=members,
        until_ms=int((time.time() + until_s) * 1000),
        handle=handle,
    )


def covers(matchers: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """Alertmanager's matching: every matcher holds; a missing label is the empty string; regexes anchored."""
    for m in matchers:
        value = labels.get(m["name"], "")
        if m["isRegex"]:
            if not re.fullmatch(f"(?:{m['value']})", value):
                return False
        elif value != m["value"]:
            return False
    return True


# -- which silences -------------------------------------------------------------------------------


def test_one_varying_label_is_one_exact_silence() -> None:
    """Members that differ in one label: one silence, that label as an alternation; a neighbour is not covered."""
    [matchers] = silence_groups(DISK, 10)
    assert {m["name"]: (m["value"], m["isRegex"]) for m in matchers} == {
        "alertname": ("DiskFull", False),
        "instance": ("web-01", False),
        "device": ("sda|sdb", True),
        "severity": ("critical", False),
    }
    assert all(covers(matchers, m) for m in DISK)
    assert not covers(matchers, OTHER)


def test_labels_varying_together_are_not_silenced_crosswise() -> None:
    """Two labels that vary: one silence per combination of the others, so (a, j2) — no member — stays loud."""
    members = [{"alertname": "X", "instance": "a", "job": "j1"}, {"alertname": "X", "instance": "b", "job": "j2"}]
    groups = silence_groups(members, 10)
    assert len(groups) == 2
    assert all(any(covers(g, m) for g in groups) for m in members)
    assert not any(covers(g, {"alertname": "X", "instance": "a", "job": "j2"}) for g in groups)
    assert not any(covers(g, {"alertname": "X", "instance": "b", "job": "j1"}) for g in groups)


def test_a_label_some_members_lack_is_matched_as_absent() -> None:
    """A member without a label another has: that label must be absent (""), not anything."""
    members = [{"alertname": "X", "pod": "p1"}, {"alertname": "X"}]
    [matchers] = silence_groups(members, 10)
    assert all(covers(matchers, m) for m in members)
    assert not covers(matchers, {"alertname": "X", "pod": "p2"})


def test_silences_are_bounded_and_still_cover_every_member() -> None:
    """Sixty distinct combinations under a limit of 4: four silences that cover every member."""
    members = [{"alertname": f"A{i % 6}", "instance": f"h{i}", "job": f"j{i % 10}"} for i in range(60)]
    groups = silence_groups(members, 4)
    assert len(groups) <= 4
    assert all(any(covers(g, m) for g in groups) for m in members)


def test_values_are_literal_in_the_pattern() -> None:
    """Regex metacharacters in a label value match only themselves."""
    members = [{"alertname": "X", "path": "/a.b(c)|*"}, {"alertname": "X", "path": "[x]+?{1}^$\\"}]
    [matchers] = silence_groups(members, 10)
    assert all(covers(matchers, m) for m in members)
    assert not covers(matchers, {"alertname": "X", "path": "/aXb(c)|*"})
    assert escape("a.b") == "a\\.b"


def test_no_labels_no_silence() -> None:
    """Members without labels (not kept) give nothing to silence: empty, and acknowledge is rejected."""
    assert silence_groups([{}, {}], 10) == []


def test_settings_refuse_plain_http_elsewhere_and_half_auth() -> None:
    """Plain http to another host needs allow_insecure_http; Basic auth needs both halves; unknown keys fail."""
    with pytest.raises(ValueError, match="plain http"):
        AlertmanagerUpstream.model_validate({"url": "http://am.example.com:9093"})
    AlertmanagerUpstream.model_validate({"url": "http://am.example.com:9093", "allow_insecure_http": True})
    with pytest.raises(ValueError, match="both user and password"):
        AlertmanagerUpstream.model_validate({"url": "http://127.0.0.1:9093", "user": "u"})
    with pytest.raises(ValueError, match="Extra inputs"):
        AlertmanagerUpstream.model_validate({"url": "http://127.0.0.1:9093", "silence": True})


# -- the real Alertmanager ------------------------------------------------------------------------


class Receiver:
    """A webhook receiver that records what Alertmanager notifies, per alert's device and instance."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        return web.Response()

    def count(self, instance: str, device: str) -> int:
        return sum(
            1
            for post in self.posts
            for alert in post["alerts"]
            if alert["labels"].get("instance") == instance and alert["labels"].get("device") == device
        )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    runner, url = await start_app(rec.app)
    yield rec, url
    await runner.cleanup()


@pytest.fixture
def start_am(tmp_path: Path) -> Iterator[Any]:
    binary = require("prometheus-alertmanager")
    procs: list[subprocess.Popen[bytes]] = []

    def start(hook_url: str, cluster: list[str] | None = None) -> tuple[str, subprocess.Popen[bytes]]:
        """An Alertmanager notifying `hook_url` of every alert on its own, re-notifying every 2s; its URL.
        `cluster`: [listen address, peers...] for an HA member, else clustering off."""
        n = len(procs)
        config = {
            "route": {"receiver": "hook", "group_by": ["..."], "group_wait": "0s", "group_interval": "1s",
                      "repeat_interval": "2s"},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": hook_url, "send_resolved": False}]}],
        }  # fmt: skip
        (tmp_path / f"am{n}.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        args = [binary, f"--config.file={tmp_path / f'am{n}.yml'}", f"--storage.path={tmp_path / f'am{n}'}",
                f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        if cluster:
            args += [f"--cluster.listen-address={cluster[0]}", "--cluster.gossip-interval=50ms",
                     "--cluster.pushpull-interval=1s", *(f"--cluster.peer={p}" for p in cluster[1:])]  # fmt: skip
        else:
            args.append("--cluster.listen-address=")
        log = (tmp_path / f"am{n}.log").open("wb")
        procs.append(subprocess.Popen(args, stdout=log, stderr=log))
        return f"http://127.0.0.1:{port}", procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def ready(session: aiohttp.ClientSession, am: str) -> bool:
    try:
        async with session.get(f"{am}/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def push(session: aiohttp.ClientSession, am: str, alerts: list[dict[str, str]]) -> None:
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = [{"labels": labels, "annotations": {"summary": "disk full"}, "endsAt": ends} for labels in alerts]
    async with session.post(f"{am}/api/v2/alerts", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def states(session: aiohttp.ClientSession, am: str) -> dict[tuple[str, str], dict[str, Any]]:
    alerts = await get(session, f"{am}/api/v2/alerts")
    return {(a["labels"]["instance"], a["labels"]["device"]): a["status"] for a in alerts}


@pytest.mark.e2e
async def test_real_alertmanager_silences_extends_and_expires(start_am: Any, receiver: tuple[Receiver, str]) -> None:
    """acknowledge: one silence with the members' matchers, createdBy and comment; their alerts suppressed and
    no longer notified while a neighbour's still are; extend moves endsAt; release expires it and they fire."""
    rec, hook = receiver
    am, _ = start_am(f"{hook}/hook")
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, am), within=20)
        upstream = AlertmanagerUpstream.model_validate({"url": am, "created_by": "bridge-test"}).build("prom", session)
        await push(session, am, [*DISK, OTHER])
        await eventually(lambda: rec.count("web-01", "sda") and rec.count("web-02", "sda"), within=20)

        handle = await upstream.acknowledge(ack(DISK))
        [silence] = await get(session, f"{am}/api/v2/silences")
        assert silence["id"] == handle and silence["status"]["state"] == "active"
        assert silence["createdBy"] == "bridge-test"
        assert silence["comment"].startswith(MARKER) and "INC0010001" in silence["comment"]
        assert sorted((m["name"], m["value"], m["isRegex"]) for m in silence["matchers"]) == [
            ("alertname", "DiskFull", False), ("device", "sda|sdb", True), ("instance", "web-01", False),
            ("severity", "critical", False),
        ]  # fmt: skip

        async def suppressed() -> bool:
            now = await states(session, am)
            return all(now["web-01", d]["state"] == "suppressed" for d in ("sda", "sdb"))

        await eventually(suppressed, within=10)
        now = await states(session, am)
        assert now["web-01", "sda"]["silencedBy"] == [handle]
        assert now["web-02", "sda"]["state"] == "active"  # the neighbour is not silenced

        # Whatever was on its way when the silence came has arrived once the neighbour is notified again.
        seen = rec.count("web-02", "sda")
        await eventually(lambda: rec.count("web-02", "sda") > seen, within=15)
        before = (rec.count("web-01", "sda"), rec.count("web-01", "sdb"))
        seen = rec.count("web-02", "sda")
        await eventually(lambda: rec.count("web-02", "sda") >= seen + 2, within=20)  # two more repeats of it
        assert (rec.count("web-01", "sda"), rec.count("web-01", "sdb")) == before  # none of the silenced

        later = ack(DISK, until_s=7200, handle=handle)
        extended = await upstream.extend(later)
        [silence] = [s for s in await get(session, f"{am}/api/v2/silences") if s["id"] == extended]
        assert silence["status"]["state"] == "active"
        ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
        assert abs(ends.timestamp() * 1000 - later.until_ms) < 1000
        assert extended == handle  # only its end moved: Alertmanager kept the silence

        await upstream.release(ack(DISK, handle=extended))
        gone = await get(session, f"{am}/api/v2/silence/{extended}")
        assert gone["status"]["state"] == "expired"

        async def firing() -> bool:
            now = await states(session, am)
            return all(now["web-01", d]["state"] == "active" for d in ("sda", "sdb"))

        await eventually(firing, within=10)
        await upstream.release(ack(DISK, handle=extended))  # again: already expired is done with


@pytest.mark.e2e
async def test_real_alertmanager_extend_follows_a_grown_incident(start_am: Any, receiver: tuple[Receiver, str]) -> None:
    """A member that joined after the acknowledgement is covered once extended; one expired by hand is made again."""
    _, hook = receiver
    am, _ = start_am(f"{hook}/hook")
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, am), within=20)
        upstream = AlertmanagerUpstream.model_validate({"url": am}).build("prom", session)
        first = await upstream.acknowledge(ack(DISK[:1]))
        grown = await upstream.extend(ack(DISK, handle=first))
        [silence] = [s for s in await get(session, f"{am}/api/v2/silences") if s["status"]["state"] == "active"]
        assert silence["id"] == grown
        assert {m["name"]: m["value"] for m in silence["matchers"]}["device"] == "sda|sdb"

        async with session.delete(f"{am}/api/v2/silence/{grown}") as resp:  # someone expires it in the UI
            assert resp.status == 200
        again = await upstream.extend(ack(DISK, handle=grown))
        assert again != grown
        assert (await get(session, f"{am}/api/v2/silence/{again}"))["status"]["state"] == "active"


@pytest.mark.e2e
async def test_real_alertmanager_errors(start_am: Any, receiver: tuple[Receiver, str]) -> None:
    """A silence Alertmanager refuses is rejected; no Alertmanager at all is transient."""
    _, hook = receiver
    am, proc = start_am(f"{hook}/hook")
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, am), within=20)
        upstream = AlertmanagerUpstream.model_validate({"url": am}).build("prom", session)
        with pytest.raises(DeskRejected, match="invalid label name"):  # 0.25 takes classic label names only
            await upstream.acknowledge(ack([{"alertname": "X", "bad-name": "y"}]))
        with pytest.raises(DeskRejected, match="nothing to silence"):
            await upstream.acknowledge(ack([{}]))
        proc.terminate()
        proc.wait(10)
        with pytest.raises(DeskTransient, match=r"connection (refused|lost)"):
            await upstream.acknowledge(ack(DISK))


@pytest.mark.e2e
async def test_real_alertmanager_ha_pair(start_am: Any, receiver: tuple[Receiver, str]) -> None:
    """An HA pair: the silence made on the first gossips to the second; with the first gone, extend and release
    go to the second."""
    _, hook = receiver
    first_peer, second_peer = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    am1, proc1 = start_am(f"{hook}/hook", [first_peer])
    am2, _ = start_am(f"{hook}/hook", [second_peer, first_peer])
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, am1), within=30)
        await eventually(lambda: ready(session, am2), within=30)

        async def peers() -> bool:
            status = await get(session, f"{am2}/api/v2/status")
            return len(status["cluster"].get("peers") or []) == 2

        await eventually(peers, within=30)
        upstream = AlertmanagerUpstream.model_validate({"url": [am1, am2]}).build("prom", session)
        handle = await upstream.acknowledge(ack(DISK))

        async def on_second() -> bool:
            return any(s["id"] == handle for s in await get(session, f"{am2}/api/v2/silences"))

        await eventually(on_second, within=20)

        proc1.terminate()
        proc1.wait(10)
        extended = await upstream.extend(ack(DISK, until_s=7200, handle=handle))
        assert (await get(session, f"{am2}/api/v2/silence/{extended}"))["status"]["state"] == "active"
        await upstream.release(ack(DISK, handle=extended))
        assert (await get(session, f"{am2}/api/v2/silence/{extended}"))["status"]["state"] == "expired"
        await asyncio.sleep(0)


async def test_5xx_is_transient_and_the_next_url_is_tried() -> None:
    """A peer answering 503 is passed over for the next; when every one does, transient; a 401 (a proxy's) is
    rejected and not passed over."""
    seen: list[str] = []

    def answering(status: int, body: Any, name: str) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            seen.append(f"{name} {request.method} {request.path}")
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    down, _ = await start_app(answering(503, "unavailable", "down"))
    up, up_url = await start_app(answering(200, {"silenceID": "5b1c0b33-0000-4000-8000-000000000001"}, "up"))
    denied, denied_url = await start_app(answering(401, "unauthorized", "denied"))
    down_url = f"http://127.0.0.1:{down.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            pair = AlertmanagerUpstream.model_validate({"url": [down_url, up_url]}).build("prom", session)
            assert await pair.acknowledge(ack(DISK)) == "5b1c0b33-0000-4000-8000-000000000001"
            # the lookup of a silence made before (a lost answer's), then the silence: each passes `down` over
            assert [s.split("?")[0] for s in seen] == [
                "down GET /api/v2/silences", "up GET /api/v2/silences",
                "down POST /api/v2/silences", "up POST /api/v2/silences",
            ]  # fmt: skip
            alone = AlertmanagerUpstream.model_validate({"url": down_url}).build("prom", session)
            with pytest.raises(DeskTransient, match="HTTP 503"):
                await alone.acknowledge(ack(DISK))
            proxy = AlertmanagerUpstream.model_validate({"url": [denied_url, up_url], "token": "t"})
            with pytest.raises(DeskRejected, match="HTTP 401"):
                await proxy.build("prom", session).acknowledge(ack(DISK))
            assert seen[-1] == "denied POST /api/v2/silences"
    finally:
        for runner in (down, up, denied):
            await runner.cleanup()
