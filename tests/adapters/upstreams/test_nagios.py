"""The nagios upstream: external commands written to a FIFO without blocking and without injection, and
against the real Nagios Core (Debian's nagios4): the acknowledgement lands through the command file, and the
ACKNOWLEDGEMENT notification Nagios then sends through the shipped script is recognised as the bridge's own."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.upstreams.nagios import PIPE_BUF, NagiosCommands, NagiosUpstream
from bridge.core.desk import TicketRef
from bridge.core.errors import DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement
from tests.conftest import Snow
from tests.e2e.test_nagios import Nagios, bridge_config
from tests.running import base_url, scrape, value


def ack(
    members: list[dict[str, str]], comment: str = f"Acknowledged from ticket INC0010001 by jane {MARKER}"
) -> Acknowledgement:
    return Acknowledgement(
        incident="nagios:abc", source="nagios-main", ticket=TicketRef("INC0010001", "INC0010001", ""),
        author="jane", comment=comment, members=members,
    )  # fmt: skip


class Pipe:
    """A FIFO with a reader, as Nagios holds its command file."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read(self) -> list[str]:
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return data.decode().splitlines()


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[Pipe]:
    p = Pipe(tmp_path / "nagios.cmd")
    yield p
    os.close(p.fd)


def commands(path: Path, **settings: Any) -> NagiosCommands:
    return NagiosUpstream.model_validate({"command_file": str(path), **settings}).build("nagios-main", None)  # type: ignore[arg-type]


def bare(lines: list[str]) -> list[str]:
    """The lines without their `[time] ` prefix, which must be there."""
    assert all(re.match(r"^\[\d+\] ", line) for line in lines), lines
    return [line.split("] ", 1)[1] for line in lines]


async def test_acknowledge_writes_one_command_per_object(pipe: Pipe) -> None:
    """A service and a host member, each once: ACKNOWLEDGE_SVC/HOST_PROBLEM with sticky 2, notify, not persistent."""
    members = [{"host": "web-01", "service": "HTTP"}, {"host": "web-01", "service": "HTTP"}, {"host": "db-01"}]
    assert await commands(pipe.path).acknowledge(ack(members)) == ""
    said = f"{MARKER} Acknowledged from ticket INC0010001 by jane"
    assert bare(pipe.read()) == [
        f"ACKNOWLEDGE_SVC_PROBLEM;web-01;HTTP;2;1;0;alert-ticket-bridge;{said}",
        f"ACKNOWLEDGE_HOST_PROBLEM;db-01;2;1;0;alert-ticket-bridge;{said}",
    ]


async def test_release_and_comment(pipe: Pipe) -> None:
    """release removes the acknowledgement of each object; a comment is ADD_*_COMMENT with the marker."""
    upstream = commands(pipe.path, author="bridge", persistent=True)
    members = [{"host": "web-01", "service": "HTTP"}, {"host": "db-01"}]
    await upstream.release(ack(members))
    await upstream.comment(ack(members), f"restarted the pool\n{MARKER}")
    assert bare(pipe.read()) == [
        "REMOVE_SVC_ACKNOWLEDGEMENT;web-01;HTTP",
        "REMOVE_HOST_ACKNOWLEDGEMENT;db-01",
        f"ADD_SVC_COMMENT;web-01;HTTP;1;bridge;{MARKER} restarted the pool (INC0010001)",
        f"ADD_HOST_COMMENT;db-01;1;bridge;{MARKER} restarted the pool (INC0010001)",
    ]


@pytest.mark.parametrize(
    "member",
    [
        {"host": "web-01\n[1700000000] SHUTDOWN_PROGRAM", "service": "HTTP"},
        {"host": "web-01", "service": "HTTP\r\n[1700000000] DISABLE_NOTIFICATIONS"},
        {"host": "web-01;HTTP;2;1;0;x;y\n", "service": "HTTP"},
        {"host": "web-01", "service": "HTTP;2"},
        {"host": "web\x0001"},
    ],
    ids=["newline-in-host", "crlf-in-service", "fields-in-host", "semicolon-in-service", "nul"],
)
async def test_a_name_that_could_inject_a_command_is_refused(pipe: Pipe, member: dict[str, str]) -> None:
    """A host or service name with a newline, ';' or control character: rejected, and nothing at all written."""
    members = [{"host": "db-01"}, member]
    with pytest.raises(DeskRejected, match="break the external command"):
        await commands(pipe.path).acknowledge(ack(members))
    assert pipe.read() == []


