"""The loop back with every desk that reports changes, against its simulator and a running bridge: a person
resolves the ticket while its alert fires, the change comes pushed (the simulator's webhooks) or polled (its
updated-since query), the incident is muted, and its clear resolves it without a desk resolve."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.adapters.desks.variants import VARIANTS, Variant
from tests.amp import alert, group
from tests.conftest import eventually, post, start_app

TOKEN = "desk-t0ken"
LOOPING = [v for v in VARIANTS if v.act is not None and v.name not in ("servicenow-oauth", "servicenow-em")]
WAYS = [(v, "push") for v in LOOPING if v.push is not None] + [(v, "poll") for v in LOOPING]


def config(variant: Variant, url: str, way: str) -> MappingConfig:
    sync: dict[str, Any] = {"secret": TOKEN} if way == "push" else {"poll": "200ms"}
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {
                "desk": variant.config(url) | ({"allow_insecure_http": True} if "remedy" in variant.name else {})
            },
            "sync": {"desk": sync},
            "routes": [
                {
                    "name": "ops",
                    "desk": "desk",
                    "correlate": {"by": ["{{ labels.instance }}"]},
                    "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
                    "ticket": {"fields": variant.route_fields},
                }
            ],
        }
    )


def desk_calls(bridge: Any, action: str) -> float:
    return sum(
        s.value
        for m in bridge.runtime.metrics.desk_calls.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels["action"] == action
    )


async def outcomes(redis: aioredis.Redis) -> list[tuple[str, str, str]]:
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    if not bases:
        return []
    trail = await redis.lrange(keys.IncidentKeys(bases[0].decode()).audit, 0, -1)
    events = [orjson.loads(e) for e in trail if b"DESK_EVENT" in e]
    # Jira Cloud names people by accountId (`557058:jdoe` in its simulator)
    return [(e["kind"], e["author"].rsplit(":", 1)[-1], e["outcome"]) for e in events]


@pytest.mark.parametrize(("variant", "way"), WAYS, ids=[f"{v.name}-{w}" for v, w in WAYS])
async def test_a_persons_resolve_mutes_until_clear(
    variant: Variant, way: str, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Resolved by a person while the alert fires: muted (no reopen), and the clear resolves it with no desk call."""
    app = variant.app()
    runner, url = await start_app(app)
    try:
        bridge = await make_bridge(config(variant, url, way))
        base = f"http://127.0.0.1:{bridge.port}"
        if way == "push":
            assert variant.push is not None
            variant.push(app).target(f"{base}/desk-events/desk", {"Authorization": f"Bearer {TOKEN}"})
        firing = alert(instance="db-9:9100")
        assert (await post(f"{base}/webhook/alertmanager", group(firing)))[0] == 202
        ticket = (await eventually(lambda: variant.view(app)))[0]
        assert variant.act is not None
        variant.act(app, ticket.id, "jdoe", "resolve")
        await eventually(lambda: _has(outcomes(redis), ("resolved", "jdoe", "MUTED")), within=15)
        cleared = {**firing, "status": "resolved", "endsAt": "2024-05-14T10:02:45Z"}
        assert (await post(f"{base}/webhook/alertmanager", group(cleared)))[0] == 202
        await eventually(lambda: _state(redis, "resolved"))
        assert desk_calls(bridge, "resolve") == 0 and desk_calls(bridge, "reopen") == 0
        assert [o for o in await outcomes(redis) if o[2] not in ("RECORDED",)] == [("resolved", "jdoe", "MUTED")]
    finally:
        await runner.cleanup()


async def _has(found: Any, want: tuple[str, str, str]) -> bool:
    return want in await found


async def _state(redis: aioredis.Redis, want: str) -> bool:
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    value = await redis.hget(keys.IncidentKeys(bases[0].decode()).state, "state")
    return value is not None and value.decode() == want
