"""The shared per-desk rate limit: a token bucket in Redis that all replicas draw from."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post

PER_SECOND, INCIDENTS = 4.0, 12


def limited(snow: Snow) -> MappingConfig:
    config = mapping(snow.url)
    return MappingConfig.model_validate(
        {**config.model_dump(by_alias=True), "desks": config.desks, "limits": {"snow": {"per_second": PER_SECOND}}}
    )


async def test_two_replicas_together_keep_to_the_desks_rate_limit(snow: Snow, make_bridge: Any) -> None:
    """Twelve new incidents through two replicas at 4 calls/s: the desk sees them spread over >= 11/4 s, all land."""
    replicas = [await make_bridge(limited(snow), consumer=f"r{i}") for i in range(2)]
    started = time.monotonic()
    await asyncio.gather(
        *[
            post(f"http://127.0.0.1:{replicas[i % 2].port}/webhook/alertmanager", group(alert(instance=f"h{i}:1")))
            for i in range(INCIDENTS)
        ]
    )
    await eventually(lambda: len(snow.incidents()) == INCIDENTS, within=20)
    elapsed = time.monotonic() - started
    assert elapsed >= (INCIDENTS - 1) / PER_SECOND * 0.9, f"{INCIDENTS} creates in {elapsed:.2f}s: limit not kept"
    waits = sum(
        sample.value
        for r in replicas
        for metric in r.runtime.metrics.registry.collect()
        if metric.name == "bridge_desk_rate_limit_waits"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert waits > 0


def test_limits_must_name_a_configured_desk(snow_url: str = "http://127.0.0.1:9") -> None:
    """A limit for a desk the mapping does not have is a configuration error."""
    import pytest
    from pydantic import ValidationError

    config = mapping(snow_url)
    with pytest.raises(ValidationError, match="unknown desk 'nope'"):
        MappingConfig.model_validate(
            {**config.model_dump(by_alias=True), "desks": config.desks, "limits": {"nope": {"per_second": 1}}}
        )


async def test_breaker_stops_calls_to_a_failing_desk_and_delivery_resumes(snow: Snow, make_bridge: Any) -> None:
    """While the desk answers 503, incidents wait on the shared breaker instead of each hammering it; all land after."""
    snow.faults.set(fail_5xx=10_000)
    bridge = await make_bridge(mapping(snow.url))
    for i in range(10):
        await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert(instance=f"h{i}:1")))
    await asyncio.sleep(1.5)
    during = len(snow.store.requests)
    # The probing incident makes `attempts` calls per pass (two passes fit in 1.5 s with this backoff);
    # the nine others at most their first call, made before the first failure was known. Without the
    # breaker every incident makes `attempts` calls per pass: 40 in the first pass alone.
    bound = 2 * bridge.tuning.attempts + 9
    assert 0 < during <= bound, f"{during} calls to a desk that is down (bound {bound})"
    snow.faults.set(fail_5xx=0)
    await eventually(lambda: len(snow.incidents()) == 10, within=20)
