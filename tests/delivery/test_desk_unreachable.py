"""A desk that cannot be reached: the log names the desk, its URL, the cause and what to do, once per
retry round rather than once per call."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson
import pytest

from bridge.core.errors import Cause
from bridge.delivery.worker import desk_hint
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import eventually, mapping, post
from tests.running import LogTail, scrape, spawn, value, wait_ready

ATTEMPTS = 3
SIMULATOR_8081 = "start the simulator: bridge simulate servicenow --port 8081"


async def test_a_desk_on_a_closed_port_is_logged_with_url_cause_and_hint(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Nothing listens at the desk's URL: each retry round logs one desk_unavailable line with the
    desk, its URL, `connection refused` and the command that starts the simulator there."""
    desk_port, port = free_port(), free_port()
    desk_url = f"http://127.0.0.1:{desk_port}"
    data = mapping(desk_url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    path = tmp_path / "mapping.yaml"
    path.write_bytes(orjson.dumps(data))
    env = {"BRIDGE_ATTEMPTS": str(ATTEMPTS), "BRIDGE_BACKOFF_MAX_S": "0.5"}
    proc = spawn(path, redis_server.url, port, **env)
    tail = LogTail(proc)
    try:
        await wait_ready(port)
        assert (await post(f"http://127.0.0.1:{port}/webhook/alertmanager", group(alert())))[0] == 202
        await eventually(lambda: len(tail.events("desk_unavailable")) >= 2, within=30)
        _, samples = await scrape(f"http://127.0.0.1:{port}")
        lines = len(tail.events("desk_unavailable"))  # read after the scrape: calls only grow meanwhile
        calls = sum(
            value(samples, "bridge_desk_calls_total", desk="snow", action=action, outcome="transient")
            for action in ("find", "open")
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        tail.join()

    # Every line ends a round of ATTEMPTS calls: the in-pass retries are not logged one by one.
    assert 2 <= lines <= calls / ATTEMPTS, (lines, calls)
    line = tail.events("desk_unavailable")[0]
    assert (line["desk"], line["url"], line["cause"]) == ("snow", desk_url, "connection refused")
    assert line["hint"] == f"start the simulator: bridge simulate servicenow --port {desk_port}"
    assert f"snow find: connection refused at {desk_url}" in line["error"]
    assert "status" not in line  # there was no answer, so no status to show as null


@pytest.mark.parametrize(
    ("kind", "url", "cause", "hint"),
    [
        ("servicenow", "http://127.0.0.1:8081", Cause.REFUSED, SIMULATOR_8081),
        ("servicenow", "http://localhost:8081", Cause.REFUSED, SIMULATOR_8081),
        ("jira", "http://127.0.0.1:8082", Cause.REFUSED, "start the simulator: bridge simulate jira --port 8082"),
        ("servicenow", "https://acme.service-now.com", Cause.REFUSED,
         "nothing accepts connections at https://acme.service-now.com: is the desk up, and is desks.snow.url right?"),
        ("servicenow", "https://acme.service-nwo.com", Cause.DNS,
         "the host acme.service-nwo.com is not known to DNS: check desks.snow.url"),
        ("servicenow", "https://acme.service-now.com", Cause.TLS,
         "the desk's certificate is not trusted: set desks.snow.ca_file to the CA bundle that signed it"),
        ("servicenow", "https://acme.service-now.com", Cause.TIMEOUT,
         "no answer within desks.snow.timeout: check the network path to https://acme.service-now.com, "
         "or raise the timeout"),
        ("servicenow", "https://acme.service-now.com", "HTTP 503", ""),
    ],
)  # fmt: skip
def test_the_hint_follows_the_cause(kind: str, url: str, cause: str, hint: str) -> None:
    """A refused local desk is the simulator not started (the example's default 127.0.0.1:8081 above all);
    a DNS, TLS or timeout cause points at the desk's key to check; an HTTP status needs no hint."""
    assert desk_hint("snow", kind, url, cause) == hint
