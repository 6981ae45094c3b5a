"""Upstream actions against the Icinga 2 simulator, from a running bridge and the ServiceNow simulator: which
route policy makes which Icinga call, and that a tool that fails never holds the ticket back (retried from Redis,
or a dead letter when it refuses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from adapters.simulators import icinga2
from adapters.simulators.faults import FAULTS
from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.delivery import dlq
from tests.conftest import Snow, eventually, fixture_json, post, start_app
from tests.sync.test_loop_back import FIELDS, RESOLVE, TOKEN, applied, calls, human, sim

HOST, SERVICE = "web-01.example.com", "http"


@pytest.fixture
async def icinga() -> AsyncIterator[tuple[web.Application, str]]:
    app = icinga2.make_app(user="bridge", password="s3cret")
    app[icinga2.STORE].add(HOST, SERVICE, state=2)
    runner, url = await start_app(app)
    yield app, url
    await runner.cleanup()


def config(snow_url: str, icinga_url: str, password: str = "s3cret", **route_sync: Any) -> MappingConfig:
    upstream = {"url": icinga_url, "user": "bridge", "password": password, "allow_insecure_http": True}
    return MappingConfig.model_validate(
        {
            "sources": {"icinga": {"kind": "icinga2", "upstream": upstream}},
            "desks": {"snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"}},
            "sync": {"snow": {"secret": TOKEN}},
            "routes": [
                {
                    "name": "ops",
                    "desk": "snow",
                    "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
                    "ticket": {"fields": FIELDS},
                    "sync": route_sync,
                }
            ],
        }
    )


async def started(snow: Snow, make_bridge: Any, icinga_url: str, **route_sync: Any) -> tuple[Any, dict[str, str]]:
    bridge = await make_bridge(config(snow.url, icinga_url, **route_sync))
    url = f"http://127.0.0.1:{bridge.port}"
    await sim(snow, "/_sim/push", {"url": f"{url}/desk-events/snow", "headers": {"Authorization": f"Bearer {TOKEN}"}})
    status, _ = await post(f"{url}/webhook/icinga", fixture_json("icinga2_problem.json"))
    assert status == 202
    ticket = (await eventually(lambda: snow.incidents()))[0]
    await eventually(lambda: calls(snow) == ["create"])
    return bridge, ticket


def actions(app: web.Application) -> list[str]:
    """The Icinga API calls made: the action's name."""
    return [r["path"].rsplit("/", 1)[-1] for r in app[icinga2.STORE].requests]


async def test_assigned_acknowledges_and_a_comment_goes_upstream(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, icinga: tuple[web.Application, str]
) -> None:
    """Taken at the desk: acknowledge-problem on the service, once however often the ticket is assigned;
    with on_desk_comment: upstream a person's comment is an add-comment; the person's resolve removes the
    acknowledgement."""
    app, url = icinga
    _, ticket = await started(snow, make_bridge, url, on_desk_comment="upstream")
    await human(snow, ticket, "jdoe", state="2")
    await eventually(lambda: actions(app) == ["acknowledge-problem"])
    obj = app[icinga2.STORE].objects[f"{HOST}!{SERVICE}"]
    assert obj["acknowledgement"] and ticket["number"] in obj["ack"]["comment"]
    await human(snow, ticket, "asmith", assigned_to="6816f79cc0a8016401c5a33be04be441")  # assigned again
    await human(snow, ticket, "jdoe", comments="disk replaced, watching")
    await eventually(lambda: actions(app) == ["acknowledge-problem", "add-comment"])
    await human(snow, ticket, "jdoe", **RESOLVE)
    await eventually(lambda: actions(app) == ["acknowledge-problem", "add-comment", "remove-acknowledgement"])
    await eventually(lambda: applied(redis, "MUTED"))


async def test_on_desk_assign_ignore_makes_no_call(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, icinga: tuple[web.Application, str]
) -> None:
    """on_desk_assign: ignore: the assignment is recorded, the tool is not called."""
    app, url = icinga
    _, ticket = await started(snow, make_bridge, url, on_desk_assign="ignore")
    await human(snow, ticket, "jdoe", state="2")
    await eventually(lambda: applied(redis, "RECORDED"))
    assert actions(app) == []


async def test_a_tool_that_fails_is_retried_and_never_holds_the_ticket(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, icinga: tuple[web.Application, str]
) -> None:
    """Icinga answering 503: the acknowledgement waits in Redis (the breaker open) while the ticket's own
    calls go on; once Icinga is back it is made, once."""
    app, url = icinga
    bridge, ticket = await started(snow, make_bridge, url)
    app[FAULTS].set(fail_5xx=2)
    await human(snow, ticket, "jdoe", state="2")
    await eventually(lambda: results(bridge).get("transient", 0) >= 1)
    before = len(snow.store.requests)
    status, _ = await post(
        f"http://127.0.0.1:{bridge.port}/webhook/icinga",
        {**fixture_json("icinga2_problem.json"), "service_name": "disk", "service_display_name": "Disk"},
    )
    assert status == 202
    await eventually(lambda: calls(snow, before) == ["create"])  # the other service's ticket is not held back
    await eventually(lambda: results(bridge).get("ok", 0) == 1, within=20)
    assert actions(app).count("acknowledge-problem") >= 1
    assert sum(1 for o in app[icinga2.STORE].objects.values() if o["acknowledgement"]) == 1


async def test_a_refused_acknowledgement_is_a_dead_letter_that_can_be_retried(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, icinga: tuple[web.Application, str]
) -> None:
    """Icinga refusing (a wrong password: 401) makes a dead letter and an audit entry, not a retry; once
    the tool is fixed, retrying the letter makes the acknowledgement."""
    app, url = icinga
    bridge, ticket = await started(snow, make_bridge, url, password="wrong")
    await human(snow, ticket, "jdoe", state="2")
    await eventually(lambda: results(bridge).get("rejected", 0) == 1)
    assert not any(o["acknowledgement"] for o in app[icinga2.STORE].objects.values())
    letters = await redis.xrange(keys.DLQ)
    assert [orjson.loads(f[b"entries"])[0]["kind"] for _, f in letters if f[b"kind"] == b"upstream_rejected"] == ["ACK"]
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    assert await redis.llen(keys.IncidentKeys(bases[0].decode()).upstream) == 0

    # The operator fixes the tool's side (here: Icinga now takes the bridge's password) and retries the
    # letter, as `bridge dlq retry ID` does: the acknowledgement is made, once, and the letter is gone.
    icinga2.set_password(app, "bridge", "wrong")
    (letter_id,) = [i.decode() for i, f in letters if f[b"kind"] == b"upstream_rejected"]
    assert await dlq.retry(redis, letter_id, bridge.runtime.clock(), bridge.runtime.shards) is dlq.Retried.RETRIED
    await eventually(lambda: results(bridge).get("ok", 0) == 1, within=10)
    assert sum(1 for o in app[icinga2.STORE].objects.values() if o["acknowledgement"]) == 1
    assert not [f for _, f in await redis.xrange(keys.DLQ) if f[b"kind"] == b"upstream_rejected"]
    assert await dlq.retry(redis, letter_id, bridge.runtime.clock(), bridge.runtime.shards) is dlq.Retried.NOT_FOUND


def results(bridge: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in bridge.runtime.metrics.upstream_actions.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["result"]] = out.get(sample.labels["result"], 0) + sample.value
    return out
