"""Hostile matchers and values: refused with a 400 (API) or an error (CLI), and none holds the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.core import keys
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.core.test_matchers import regex
from tests.running import TOKEN, base_url, call, cli, scrape, value, webhook_url

REFUSED = ["a{99999999999}", r"(a)\1", "(?=a)a", r"\pL{1000}", "x" * 9000]
LOOP_LAG_BOUND_S = 0.05


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """The event loop's lag, measured while the block runs: how late a 5 ms sleep wakes, at worst."""
    worst = [0.0]
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], loop.time() - start - 0.005)

    task = asyncio.create_task(tick())
    try:
        yield worst
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("pattern", REFUSED)
async def test_the_silences_api_refuses_hostile_regexes_with_a_400(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, pattern: str
) -> None:
    """A regex RE2 refuses, or past the bounds, is a 400 with a JSON body naming it, never a 500; nothing is stored."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    body = {"matchers": [regex("alertname", pattern)], "duration": "1h"}
    status, answer, headers = await call("POST", base_url(bridge) + "/api/v1/silences", body=body)
    assert status == 400, answer
    assert headers["Content-Type"].startswith("application/json")
    assert answer["error"] == "bad_payload" and "regular expression" in answer["detail"]
    assert await redis.hlen(keys.SILENCES) == 0


@pytest.mark.parametrize("pattern", REFUSED[:3])
async def test_the_cli_refuses_hostile_regexes(redis_server: Any, redis: aioredis.Redis, pattern: str) -> None:
    """`bridge silences add` with such a regex exits non-zero naming it; nothing is stored."""
    done = await cli(
        "silences", "add", "--matcher", regex("alertname", pattern), "--duration", "1h",
        check=False, BRIDGE_REDIS_URL=redis_server.url,
    )  # fmt: skip
    assert done.returncode != 0
    assert b"regular expression" in done.stderr + done.stdout
    assert await redis.hlen(keys.SILENCES) == 0


async def test_hostile_regexes_and_values_never_hold_the_event_loop(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Catastrophic regexes (route, silences) against 64 KiB values: every alert decided, the loop never 50 ms late."""
    routes = [{"name": "hostile", "desk": "snow", "match": [regex("alertname", "(a+)+b")]}]
    bridge = await make_bridge(mapping(snow.url, extra_routes=routes), admin_token=TOKEN)
    url = base_url(bridge) + "/api/v1/silences"
    hostile = "a" * 65_536
    bodies = [  # made first: building them is the test's own work on the loop, not the bridge's
        orjson.dumps(
            group(*(alert(alertname=hostile[:-i], instance=hostile, device=f"/dev/{n}-{i}") for i in range(4)))
        )
        for n in range(12)  # 4 alerts a post: a source takes bodies of 1 MiB
    ]
    async with loop_lag() as worst:
        for pattern in ["(a+)+b", "(a|aa)+c", "(.*a){300}", "(a|b)*a(a|b){60}", *REFUSED]:
            await call("POST", url, body={"matchers": [regex("instance", pattern)], "duration": "1h"})
        for body in bodies:
            assert (await post(webhook_url(bridge), body))[0] == 202

        async def decided() -> bool:
            _, samples = await scrape(base_url(bridge))
            return sum(v for (name, _), v in samples.items() if name == "bridge_decisions_total") >= 48

        await eventually(decided, within=60)
    assert await redis.hlen(keys.SILENCES) == 4  # the refused ones stored nothing
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_decisions_total", route="prometheus", decision="SUPPRESSED") == 48
    assert worst[0] < LOOP_LAG_BOUND_S, f"the event loop was {worst[0] * 1000:.0f} ms late"
