"""What a 202 means: BRIDGE_DURABILITY=fsync runs the embedded Redis with `appendfsync always`; an
external Redis is asked at start and a warning says when a 202 would not mean fsynced; with
BRIDGE_WAIT_REPLICAS a webhook is answered only once replicas have its alerts (else 503)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from bridge.core.config import MappingConfig, tuning
from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.runtime import durability
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post
from tests.running import ROOT, LogTail, spawn, wait_ready, webhook_url, write_mapping

GENIE_KEY = "genie-key-4e7a"


def serve_embedded(tmp_path: Path, snow: Snow, port: int, **env: str) -> subprocess.Popen[bytes]:
    """`bridge serve` with its embedded Redis (no BRIDGE_REDIS_URL), its data in `tmp_path`/data."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "bridge.cli", "serve", "--config", str(write_mapping(tmp_path / "m.yaml", snow)),
        "--port", str(port), "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_REDIS_URL"} | env
    return subprocess.Popen(command, env=environ, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def embedded_appendfsync(tmp_path: Path, snow: Snow, **env: str) -> str:
    """That embedded Redis's appendfsync, as it runs."""
    port = free_port()
    proc = serve_embedded(tmp_path, snow, port, **env)
    tail = LogTail(proc)
    try:
        await wait_ready(port)
        url = (tmp_path / "data" / "redis" / "url").read_text().strip()
        client = sync_redis.Redis.from_url(url)
        try:
            return str(client.config_get("appendfsync")["appendfsync"])
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        tail.join()


async def test_fsync_durability_runs_the_embedded_redis_with_appendfsync_always(snow: Snow, tmp_path: Path) -> None:
    """The embedded Redis syncs every write with BRIDGE_DURABILITY=fsync, once a second by default."""
    assert await embedded_appendfsync(tmp_path / "default", snow) == "everysec"
    assert await embedded_appendfsync(tmp_path / "fsync", snow, BRIDGE_DURABILITY="fsync") == "always"


async def test_an_external_redis_is_asked_and_a_202_that_is_not_fsynced_is_warned_about(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """fsync asked of a Redis on everysec: one warning saying what a crash loses; on always, none."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    warnings: list[list[dict[str, Any]]] = []
    for appendfsync in ("everysec", "always"):
        sync_redis.Redis(port=redis_server.port).config_set("appendfsync", appendfsync)
        port = free_port()
        proc = spawn(path, redis_server.url, port, BRIDGE_DURABILITY="fsync")
        tail = LogTail(proc)
        try:
            await wait_ready(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
            tail.join()
        warnings.append(tail.events("durability_not_fsynced"))
        if appendfsync == "always":
            assert tail.events("durability")[0]["a_crash_loses"].startswith("nothing"), tail.text()
    assert len(warnings[0]) == 1 and "last second" in warnings[0][0]["a_crash_loses"], warnings
    assert warnings[1] == []


def with_opsgenie(snow_url: str) -> MappingConfig:
    """The tests' mapping with an Opsgenie door (source `og`, API key GENIE_KEY) beside /webhook/alertmanager."""
    raw = mapping(snow_url).model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["desks"]["snow"]["password"] = "s3cret"  # a SecretStr dumps masked
    raw["sources"]["og"] = {"kind": "opsgenie", "secret": GENIE_KEY}
    return MappingConfig.model_validate(raw)


async def opsgenie_create(bridge: Any, alias: str) -> tuple[int, dict[str, Any]]:
    """An Opsgenie client's create, through the door."""
    url = f"http://127.0.0.1:{bridge.port}/opsgenie/og/v2/alerts"
    body = {"message": f"disk full on {alias}", "alias": alias}
    return await post(url, body, Authorization=f"GenieKey {GENIE_KEY}")


async def test_with_wait_replicas_a_webhook_is_answered_once_a_replica_has_it(
    snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """No replica: 503 JSON (the alert is in Redis; the sender sends again), at /webhook and at the Opsgenie
    door. A replica in sync: 202 at both, and it has both alerts."""
    # No trim of the intake while the test reads it on the replica (it runs at start, then every claim_every_s).
    waiting = dataclasses.replace(FAST, wait_replicas=1, wait_timeout_ms=300, claim_every_s=60.0)
    bridge = await make_bridge(with_opsgenie(snow.url), tuning=waiting)
    status, answer = await post(webhook_url(bridge), group(alert(instance="alone")))
    assert (status, answer["error"]) == (503, "unavailable") and "replicas" in answer["detail"], answer
    status, answer = await opsgenie_create(bridge, "og-alone")
    assert (status, answer["error"]) == (503, "unavailable") and "replicas" in answer["message"], answer

    replica = EmbeddedRedis(tmp_path / "replica", appendonly=False).start()
    try:
        sync_redis.Redis(port=replica.port).replicaof("127.0.0.1", redis_server.port)

        async def in_sync() -> bool:
            info: dict[str, Any] = sync_redis.Redis(port=replica.port).info("replication")
            return info.get("master_link_status") == "up"

        await eventually(in_sync, within=20)
        status, answer = await post(webhook_url(bridge), group(alert(instance="replicated")))
        assert status == 202, answer
        status, answer = await opsgenie_create(bridge, "og-replicated")
        assert status == 202 and answer["result"] == "Request will be processed", answer
        copy = aioredis.Redis(port=replica.port)
        try:
            entries = await copy.xrange("bridge:v1:intake")
            assert any(b"replicated" in fields[b"a"] for _, fields in entries)
            assert any(b"og-replicated" in fields[b"a"] for _, fields in entries)
        finally:
            await copy.aclose()
    finally:
        replica.stop()


@pytest.mark.parametrize("env", [{"BRIDGE_DURABILITY": "sometimes"}, {"BRIDGE_WAIT_REPLICAS": "-1"}])
def test_a_bad_durability_setting_is_refused(env: dict[str, str]) -> None:
    """An unknown durability or a negative replica count is an error naming the variable."""
    with pytest.raises(ValueError, match="BRIDGE_"):
        tuning(env)


async def test_a_redis_gone_again_right_after_it_was_reached_does_not_end_the_start() -> None:
    """The start asks Redis for its persistence settings just after reaching it; Redis gone again by then
    (a restart) is said (`durability_unknown`) and the start goes on, as it does when CONFIG is refused."""
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1)  # nothing listens there
    try:
        with capture_logs() as events:
            assert await durability.check(client, FAST) == {}
    finally:
        await client.aclose()
    assert [e["event"] for e in events] == ["durability_unknown"]
    assert "Connect" in events[0]["error"] or "111" in events[0]["error"], events
