"""`rediss+sentinel://user:password@...`: TLS and the ACL user name reach the sentinels as well as the
master they name (before: the sentinels were asked in plain text and without the user name)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.process.embedded import free_port
from bridge.process.server import Bridge
from bridge.runtime.connect import connect
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post
from tests.tls import private_ca


def _listening(port: int, proc: subprocess.Popen[bytes], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _start(binaries: list[str], conf: Path, *extra: str) -> subprocess.Popen[bytes] | None:
    """The first of `binaries` that runs `conf` (a redis-server built without TLS refuses tls-port)."""
    port = int(next(line.split()[1] for line in conf.read_text().splitlines() if line.startswith("tls-port")))
    for binary in binaries:
        proc = subprocess.Popen([binary, str(conf), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _listening(port, proc):
            binaries[:] = [binary]
            return proc
        proc.kill()
        proc.wait(5)
    return None


@pytest.fixture
def tls_sentinel(tmp_path: Path) -> Iterator[str]:
    """A master and a Sentinel, both TLS only and both with the default user off (ACL user alice)."""
    binaries = list(dict.fromkeys(p for p in [shutil.which("redis-server"), "/usr/bin/redis-server"] if p))
    ca, _ = private_ca(tmp_path)
    master_port, sentinel_port = free_port(), free_port()
    tls = (
        f"tls-cert-file {tmp_path / 'server.pem'}\ntls-key-file {tmp_path / 'server.key'}\n"
        f"tls-ca-cert-file {ca}\ntls-auth-clients no\n"
    )
    acl = "user default off\nuser alice on >s3cret-pw ~* &* +@all\n"
    master_conf, sentinel_conf = tmp_path / "master.conf", tmp_path / "sentinel.conf"
    master_conf.write_text(f"port 0\ntls-port {master_port}\nbind 127.0.0.1\ndir {tmp_path}\nsave ''\n{tls}{acl}")
    sentinel_conf.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n{tls}tls-replication yes\n{acl}"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel auth-user mymaster alice\nsentinel auth-pass mymaster s3cret-pw\n"
    )
    master = _start(binaries, master_conf)
    if master is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server built with TLS (.ci/run installs Debian's)")
        pytest.skip("no redis-server built with TLS")
    sentinel = _start(binaries, sentinel_conf, "--sentinel")
    assert sentinel is not None, "the sentinel did not start"
    try:
        yield f"rediss+sentinel://alice:s3cret-pw@127.0.0.1:{sentinel_port}/mymaster?ssl_ca_certs={ca}"
    finally:
        for proc in (sentinel, master):
            proc.terminate()
            proc.wait(10)


async def test_the_bridge_reaches_a_tls_sentinel_with_an_acl_user(snow: Snow, tls_sentinel: str) -> None:
    """Through a TLS-only Sentinel with the default user off: the client is alice, and an alert becomes a ticket."""
    client = connect(tls_sentinel, socket_timeout=5)
    try:
        assert await client.acl_whoami() in ("alice", b"alice")
    finally:
        await client.aclose()
    bridge = await Bridge(mapping(snow.url), tls_sentinel, port=0, tuning=FAST).start()
    try:
        assert (await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert())))[0] == 202
        await eventually(lambda: snow.incidents(), within=15)
    finally:
        await bridge.stop()
