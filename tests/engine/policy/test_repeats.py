"""Identical repeats (an Alertmanager HA pair, repeat_interval) answered early by apply_alert.lua (its step
0a): every sequence decides and leaves in Redis what the same script without that shortcut (step 1 alone)
decides and leaves, against real Redis, with the same clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.routing import policy_json
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.scripts import AlertStep, Scripts
from tests.engine.policy.test_knobs import config

T0 = 1_700_000_000_000
SHORTCUT = "-- 0a. An identical repeat"


def without_shortcut(source: str) -> str:
    """apply_alert.lua with its step 0a cut out: every repeat takes step 1."""
    start = source.index(SHORTCUT)
    end = source.index("local policy = cjson.decode(ARGV[12])", start)
    return source[:start] + source[end:]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("repeats") / "redis", appendonly=False).start()
    yield server.url
    server.stop()


def step(base: str, rules: bytes, **changes: Any) -> AlertStep:
    plain = AlertStep(base=base, identity="a1", status="firing", severity="critical", occurrence=T0 - 60_000,
                      loose=False, alert_json=b'{"name":"Disk","labels":{"x":"1"}}', route="ops", resource="h1",
                      policy=rules, name="Disk")  # fmt: skip
    return dataclasses.replace(plain, **changes)


def rules(**lifecycle: Any) -> bytes:
    return policy_json(config("http://127.0.0.1:9", lifecycle=lifecycle).routes[0], 60_000, 200)


FIRE: dict[str, Any] = {}
# Each sequence: (step changes, ms after T0); the last ones are the repeats of interest.
SEQUENCES: dict[str, tuple[bytes, list[tuple[dict[str, Any], int]]]] = {
    "open, repeated": (rules(), [(FIRE, 0), (FIRE, 10), (FIRE, 20)]),
    "two members, one repeated": (rules(), [(FIRE, 0), ({"identity": "a2"}, 5), (FIRE, 10), ({"identity": "a2"}, 20)]),
    "resolving (hold-down): the resolve timer re-armed": (
        rules(resolve_after="10m"), [(FIRE, 0), ({"status": "resolved"}, 10), ({"status": "resolved"}, 20)]),
    "acknowledged, repeated": (
        rules(), [(FIRE, 0), ({"status": "acknowledged"}, 10), ({"status": "acknowledged"}, 20)]),
    "a follow-up seen, repeated": (
        rules(), [(FIRE, 0), ({"mark": "ab12", "followup": "comment", "note": "Comment: x", "event": True}, 10),
                  ({"mark": "ab12", "followup": "comment", "note": "Comment: x", "event": True}, 20)]),
    "a new follow-up is news": (rules(), [(FIRE, 0), ({"mark": "cd34", "followup": "comment", "note": "c"}, 10)]),
    "severity changed": (rules(), [(FIRE, 0), ({"severity": "minor"}, 10), ({"severity": "minor"}, 20)]),
    "auto-resolve: the member is kept fresh": (rules(), [({"auto_ms": 60_000}, 0), ({"auto_ms": 60_000}, 10)]),
    "re-fired (a new occurrence)": (rules(), [(FIRE, 0), ({"occurrence": T0}, 10), ({"occurrence": T0}, 20)]),
    "stale": (rules(), [({"occurrence": T0}, 0), ({"occurrence": T0 - 60_000}, 10)]),
    "pending under a threshold": (
        rules(threshold={"count": 3, "window": "1m"}), [(FIRE, 0), (FIRE, 10), (FIRE, 20)]),
    "suppressed, then repeated while open": (rules(), [(FIRE, 0), ({"suppressed": True}, 10)]),
}  # fmt: skip


async def dump(client: aioredis.Redis, base: str) -> dict[str, Any]:
    """Everything the incident holds, its base spelt out of it."""
    ik = keys.IncidentKeys(base)
    out: dict[str, Any] = {}
    for name, key in (("state", ik.state), ("members", ik.members), ("details", ik.details)):
        out[name] = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}  # type: ignore[misc]
    for name, key in (("outbox", ik.outbox), ("audit", ik.audit), ("changes", ik.changes)):
        out[name] = [v.decode() for v in await client.lrange(key, 0, -1)]  # type: ignore[misc]
    return _unbase(out, base)


def _unbase(value: Any, base: str) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value.replace(base, "<base>")
    if isinstance(value, dict):
        return {_unbase(k, base): _unbase(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_unbase(v, base) for v in value]
    return value


@pytest.mark.parametrize("name", list(SEQUENCES))
async def test_a_repeat_answered_early_decides_and_leaves_what_step_one_does(redis_url: str, name: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    scripts = Scripts(client)
    await scripts.load()
    reference = Scripts(client)
    source = reference._apply.script
    assert isinstance(source, str) and SHORTCUT in source
    reference._apply = client.register_script(without_shortcut(source))
    await reference.load()
    policy, sequence = SEQUENCES[name]
    try:
        for changes, at in sequence:
            mine = await scripts.apply_alert(step("ops:fast", policy, **changes), T0 + at)
            theirs = await reference.apply_alert(step("ops:full", policy, **changes), T0 + at)
            assert _unbase(dataclasses.asdict(mine), "ops:fast") == _unbase(dataclasses.asdict(theirs), "ops:full")
            assert await dump(client, "ops:fast") == await dump(client, "ops:full"), (name, changes, at)
    finally:
        await client.aclose()
