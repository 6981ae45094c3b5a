"""Safe defaults of `bridge serve`: this machine only unless --host says otherwise; on an address other
machines can reach, sources without a secret stop the start unless --allow-unauthenticated."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest

from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.process.server import local_only
from tests.conftest import Snow
from tests.running import LogTail, spawn, stopped, wait_ready, write_mapping


def outward_address() -> str:
    """An address of this machine that is not loopback (the one a route to the outside would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = str(sock.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no address besides loopback")
    return address


def reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


async def test_serve_listens_on_this_machine_only_by_default(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Without --host the bridge answers on 127.0.0.1 and not on the machine's other address."""
    outward = outward_address()
    port = free_port()
    proc = spawn(write_mapping(tmp_path / "mapping.yaml", snow), redis_server.url, port)
    tail = LogTail(proc)
    try:
        await wait_ready(port)
        assert reachable("127.0.0.1", port)
        assert not reachable(outward, port)
    finally:
        assert await stopped(proc, tail) == 0
    assert tail.events("bridge_started")[0]["host"] == "127.0.0.1"


async def test_an_outward_host_with_open_sources_is_refused_unless_allowed(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """--host 0.0.0.0 with an open source exits 2 naming it and the fixes; --allow-unauthenticated starts it."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    port = free_port()
    refused = spawn(path, redis_server.url, port, "--host", "0.0.0.0")
    tail = LogTail(refused)
    code = await stopped(refused, tail, stop=False)
    assert code == 2, tail.text()
    said = tail.text()
    assert "alertmanager" in said and "--allow-unauthenticated" in said and "secret" in said, said
    assert not reachable("127.0.0.1", port)

    allowed = spawn(path, redis_server.url, port, "--host", "0.0.0.0", "--allow-unauthenticated")
    tail = LogTail(allowed)
    try:
        await wait_ready(port)
    finally:
        assert await stopped(allowed, tail) == 0
    assert tail.events("sources_unauthenticated")[0]["sources"] == ["alertmanager"]


async def test_an_outward_host_with_every_source_secret_starts(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """--host 0.0.0.0 is fine when every source has a secret: no flag needed, no warning."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    data = orjson.loads(path.read_bytes())
    data["sources"]["alertmanager"]["secret"] = "${AM_TOKEN}"
    path.write_bytes(orjson.dumps(data))
    port = free_port()
    proc = spawn(path, redis_server.url, port, "--host", "0.0.0.0", AM_TOKEN="a-long-source-token")
    tail = LogTail(proc)
    try:
        await wait_ready(port)
    finally:
        assert await stopped(proc, tail) == 0
    assert not tail.events("sources_unauthenticated")


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("bridge.example.com", False)],
)  # fmt: skip
def test_which_hosts_count_as_this_machine_only(host: str, local: bool) -> None:
    """Loopback addresses and `localhost` are local; every other address or name may be reached from outside."""
    assert local_only(host) is local
