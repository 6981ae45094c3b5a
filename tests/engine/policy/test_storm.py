"""An outage: 10,000 alerts from 500 hosts. The desk sees a bounded number of calls, not 10,000 tickets."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp
import orjson

from tests.amp import alert, group
from tests.conftest import Snow, eventually
from tests.engine.policy.test_knobs import config

HOSTS, ALERTS_PER_HOST = 500, 20
MAX_NEW_PER_MINUTE, FLUSH_S = 20, 1.0


async def test_storm_of_10000_alerts_costs_a_bounded_number_of_desk_calls(snow: Snow, make_bridge: Any) -> None:
    """Bound: tickets <= the storm limit + the engine batches in flight when it is reached (one per
    engine reader, each opening at most batch / alerts-per-host tickets) + the major incident, and each
    ticket gets at most one coalesced note per flush interval while the storm lasts, plus one."""
    cfg = config(
        snow.url,
        correlate={"by": ["{{ labels.instance }}"]},
        storm={"max_new_per_minute": MAX_NEW_PER_MINUTE, "fields": {"short_description": "Major incident: storm"}},
        ticket={"flush_interval": f"{FLUSH_S}s"},
    )
    bridge = await make_bridge(cfg)
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    groups = [
        group(*[alert(instance=f"host{h:03d}:9100", alertname=f"Check{a:02d}") for a in range(ALERTS_PER_HOST)])
        for h in range(HOSTS)
    ]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(16)

        async def send(body: dict[str, Any]) -> int:
            async with (
                sem,
                session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as r,
            ):
                return r.status

        statuses = await asyncio.gather(*[send(g) for g in groups])
    assert statuses == [202] * HOSTS

    await eventually(lambda: len(snow.incidents()) > 0, within=20)
    previous = -1
    while previous != len(snow.store.requests):  # wait until the desk has stopped hearing from us
        previous = len(snow.store.requests)
        await asyncio.sleep(FLUSH_S * 2)
    duration = time.monotonic() - started

    tickets = snow.incidents()
    creates = sum(1 for r in snow.store.requests if r["method"] == "POST")
    notes = sum(1 for r in snow.store.requests if r["method"] == "PATCH")
    batch_overshoot = bridge.tuning.engine_readers * math.ceil(bridge.tuning.batch / ALERTS_PER_HOST)
    print(f"storm: {len(tickets)} tickets, {creates} creates, {notes} notes in {duration:.1f}s")
    assert creates == len(tickets)
    assert len(tickets) <= MAX_NEW_PER_MINUTE + batch_overshoot + 1
    assert sum(t["short_description"] == "Major incident: storm" for t in tickets) == 1
    assert notes <= len(tickets) * (math.ceil(duration / FLUSH_S) + 1)
    assert creates + notes < 0.05 * HOSTS * ALERTS_PER_HOST  # at least 20x fewer calls than alerts
    major = next(t for t in tickets if t["short_description"] == "Major incident: storm")
    absorbed = "\n".join(snow.notes(major))
    assert "host499:9100" in absorbed
