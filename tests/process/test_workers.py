"""`bridge serve --workers N`: the admin API and SIGHUP reach every worker, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bridge.admin import api
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.conftest import Snow
from tests.running import TOKEN, call, spawn, wait_ready, write_mapping


async def test_workers_serve_the_admin_api_reload_on_sighup_and_stop(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Two workers: every admin call is authorised, SIGHUP makes both reload, SIGTERM exits 0."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    port = free_port()
    proc = spawn(path, redis_server.url, port, "--workers", "2", BRIDGE_ADMIN_TOKEN=TOKEN, BRIDGE_LOG_LEVEL="info")
    try:
        await wait_ready(port)
        statuses = [(await call("GET", f"http://127.0.0.1:{port}{api.PREFIX}/incidents"))[0] for _ in range(8)]
        assert statuses == [200] * 8, statuses
        await asyncio.sleep(1.0)  # both workers listening and their signal handlers in place
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        log = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert code == 0, log[-2000:]
    assert log.count('"config_reloaded"') == 2, log[-3000:]
