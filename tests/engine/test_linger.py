"""The engine gathers alerts that trickle in (BRIDGE_ENGINE_LINGER_MS): after a batch that was not full it
waits before it reads again, so that alerts arriving one by one are decided in batches; each alert waits
at most that much longer. `bridge_engine_batch_alerts` shows the batches."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post
from tests.running import scrape, value


async def batches(bridge: Any) -> tuple[float, float]:
    """(batches, alerts in them) so far, from the bridge's /metrics."""
    _, samples = await scrape(f"http://127.0.0.1:{bridge.port}")
    return value(samples, "bridge_engine_batch_alerts_count"), value(samples, "bridge_engine_batch_alerts_sum")


async def test_alerts_arriving_one_by_one_are_decided_in_one_batch(snow: Snow, make_bridge: Any) -> None:
    """One alert, then four more in four requests while the engine lingers: two batches, of one and four;
    every alert gets its ticket. (With no linger the engine reads as soon as one is there.)"""
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(FAST, engine_linger_ms=2000))
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    assert (await post(url, group(alert(instance="first:9100"))))[0] == 202

    async def taken() -> bool:
        return (await batches(bridge))[0] >= 1

    await eventually(taken, within=5)  # the engine took the first one on its own
    assert await batches(bridge) == (1, 1)
    hosts = [f"h{i}:9100" for i in range(4)]
    answers = await asyncio.gather(*(post(url, group(alert(instance=h))) for h in hosts))
    assert [status for status, _ in answers] == [202] * 4
    await eventually(lambda: len(snow.incidents()) == 5, within=10)
    assert await batches(bridge) == (2, 5)
