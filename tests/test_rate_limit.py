"""The shared per-desk rate limit: a token bucket in Redis that all replicas draw from."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.config import MappingConfig
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