async def test_a_comment_cannot_start_a_second_command(pipe: Pipe) -> None:
    """Newlines in the comment (the desk user's words) become spaces: one line, one command."""
    hostile = f"ok\n[1700000000] SHUTDOWN_PROGRAM\r\nbye {MARKER}"
    await commands(pipe.path).acknowledge(ack([{"host": "db-01"}], hostile))
    [line] = pipe.read()
    said = f"{MARKER} ok [1700000000] SHUTDOWN_PROGRAM bye (INC0010001)"
    assert bare([line]) == [f"ACKNOWLEDGE_HOST_PROBLEM;db-01;2;1;0;alert-ticket-bridge;{said}"]


async def test_writes_are_whole_lines_within_pipe_buf(pipe: Pipe) -> None:
    """A long comment is cut to fit one atomic write; many objects are written in whole lines; a pipe that
    Nagios does not empty fast enough is transient, never a blocked event loop."""
    members = [{"host": f"h{i:03d}", "service": "HTTP"} for i in range(10)]
    await commands(pipe.path).acknowledge(ack(members, "x" * 10_000))
    lines = pipe.read()
    assert len(lines) == 10
    assert all(len(line.encode()) < PIPE_BUF for line in lines)
    assert all(line.split(";")[1] == f"h{i:03d}" and line.endswith("x") for i, line in enumerate(lines))
    many = [{"host": f"h{i:03d}", "service": "HTTP"} for i in range(200)]  # 200 x 4 KiB: more than a pipe holds
    with pytest.raises(DeskTransient, match="is full"):
        await commands(pipe.path).acknowledge(ack(many, "x" * 10_000))
    assert all(line.endswith("x") for line in pipe.read())  # what went in went in whole


async def test_no_nagios_is_transient_and_a_plain_file_rejected(tmp_path: Path) -> None:
    """No command file (Nagios stopped), or a FIFO nobody reads: transient. A regular file is not Nagios': rejected."""
    members = [{"host": "db-01"}]
    with pytest.raises(DeskTransient, match="Nagios not running"):
        await commands(tmp_path / "absent.cmd").acknowledge(ack(members))
    os.mkfifo(tmp_path / "lonely.cmd")
    with pytest.raises(DeskTransient, match="no reader"):
        await commands(tmp_path / "lonely.cmd").acknowledge(ack(members))
    (tmp_path / "plain.cmd").write_text("")
    with pytest.raises(DeskRejected, match="not a FIFO"):
        await commands(tmp_path / "plain.cmd").acknowledge(ack(members))
    assert (tmp_path / "plain.cmd").read_text() == ""


async def test_members_without_host_are_rejected(pipe: Pipe) -> None:
    """Nothing to name: rejected (a dead letter), not retried."""
    with pytest.raises(DeskRejected, match="no member has a `host` label"):
        await commands(pipe.path).acknowledge(ack([{"alertname": "X"}]))


def test_an_author_that_would_break_the_line_is_a_config_error() -> None:
    """The author is a field too: ';' or a newline in it is refused when the mapping is read."""
    with pytest.raises(ValueError, match="author"):
        NagiosUpstream.model_validate({"command_file": "/x", "author": "a;b"})


# -- the real Nagios --------------------------------------------------------------------------------


def service_status(nagios: Nagios, service: str) -> dict[str, str]:
    """The service's block in Nagios' status.dat."""
    path = nagios.dir / "var" / "status.dat"
    text = path.read_text(errors="replace") if path.exists() else ""
    for block in re.findall(r"servicestatus \{\n(.*?)\n\s*\}", text, re.S):
        fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("host_name") == "web-01" and fields.get("service_description") == service:
            return fields
    return {}


