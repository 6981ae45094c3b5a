"""The engine gathers repeats that trickle in (BRIDGE_ENGINE_LINGER_MS): after a batch that was not full and
held only repeats (decided DUPLICATE), it waits before it reads again, so that alerts arriving one by one are
decided in batches; after a batch with desk work it reads again at once, so that an open or a resolve is
never held back by it. `bridge_engine_batch_alerts` shows the batches."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post
from tests.running import scrape, value

HOSTS = [f"h{i}:9100" for i in range(5)]


async def batches(bridge: Any) -> tuple[float, float]:
    """(batches, alerts in them) so far, from the bridge's /metrics."""
    _, samples = await scrape(f"http://127.0.0.1:{bridge.port}")
    return value(samples, "bridge_engine_batch_alerts_count"), value(samples, "bridge_engine_batch_alerts_sum")


async def lingering(make_bridge: Any, snow: Snow, linger_ms: int) -> tuple[Any, str]:
    """A bridge whose engine lingers `linger_ms`, every copy reaching the engine (no repeat window)."""
    tuning = dataclasses.replace(FAST, engine_linger_ms=linger_ms, repeat_window_ms=0)
    bridge = await make_bridge(mapping(snow.url), tuning=tuning)
    return bridge, f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"


async def test_repeats_arriving_one_by_one_are_decided_in_one_batch(snow: Snow, make_bridge: Any) -> None:
    """Five open alerts; a repeat of one, then of the four others in four requests while the engine
    lingers: the repeats make two batches, of one and four. (With no linger, three here.)"""
    bridge, url = await lingering(make_bridge, snow, 2000)
    assert (await post(url, group(*[alert(instance=h) for h in HOSTS])))[0] == 202
    await eventually(lambda: len(snow.incidents()) == 5, within=10)
    assert await batches(bridge) == (1, 5)  # the opens: desk work, so no wait after it
    assert (await post(url, group(alert(instance=HOSTS[0]))))[0] == 202

    async def second() -> bool:
        return (await batches(bridge))[0] >= 2

    await eventually(second, within=5)  # the engine took the first repeat on its own
    answers = await asyncio.gather(*(post(url, group(alert(instance=h))) for h in HOSTS[1:]))
    assert [status for status, _ in answers] == [202] * 4

    async def all_taken() -> tuple[float, float] | None:
        seen = await batches(bridge)
        return seen if seen[1] == 10 else None

    assert await eventually(all_taken, within=10) == (3, 10)
    assert len(snow.incidents()) == 5


async def test_after_desk_work_the_engine_reads_again_at_once(snow: Snow, make_bridge: Any) -> None:
    """An open is desk work: the alert after it is not held back by the linger (here far longer than the
    wait allowed for its ticket)."""
    bridge, url = await lingering(make_bridge, snow, 30_000)
    assert (await post(url, group(alert(instance=HOSTS[0]))))[0] == 202
    await eventually(lambda: len(snow.incidents()) == 1, within=10)
    assert (await post(url, group(alert(instance=HOSTS[1]))))[0] == 202
    await eventually(lambda: len(snow.incidents()) == 2, within=10)
    assert await batches(bridge) == (2, 2)
