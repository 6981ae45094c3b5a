"""A stage of the bridge that stops on its own (a bug: each loop handles what it can retry) stops the
whole process, exit 1, rather than leaving it answering 202 for alerts nothing decides."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.core import config as config_mod
from bridge.engine.timers import Ticker
from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.process.server import serve
from tests.conftest import Snow
from tests.running import LogTail, spawn, stopped, write_mapping


async def test_a_stage_that_fails_stops_the_process_with_exit_1(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timers' loop raises a moment after the start: `stage_stopped` names it and why, and `serve`
    stops the rest and returns 1 (the exit code) without waiting for a signal."""
    started = asyncio.Event()

    async def broken(self: Ticker, stopping: asyncio.Event) -> None:
        started.set()
        await asyncio.sleep(0.3)
        raise RuntimeError("a bug in the timers")

    monkeypatch.setattr(Ticker, "run", broken)
    config = write_mapping(tmp_path / "mapping.yaml", snow)
    with capture_logs() as events:
        code = await asyncio.wait_for(
            serve([str(config)], host="127.0.0.1", port=free_port(), redis_url=redis_server.url,
                  data_dir=tmp_path, grace_s=2.0, announce=False),
            timeout=30,
        )  # fmt: skip
    assert started.is_set()
    assert code == 1
    stopped = [e for e in events if e["event"] == "stage_stopped"]
    assert [(e["stage"], e["error"]) for e in stopped] == [("timers", "RuntimeError: a bug in the timers")]
    assert stopped[0]["log_level"] == "critical"
    stopping = next(e for e in events if e["event"] == "bridge_stopping")
    assert "the timers stage stopped" in stopping["failure"]
    assert any(e["event"] == "bridge_stopped" for e in events)


async def test_a_clean_stop_is_exit_0_and_names_no_failure(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages cancelled by a stop are not failures, nor is one that returns at once having nothing to
    do (the repeat window turned off): it runs until SIGTERM, whose stop returns 0 and logs no stage_stopped."""
    monkeypatch.setenv("BRIDGE_REPEAT_WINDOW_MS", "0")
    config = write_mapping(tmp_path / "mapping.yaml", snow)
    with capture_logs() as events:
        serving = asyncio.create_task(
            serve([str(config)], host="127.0.0.1", port=free_port(), redis_url=redis_server.url,
                  data_dir=tmp_path, grace_s=2.0, announce=False, tuning=config_mod.tuning())
        )  # fmt: skip
        for _ in range(200):
            if any(e["event"] == "bridge_started" for e in events):
                break
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler takes it
        code = await asyncio.wait_for(serving, timeout=30)
    assert any(e["event"] == "bridge_started" for e in events)
    assert code == 0
    assert not [e for e in events if e["event"] == "stage_stopped"]


BROKEN_TIMERS = '''
"""Loaded at each interpreter's start (PYTHONPATH): the timers' loop raises a moment after it starts."""
import asyncio

from bridge.engine import timers


async def _broken(self, stop):
    await asyncio.sleep(1.0)
    raise RuntimeError("a bug in the timers")


timers.Ticker.run = _broken
'''


async def test_under_workers_a_failed_stage_stops_every_worker_and_the_parent_exits_1(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`bridge serve --workers 2` whose workers' timers raise (patched in at each interpreter's start, as
    nothing else reaches a spawned worker): each worker logs `stage_stopped` and exits 1, the parent sees
    one die (`worker_died`), stops the other and exits 1, for its service manager to start it again."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(BROKEN_TIMERS)
    pythonpath = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    proc = spawn(write_mapping(tmp_path / "mapping.yaml", snow), redis_server.url, free_port(), "--workers", "2",
                 PYTHONPATH=pythonpath)  # fmt: skip
    tail = LogTail(proc)
    code = await stopped(proc, tail, stop=False)  # it ends by itself
    assert code == 1, tail.text()[-3000:]
    ended = tail.events("stage_stopped")
    assert ended and {e["stage"] for e in ended} == {"timers"}, tail.text()[-3000:]
    assert all("a bug in the timers" in e["error"] for e in ended)
    [died] = tail.events("worker_died")
    # Each worker found dead (one, or both within the parent's same look) says by its exit code it failed.
    assert died["codes"] and set(died["codes"]) == {1}, died
