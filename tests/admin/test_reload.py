"""Hot reload: a valid mapping change applies without dropping in-flight work; an invalid one is refused."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson

from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.running import base_url, scrape, spawn, value, wait_ready, webhook_url, write_mapping


def retitle(path: Path, prefix: str) -> None:
    """Change the ticket title template in the mapping file, as an ops team would."""
    data = orjson.loads(path.read_bytes())
    fields = data["routes"][-1]["ticket"]["fields"]
    fields["short_description"] = prefix + " " + fields["short_description"]
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


async def test_valid_change_applies_without_dropping_an_in_flight_alert(
    snow: Snow, make_bridge: Any, tmp_path: Path
) -> None:
    """An alert whose desk call is in flight during a file change is delivered once; later ones use the new mapping."""
    from bridge.core import config as config_mod

    path = write_mapping(tmp_path / "mapping.yaml", snow)
    bridge = await make_bridge(config_mod.load([path]), config_paths=[str(path)], reload_poll_s=0.05)
    snow.faults.set(latency_ms=1500)  # the first ticket's open is in flight while the file changes
    await post(webhook_url(bridge), group(alert(instance="before:9100")))
    await asyncio.sleep(0.2)  # decided and handed to delivery; the desk is still answering
    retitle(path, "[v2]")
    await eventually(lambda: bridge.runtime.config.routes[-1].ticket.fields["short_description"].startswith("[v2]"))
    assert snow.incidents() == [], "the first ticket was written before the reload: the test proves nothing"
    snow.faults.set(latency_ms=0)
    await post(webhook_url(bridge), group(alert(instance="after:9100")))
    await eventually(lambda: len(snow.incidents()) == 2, within=10)
    await asyncio.sleep(0.3)
    titles = {r["short_description"].rsplit(" ", 1)[1]: r["short_description"] for r in snow.incidents()}
    assert sorted(titles) == ["after:9100", "before:9100"], "an alert was lost or ticketed twice"
    assert titles["after:9100"].startswith("[v2] ")
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_config_reloads_total", outcome="success") == 1
    assert value(samples, "bridge_config_last_reload_successful") == 1


async def test_invalid_change_is_rejected_and_the_running_mapping_stays(
    snow: Snow, make_bridge: Any, tmp_path: Path
) -> None:
    """A file with an unknown key is refused with file and line; alerts keep flowing under the old mapping."""
    from bridge.core import config as config_mod

    path = write_mapping(tmp_path / "mapping.yaml", snow)
    bridge = await make_bridge(config_mod.load([path]), config_paths=[str(path)], reload_poll_s=0.05)
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"routes"', b'"rouets"', 1))
    await eventually(lambda: bridge.reloader.last_error)
    assert str(path) in bridge.reloader.last_error and "rouets" in bridge.reloader.last_error
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_config_reloads_total", outcome="failure") == 1
    assert value(samples, "bridge_config_last_reload_successful") == 0

    await post(webhook_url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    assert snow.incidents()[0]["short_description"].startswith("[CRITICAL]")

    path.write_bytes(good)
    retitle(path, "[v3]")
    await eventually(lambda: bridge.reloader.last_error is None)
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_config_last_reload_successful") == 1


async def test_sighup_reloads_the_mapping(snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """SIGHUP makes a running `bridge serve` reload its files at once, without waiting for the file poll."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    port = free_port()
    proc = spawn(path, redis_server.url, port, "--reload-interval", "3600")
    try:
        await wait_ready(port)
        retitle(path, "[hup]")
        proc.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            _, samples = await scrape(f"http://127.0.0.1:{port}")
            return value(samples, "bridge_config_reloads_total", outcome="success") == 1

        await eventually(reloaded, within=10)
        await post(f"http://127.0.0.1:{port}/webhook/alertmanager", group(alert()))
        await eventually(lambda: snow.incidents(), within=10)
        assert snow.incidents()[0]["short_description"].startswith("[hup] ")
        assert proc.poll() is None, "SIGHUP stopped the bridge"
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()
