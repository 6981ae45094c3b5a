"""Graceful shutdown: SIGTERM during a burst loses nothing that was accepted, within the grace period."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping
from tests.running import spawn, wait_ready, webhook_url, write_mapping


async def _post(url: str, payload: dict[str, Any]) -> int:
    """The status, or 0 when the request never got an answer (refused, reset): the sender retries those."""
    try:
        async with aiohttp.ClientSession() as session, session.post(url, json=payload) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def test_sigterm_during_a_burst_delivers_or_leaves_durable_everything_accepted(
    snow: Snow, redis_server: EmbeddedRedis, redis: aioredis.Redis, make_bridge: Any, tmp_path: Path
) -> None:
    """SIGTERM mid-burst: clean exit in the grace period; every 202 becomes one ticket, now or by the next replica."""
    # Desk answers take longer than the desk timeout (1 s) and the grace period: calls are in flight when
    # the signal comes, and none is answered in time, though the desk may still create their records.
    snow.faults.set(latency_ms=2500)
    port = free_port()
    victim = spawn(write_mapping(tmp_path / "mapping.yaml", snow), redis_server.url, port, "--grace", "2")
    try:
        await wait_ready(port)
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        instances = [f"host-{i:03d}:9100" for i in range(120)]

        async def burst() -> list[int]:
            statuses = []
            for chunk in range(0, len(instances), 10):  # a steady stream rather than one spike
                statuses += await asyncio.gather(
                    *[_post(url, group(alert(instance=i))) for i in instances[chunk : chunk + 10]]
                )
            return statuses

        sending = asyncio.create_task(burst())
        await eventually(lambda: len(snow.store.requests) >= 3, within=10)
        victim.send_signal(signal.SIGTERM)
        statuses = await sending
        code = await asyncio.to_thread(victim.wait, 15)
        assert code == 0, victim.stderr.read().decode()[-3000:] if victim.stderr else code
    finally:
        if victim.poll() is None:
            victim.kill()
        if victim.stderr:
            victim.stderr.close()

    accepted = [i for i, status in zip(instances, statuses, strict=True) if status == 202]
    assert set(statuses) <= {202, 0}, f"an answer other than accepted or no answer: {set(statuses)}"
    assert accepted, "nothing was accepted: the test proves nothing"
    delivered = {r["short_description"].rsplit(" ", 1)[1] for r in snow.incidents()}
    assert len(delivered) < len(accepted), "everything was delivered before the signal: the test proves nothing"
    # What is not delivered is durable: pending intake entries, queued outboxes, nothing in memory only.
    durable = await redis.xlen(keys.INTAKE) + await redis.zcard(keys.READY)
    assert durable > 0

    snow.faults.set(latency_ms=0)  # the desk recovers: the next replica finds or creates each ticket
    tuning = dataclasses.replace(FAST, claim_idle_ms=300)
    await make_bridge(mapping(snow.url), consumer="next-replica", tuning=tuning)
    await eventually(lambda: len(snow.incidents()) >= len(accepted), within=40)
    await asyncio.sleep(1.0)
    tickets = [r["short_description"].rsplit(" ", 1)[1] for r in snow.incidents()]
    assert len(tickets) == len(set(tickets)), "an alert got two tickets"
    assert set(accepted) <= set(tickets), f"accepted but lost: {sorted(set(accepted) - set(tickets))}"


async def test_stop_keeps_to_the_grace_period_with_a_hanging_desk(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A desk that never answers does not hold the stop past the grace period; its action stays queued."""
    snow.faults.set(timeout=1000, hang_s=30)
    config = mapping(snow.url)
    config = config.model_copy(update={"desks": {"snow": config.desks["snow"].model_copy(update={"timeout": 20.0})}})
    bridge = await make_bridge(config, grace_s=1.0)
    async with aiohttp.ClientSession() as session, session.post(webhook_url(bridge), json=group(alert())) as resp:
        assert resp.status == 202
    await eventually(lambda: snow.faults.timeout < 1000, within=5)  # the open is hanging at the desk
    await asyncio.wait_for(bridge.stop(), timeout=5.0)
    assert snow.incidents() == []
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    assert len(bases) == 1
    outbox = await redis.lrange(keys.IncidentKeys(bases[0].decode()).outbox, 0, -1)
    assert [b'"OPEN"' in entry for entry in outbox] == [True]
