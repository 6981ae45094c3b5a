"""The loop back's two doors: POST /desk-events/{desk} (its answers to bad requests) and the poll (one replica at
a time, from a cursor in Redis), against real Redis, a running bridge and the ServiceNow simulator."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.sync.test_loop_back import FIELDS, RESOLVE, applied, business_rule, calls, human, open_ticket, sim

SECRET = "push-s3cret"


def config(snow_url: str, desk_sync: dict[str, Any] | None, route_sync: dict[str, Any] | None = None) -> MappingConfig:
    data: dict[str, Any] = {  # servicenow_em: a desk kind without parse_events
        "sources": {"alertmanager": {"kind": "alertmanager"}},
        "desks": {
            "snow": {"kind": "servicenow", "url": snow_url, "user": "bridge", "password": "s3cret"},
            "ops": {"kind": "servicenow_em", "url": snow_url, "user": "bridge", "password": "s3cret"},
        },
        "routes": [
            {
                "name": "ops",
                "desk": "snow",
                "correlate": {"by": ["{{ labels.instance }}"]},
                "lifecycle": {"resolve_after": "200ms", "reopen_within": "5s"},
                "ticket": {"fields": FIELDS},
                "sync": route_sync or {},
            }
        ],
    }
    if desk_sync is not None:
        data["sync"] = {"snow": desk_sync}
    return MappingConfig.model_validate(data)


async def push(url: str, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    headers.setdefault("Content-Type", "application/json")
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_push_answers_bad_requests_in_json(snow: Snow, make_bridge: Any) -> None:
    """401 without or with a wrong token, 413 over max_body, 415 for a wrong content type, 400 for a body that
    is not the desk's webhook, 404 for an unknown desk; each a JSON error, none accepted."""
    bridge = await make_bridge(config(snow.url, {"secret": SECRET, "max_body": 2048}))
    url = f"http://127.0.0.1:{bridge.port}/desk-events"
    good = orjson.dumps({"sys_id": "x"})
    bearer = {"Authorization": f"Bearer {SECRET}"}
    answers = [
        await push(f"{url}/snow", good),
        await push(f"{url}/snow", good, Authorization="Bearer nope"),
        await push(f"{url}/snow", b"{" + b" " * 4096 + b"}", **bearer),
        await push(f"{url}/snow", good, **bearer, **{"Content-Type": "application/xml"}),
        await push(f"{url}/snow", b"not json", **bearer),
        await push(f"{url}/snow", orjson.dumps({"sys_id": "x"}), **bearer),  # no state, no sys_updated_on
        await push(f"{url}/nodesk", good, **bearer),
    ]
    assert [status for status, _ in answers] == [401, 401, 413, 415, 400, 400, 404]
    assert all(isinstance(body.get("error"), str) for _, body in answers)


async def test_a_desk_without_parse_events_or_secret_refuses_pushes(snow: Snow, make_bridge: Any) -> None:
    """A desk kind that cannot read pushes is 404; a desk without sync.secret is 401 (not open by default)."""
    bridge = await make_bridge(config(snow.url, None))
    url = f"http://127.0.0.1:{bridge.port}/desk-events"
    status, body = await push(f"{url}/snow", orjson.dumps({"sys_id": "x"}))
    assert status == 401 and "sync.secret" in body["detail"]
    status, body = await push(f"{url}/ops", orjson.dumps({"sys_id": "x"}))
    assert status == 404 and "takes no pushed events" in body["detail"]


async def test_push_signed_with_an_hmac(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """auth: hmac takes the hex HMAC-SHA256 of the body in the configured header; a wrong one is 401."""
    bridge = await make_bridge(config(snow.url, {"secret": SECRET, "auth": "hmac", "header": "X-Signature"}))
    base = f"http://127.0.0.1:{bridge.port}"
    ticket = await open_ticket(snow, base, alert(instance="db-1:9100"))
    await eventually(lambda: calls(snow) == ["create"])
    await human(snow, ticket, "jdoe", **RESOLVE)
    body = orjson.dumps(business_rule(snow.store.get(ticket["sys_id"])))
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, _ = await push(f"{base}/desk-events/snow", body, **{"X-Signature": "sha256=" + "0" * 64})
    assert status == 401
    status, answer = await push(f"{base}/desk-events/snow", body, **{"X-Signature": f"sha256={signature}"})
    assert status == 202 and answer == {"accepted": 1}
    await eventually(lambda: applied(redis, "MUTED"))


async def test_poll_reads_the_changes_once_through_one_replica(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """With sync.poll and no push, two replicas poll ServiceNow (sys_updated_on): the person's resolve is applied
    once (one reopen), the cursor is kept in Redis and one replica holds the desk's lease."""
    first = await make_bridge(config(snow.url, {"poll": "200ms"}, {"on_desk_resolve": "reopen"}))
    second = await make_bridge(config(snow.url, {"poll": "200ms"}, {"on_desk_resolve": "reopen"}))
    base = f"http://127.0.0.1:{first.port}"
    ticket = await open_ticket(snow, base, alert(instance="db-1:9100"))
    await eventually(lambda: calls(snow) == ["create"])
    before = len(snow.store.requests)
    await sim(snow, f"/_sim/human/{ticket['sys_id']}", {"user": "jdoe", "changes": RESOLVE})
    await eventually(lambda: "reopen" in calls(snow, before))
    await eventually(lambda: applied(redis, "REOPEN"))
    cursor = await redis.hgetall(keys.sync_cursor("snow"))
    assert int(cursor[b"at"]) > 0
    holder = await redis.get(keys.sync_lease("snow"))
    assert holder in {first.poller.token.encode(), second.poller.token.encode()}
    for bridge in (first, second):  # several polls later, still one reopen
        await bridge.poller.poll("snow") if holder == bridge.poller.token.encode() else None
    assert calls(snow, before).count("reopen") == 1
    bases = await redis.zrange(keys.INCIDENTS, 0, -1)
    trail = await redis.lrange(keys.IncidentKeys(bases[0].decode()).audit, 0, -1)
    desk = [orjson.loads(e) for e in trail if b"DESK_EVENT" in e]
    assert [(e["kind"], e["author"], e["outcome"]) for e in desk] == [("resolved", "jdoe", "REOPEN")]
    status, _ = await post(f"{base}/webhook/alertmanager", group(alert(instance="db-1:9100")))
    assert status == 202