@pytest.mark.e2e
async def test_real_nagios_takes_the_acknowledgement_and_its_echo_is_ours(
    snow: Snow, make_bridge: Any, start_nagios: Any, redis: aioredis.Redis
) -> None:
    """The upstream's ACKNOWLEDGE_SVC_PROBLEM lands (status.dat: acknowledged, sticky); Nagios' ACKNOWLEDGEMENT
    notification comes back through the shipped script and is dropped as the bridge's own (counted, no work
    note); after release, a person's acknowledgement is a work note as before."""
    service = "HTTP"
    bridge = await make_bridge(bridge_config(snow.url))
    nagios = start_nagios(bridge.port, service, "status_update_interval=1\n")
    await nagios.wait(lambda: "Successfully launched command file worker" in nagios.log(), "Nagios to start")
    await nagios.wait(lambda: nagios.service_result(service, 2, "CRITICAL - refused"), "a reader on the pipe")
    await nagios.wait(lambda: snow.incidents(), "the incident")
    [ticket] = snow.incidents()

    upstream = NagiosUpstream.model_validate({"command_file": str(nagios.dir / "rw" / "nagios.cmd")})
    members = [{"host": "web-01", "service": service, "object_type": "service", "state": "CRITICAL"}]
    comment = f"Acknowledged from ticket {ticket['number']} by jane {MARKER}"
    await upstream.build("nagios-main", None).acknowledge(ack(members, comment))  # type: ignore[arg-type]

    await nagios.wait(lambda: service_status(nagios, service).get("problem_has_been_acknowledged") == "1", "the ack")
    assert service_status(nagios, service)["acknowledgement_type"] == "2"  # sticky
    await nagios.wait(lambda: nagios.notifications(r"ACKNOWLEDGEMENT \(CRITICAL\)"), "the ACKNOWLEDGEMENT notification")

    async def counted() -> bool:
        _, samples = await scrape(base_url(bridge))
        return value(samples, "bridge_alerts_ours_total", source="nagios-main") == 1

    await nagios.wait(counted, "the bridge to count the echo as its own")
    assert snow.notes(ticket) == []
    assert nagios.failed_notifications() == []  # the bridge answered 202: Nagios does not retry it

    # The echo was dropped, not everything: released, then acknowledged by a person, which is a work note.
    await upstream.build("nagios-main", None).release(ack(members))  # type: ignore[arg-type]
    await nagios.wait(lambda: service_status(nagios, service).get("problem_has_been_acknowledged") == "0", "release")
    assert nagios.command(f"ACKNOWLEDGE_SVC_PROBLEM;web-01;{service};2;1;0;jdoe;Looking into it")
    await nagios.wait(lambda: snow.notes(ticket), "the person's acknowledgement as a work note")
    [note] = snow.notes(ticket)
    assert note.startswith(f"[acknowledged] {service} on web-01 (critical): Acknowledged by jdoe: Looking into it")
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_alerts_ours_total", source="nagios-main") == 1


@pytest.mark.e2e
async def test_real_nagios_whole_loop_from_the_desk(
    snow: Snow, make_bridge: Any, start_nagios: Any, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The whole loop: a person takes the ticket at the ServiceNow simulator, its Business Rule pushes that to
    the bridge, the bridge acknowledges the problem in the real Nagios through its command file, and Nagios'
    ACKNOWLEDGEMENT notification coming back is the bridge's own: counted, no work note, no second action."""
    from tests.sync.test_loop_back import TOKEN as SYNC_TOKEN
    from tests.sync.test_loop_back import applied, human, sim

    service = "HTTP"
    data = bridge_config(snow.url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # (secrets dump masked)
    data["sources"]["nagios-main"]["secret"] = "nagios-bridge-token"
    data["sources"]["nagios-main"]["upstream"] = {"command_file": str(tmp_path / "nagios" / "rw" / "nagios.cmd")}
    data["sync"] = {"snow": {"secret": SYNC_TOKEN}}
    bridge = await make_bridge(type(bridge_config(snow.url)).model_validate(data))
    push = {"url": f"{base_url(bridge)}/desk-events/snow", "headers": {"Authorization": f"Bearer {SYNC_TOKEN}"}}
    await sim(snow, "/_sim/push", push)
    nagios = start_nagios(bridge.port, service, "status_update_interval=1\n")
    await nagios.wait(lambda: "Successfully launched command file worker" in nagios.log(), "Nagios to start")
    await nagios.wait(lambda: nagios.service_result(service, 2, "CRITICAL - refused"), "a reader on the pipe")
    await nagios.wait(lambda: snow.incidents(), "the incident")
    [ticket] = snow.incidents()

    await human(snow, ticket, "jdoe", state="2")  # in progress: taken by a person
    await nagios.wait(lambda: service_status(nagios, service).get("problem_has_been_acknowledged") == "1", "the ack")
    line = next(line for line in nagios.log().splitlines() if "EXTERNAL COMMAND: ACKNOWLEDGE_SVC_PROBLEM" in line)
    assert f";web-01;{service};2;1;0;alert-ticket-bridge;{MARKER} " in line and ticket["number"] in line
    await nagios.wait(lambda: nagios.notifications(r"ACKNOWLEDGEMENT \(CRITICAL\)"), "the ACKNOWLEDGEMENT notification")

    async def counted() -> bool:
        _, samples = await scrape(base_url(bridge))
        return value(samples, "bridge_alerts_ours_total", source="nagios-main") == 1

    await nagios.wait(counted, "the bridge to count the echo as its own")
    assert await applied(redis, "ACKNOWLEDGE")
    assert snow.notes(ticket) == []
    assert nagios.log().count("EXTERNAL COMMAND: ACKNOWLEDGE_SVC_PROBLEM") == 1
    assert nagios.failed_notifications() == []

    from tests.sync.test_loop_back import RESOLVE

    await human(snow, ticket, "jdoe", **RESOLVE)  # resolved by the person: the acknowledgement is released
    await nagios.wait(lambda: "EXTERNAL COMMAND: REMOVE_SVC_ACKNOWLEDGEMENT;web-01;HTTP" in nagios.log(), "release")
    await nagios.wait(lambda: service_status(nagios, service).get("problem_has_been_acknowledged") == "0", "no ack")
