"""Start-up of `bridge serve`: a Redis that cannot be reached yet is waited for with the HTTP server
already up, a signal meanwhile stops it cleanly, and open sources are named in one warning."""

from __future__ import annotations

from pathlib import Path

import orjson

from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.running import LogTail, call, spawn, stopped, wait_ready, write_mapping


async def test_redis_unreachable_at_start_is_waited_for_then_used(snow: Snow, tmp_path: Path) -> None:
    """Redis down at start: /healthz 200, /readyz 503 saying so, one line per try and no traceback;
    once a Redis answers on that port the bridge starts and an alert becomes a ticket."""
    redis_port, port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    proc = spawn(write_mapping(tmp_path / "mapping.yaml", snow), redis_url, port)
    tail = LogTail(proc)
    server = EmbeddedRedis(tmp_path / "redis", port=redis_port)
    try:
        await eventually(lambda: len(tail.events("redis_unreachable")) >= 2, within=20)
        base = f"http://127.0.0.1:{port}"
        assert (await call("GET", base + "/healthz", token=None))[:2] == (200, {"status": "ok"})
        status, body, _ = await call("GET", base + "/readyz", token=None)
        assert (status, body["status"], body["redis"]) == (503, "unready", "unreachable"), body
        assert f"Redis at {redis_url} is unreachable" in body["detail"], body
        assert not tail.events("bridge_started")

        server.start()
        await wait_ready(port)
        assert (await post(base + "/webhook/alertmanager", group(alert())))[0] == 202
        await eventually(lambda: snow.incidents(), within=15)
    finally:
        code = await stopped(proc, tail)
        server.stop()

    assert code == 0, tail.text()[-3000:]
    assert "Traceback" not in tail.text()
    tries = tail.events("redis_unreachable")
    assert [t["attempt"] for t in tries] == list(range(1, len(tries) + 1))
    assert all(t["url"] == redis_url and "Connection refused" in t["error"] for t in tries), tries
    waits = [t["retry_in_s"] for t in tries]
    assert waits[:2] == [0.5, 1.0] and max(waits) <= 10.0, waits  # doubling, capped
    names = [e["event"] for e in tail.events()]
    assert names.index("redis_reached") < names.index("bridge_started") < names.index("bridge_stopped")


async def test_sigterm_while_waiting_for_redis_stops_cleanly(snow: Snow, tmp_path: Path) -> None:
    """SIGTERM while Redis is still unreachable ends the wait: exit 0, bridge_stopped, no traceback."""
    port = free_port()
    proc = spawn(write_mapping(tmp_path / "mapping.yaml", snow), f"redis://127.0.0.1:{free_port()}/0", port)
    tail = LogTail(proc)
    try:
        await eventually(lambda: tail.events("redis_unreachable"), within=20)
        assert (await call("GET", f"http://127.0.0.1:{port}/readyz", token=None))[0] == 503
    finally:
        code = await stopped(proc, tail)
    assert code == 0, tail.text()[-3000:]
    assert "Traceback" not in tail.text()
    names = [e["event"] for e in tail.events()]
    assert "bridge_stopped" in names and "bridge_started" not in names, names


async def test_open_sources_are_named_in_one_warning(snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Three sources, two without a secret: start-up logs one warning line naming both, not one per source."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    data = orjson.loads(path.read_bytes())
    data["sources"] |= {"grafana": {"kind": "grafana"}, "nagios": {"kind": "nagios", "secret": "n4gios"}}
    path.write_bytes(orjson.dumps(data))
    port = free_port()
    proc = spawn(path, redis_server.url, port)
    tail = LogTail(proc)
    try:
        await wait_ready(port)
    finally:
        code = await stopped(proc, tail)
    assert code == 0, tail.text()[-3000:]
    warnings = [e for e in tail.events() if "unauthenticated" in e["event"]]
    assert len(warnings) == 1, warnings
    assert warnings[0]["event"] == "sources_unauthenticated" and warnings[0]["level"] == "warning"
    assert warnings[0]["sources"] == ["alertmanager", "grafana"]
