"""The CLI's admin commands find the embedded Redis of a running `bridge serve` through the data directory,
and say how to start one when there is none, or when the one recorded there is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from bridge.core.errors import ConfigError
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.conftest import Snow, eventually
from tests.running import ROOT, wait_ready

EXAMPLE = ROOT / "bridge" / "samples" / "example.yaml"
FIRING = ROOT / "bridge" / "samples" / "alertmanager_firing.json"


def _env(**extra: str) -> dict[str, str]:
    """The environment without what would choose the Redis or the data directory for the command."""
    env = {k: v for k, v in os.environ.items() if k not in ("BRIDGE_REDIS_URL", "BRIDGE_DATA_DIR")}
    return {**env, **extra}


async def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`bridge ARGS` run from `cwd`, off the event loop (the desk simulator runs on it)."""
    command = [sys.executable, "-m", "bridge.cli", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, cwd=cwd, env=_env(), timeout=60
    )


def assert_says_how_to_start_one(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "`bridge serve`" in done.stderr and "BRIDGE_REDIS_URL" in done.stderr, done.stderr


async def test_admin_commands_find_the_embedded_redis_of_a_bridge_serve_started_with_no_arguments(
    tmp_path: Path, snow: Snow
) -> None:
    """`bridge serve` alone (packaged mapping, embedded Redis in ./.bridge-data) is found by `bridge incidents list`."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = _env(SERVICENOW_URL=snow.url, SERVICENOW_USER="bridge", SERVICENOW_PASSWORD="s3cret")
    with log.open("wb") as out:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), cwd=tmp_path, env=env, stderr=out
        )
    try:
        await wait_ready(port)
        started = [orjson.loads(line) for line in log.read_bytes().splitlines()]
        loaded = next(e for e in started if e["event"] == "mapping_files")
        assert loaded["level"] == "info" and loaded["files"] == [str(EXAMPLE)] and loaded["packaged_example"]
        assert (tmp_path / ".bridge-data" / "redis" / "url").exists()

        for command in ("incidents", "silences", "dlq"):
            done = await bridge(command, "list", cwd=tmp_path)
            assert (done.returncode, orjson.loads(done.stdout)) == (0, []), done.stderr

        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/webhook/alertmanager"
            async with session.post(url, data=FIRING.read_bytes(), headers={"Content-Type": "application/json"}) as r:
                assert r.status == 202

        async def listed() -> list[dict[str, object]]:
            done = await bridge("incidents", "list", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            return list(orjson.loads(done.stdout))

        incidents = await eventually(listed, within=20)
        assert [i["route"] for i in incidents] == ["prometheus"]

        second = await bridge("serve", "--port", str(free_port()), cwd=tmp_path)
        assert second.returncode == 2 and "already running" in second.stderr, second.stderr
        assert (await bridge("incidents", "list", cwd=tmp_path)).returncode == 0, "the second serve took the url file"
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0

    done = await bridge("incidents", "list", cwd=tmp_path)
    assert_says_how_to_start_one(done)
    assert "no Redis to talk to" in done.stderr and str(tmp_path / ".bridge-data") in done.stderr


async def test_data_dir_after_the_command_finds_the_embedded_redis(tmp_path: Path) -> None:
    """`--data-dir X` finds the embedded Redis of X whether given before or after the command."""
    with EmbeddedRedis(tmp_path / "X" / "redis"):
        for args in (("incidents", "list", "--data-dir", "X"), ("--data-dir", "X", "silences", "list")):
            done = await bridge(*args, cwd=tmp_path)
            assert (done.returncode, orjson.loads(done.stdout)) == (0, []), done.stderr
        elsewhere = await bridge("dlq", "list", "--data-dir", "Y", cwd=tmp_path)
    assert_says_how_to_start_one(elsewhere)
    assert str(tmp_path / "Y") in elsewhere.stderr


async def test_a_url_file_left_by_a_dead_server_is_reported_as_such(tmp_path: Path) -> None:
    """A url file whose redis-server was killed is reported as left behind, with how to start one again."""
    server = EmbeddedRedis(tmp_path / ".bridge-data" / "redis").start()
    try:
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        assert (tmp_path / ".bridge-data" / "redis" / "url").exists()
        done = await bridge("incidents", "list", cwd=tmp_path)
    finally:
        server.stop()
    assert_says_how_to_start_one(done)
    assert f"({server.url}) is gone" in done.stderr and "no longer running" in done.stderr


async def test_a_url_file_whose_port_another_redis_took_is_not_trusted(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """A url file pointing at a live Redis with another directory (the port was reused) is not used."""
    marker = tmp_path / ".bridge-data" / "redis" / "url"
    marker.parent.mkdir(parents=True)
    marker.write_text(redis_server.url + "\n")
    done = await bridge("incidents", "list", cwd=tmp_path)
    assert_says_how_to_start_one(done)
    assert f"({redis_server.url}) is gone" in done.stderr


def test_a_second_embedded_redis_for_the_same_directory_is_refused(tmp_path: Path) -> None:
    """Starting an embedded Redis where one runs fails, and leaves the running one's url file in place."""
    with EmbeddedRedis(tmp_path / "redis") as first:
        with pytest.raises(ConfigError, match="already running"):
            EmbeddedRedis(tmp_path / "redis").start()
        assert (tmp_path / "redis" / "url").read_text().strip() == first.url
