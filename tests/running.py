"""Operability tests: metrics, admin API, CLI, hot reload, shutdown, logs, deployment files.

Helpers shared by these tests live here; the fixtures are those of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Snow, eventually, mapping

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "adm1n-t0ken-for-tests"


def webhook_url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


def base_url(bridge: Any) -> str:
    return f"http://127.0.0.1:{bridge.port}"


async def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """GET /metrics: the text and its samples keyed by (name, sorted labels)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """A sample's value, 0 when absent (a labelled counter has no series before its first increment)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def call(
    method: str, url: str, *, token: str | None = TOKEN, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = orjson.dumps(body) if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as session, session.request(method, url, data=data, headers=headers) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None, dict(r.headers)


def write_mapping(path: Path, snow: Snow, **kw: Any) -> Path:
    """The test mapping as a file (JSON is YAML), for reload and for bridges run as processes."""
    data = mapping(snow.url, **kw).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # SecretStr dumps masked
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def spawn(config: Path, redis_url: str, port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`bridge serve` as a process, its log (JSON: not a terminal) to a pipe."""
    environ = {
        **os.environ,
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_CLAIM_IDLE_MS": "500",
        "BRIDGE_CLAIM_EVERY_S": "0.2",
        "BRIDGE_LEASE_MS": "1000",
        "BRIDGE_TIMER_TICK_S": "0.05",
        "BRIDGE_BLOCK_MS": "50",
        **env,
    }
    command = [sys.executable, "-m", "bridge.cli", "serve", "--config", str(config), "--port", str(port), *args]
    return subprocess.Popen(command, env=environ, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class LogTail:
    """The log of a spawned bridge as it comes, read by a thread (so the pipe never fills up)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for raw in proc.stderr:
                self.lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON events so far (of that name); other lines (a traceback) are only in `text`."""
        found = []
        for line in list(self.lines):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the end of the log (the process has exited)."""
        self._thread.join(timeout)


async def wait_ready(port: int) -> None:
    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, within=20)


async def cli(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run `bridge ARGS` as a user would, off the event loop."""
    command = [sys.executable, "-m", "bridge.cli", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, cwd=ROOT, check=check, env={**os.environ, **env}
    )


async def stopped(proc: subprocess.Popen[bytes], tail: LogTail, *, stop: bool = True) -> int:
    """The process's exit status, after a SIGTERM (or, `stop=False`, once it has exited by itself), with its
    log read to the end; killed if it has not ended within 20 s."""
    if stop and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    tail.join()
    return code
