"""apply_desk_event.lua on real Redis, directly: each change applied once and in desk order, whatever order and
however often the changes come; the bridge's own, another epoch's and an unknown incident's change nothing;
and apply_alert.lua keeps a member's source and labels for it."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.core.desk import TicketRef
from bridge.core.routing import policy_json
from bridge.core.sync import DeskEvent, DeskEventKind
from bridge.runtime.scripts import AlertStep, Scripts, apply_desk_event, desk_event_applied

BASE = "ops:0123456789ab"


def policy(**sync: Any) -> bytes:
    config = MappingConfig.model_validate(
        {
            "sources": {"am": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": "https://snow.example.com", "user": "u", "password": "p"}},
            "routes": [{"name": "ops", "desk": "snow", "sync": sync}],
        }
    )
    return policy_json(config.routes[0], 60_000, 200)


async def opened(scripts: Scripts, rules: bytes, *identities: str) -> str:
    """An open incident with these firing members (of source `am`); its epoch."""
    for i, identity in enumerate(identities):
        alert = {"name": "Disk", "labels": {"alertname": "Disk", "instance": f"db-{i}"}}
        step = AlertStep(
            base=BASE, identity=identity, status="firing", severity="critical", occurrence=1000, loose=False,
            alert_json=orjson.dumps(alert), route="ops", resource="", policy=rules, source="am",
        )  # fmt: skip
        applied = await scripts.apply_alert(step, 5_000 + i)
    return str(applied.incident_id).rsplit(":", 1)[1]


def event(kind: DeskEventKind, at: int, event_id: str, **kw: Any) -> DeskEvent:
    return DeskEvent(desk="snow", ticket=TicketRef("t1", "INC1"), kind=kind, at_ms=at, event_id=event_id, **kw)


async def apply(scripts: Scripts, epoch: str, rules: bytes, *events: DeskEvent) -> list[str]:
    pipe = scripts.redis.pipeline(transaction=False)
    for e in events:
        apply_desk_event(scripts, BASE, epoch, e, ticket="INC1", policy=rules, now_ms=9_000, pipe=pipe)
    return [desk_event_applied(r).outcome for r in await scripts.execute(pipe)]


async def test_each_change_once_and_in_desk_order(redis: aioredis.Redis) -> None:
    """A change again, or one older than a change applied, is a DUPLICATE; another change at the same desk
    time is applied; in whatever order they arrive, each applies at most once and never after a newer one."""
    scripts = Scripts(redis)
    await scripts.load()
    rules = policy()
    epoch = await opened(scripts, rules, "a")
    comment = event(DeskEventKind.COMMENTED, 2_000, "c1", text="x")
    outcomes = await apply(
        scripts, epoch, rules,
        comment,
        comment,  # the same change again (pushed and polled)
        event(DeskEventKind.COMMENTED, 1_000, "c0"),  # older, arriving late
        event(DeskEventKind.COMMENTED, 2_000, "c2"),  # same desk time, another change
        event(DeskEventKind.RESOLVED, 3_000, "r1"),
        event(DeskEventKind.REOPENED, 2_500, "o1"),  # older than the resolve: never undoes it
    )  # fmt: skip
    assert outcomes == ["RECORDED", "DUPLICATE", "DUPLICATE", "RECORDED", "MUTED", "DUPLICATE"]
    assert await redis.hget(keys.IncidentKeys(BASE).state, "muted") == b"1"


async def test_ours_other_epochs_and_unknown_incidents_change_nothing(redis: aioredis.Redis) -> None:
    """The bridge's own change (OURS), one of a ticket of an earlier epoch (OTHER_EPOCH) and one of an incident
    Redis does not hold (UNKNOWN) are not applied and leave no audit entry."""
    scripts = Scripts(redis)
    await scripts.load()
    rules = policy()
    epoch = await opened(scripts, rules, "a")
    outcomes = await apply(scripts, epoch, rules, event(DeskEventKind.RESOLVED, 1, "x", ours=True))
    outcomes += await apply(scripts, "old", rules, event(DeskEventKind.RESOLVED, 2, "y"))
    pipe = redis.pipeline(transaction=False)
    apply_desk_event(
        scripts, "ops:ffffffffffff", "e", event(DeskEventKind.RESOLVED, 3, "z"), ticket="INC9", policy=rules,
        now_ms=9_000, pipe=pipe,
    )  # fmt: skip
    outcomes += [desk_event_applied(r).outcome for r in await scripts.execute(pipe)]
    assert outcomes == ["OURS", "OTHER_EPOCH", "UNKNOWN"]
    trail = await redis.lrange(keys.IncidentKeys(BASE).audit, 0, -1)
    assert not [e for e in trail if b"DESK_EVENT" in e]
    assert await redis.hget(keys.IncidentKeys(BASE).state, "muted") is None


async def test_cancel_returns_the_firing_members_labels_and_assign_queues_one_ack_per_source(
    redis: aioredis.Redis,
) -> None:
    """apply_alert.lua keeps each member's source and labels as it joins; an assignment queues one ACK for the
    source (once per epoch), a cancel returns the labels of the members that still fire and closes the incident."""
    scripts = Scripts(redis)
    await scripts.load()
    rules = policy()
    epoch = await opened(scripts, rules, "a", "b")
    ik = keys.IncidentKeys(BASE)
    assert await redis.hget(ik.details, "s:a") == b'am|{"alertname":"Disk","instance":"db-0"}'
    assert await apply(
        scripts, epoch, rules, event(DeskEventKind.ASSIGNED, 1, "a1"), event(DeskEventKind.ASSIGNED, 2, "a2")
    ) == ["ACKNOWLEDGE", "RECORDED"]
    queued = [orjson.loads(e) for e in await redis.lrange(ik.upstream, 0, -1)]
    assert [(q["kind"], q["source"]) for q in queued] == [("ACK", "am")]
    pipe = redis.pipeline(transaction=False)
    apply_desk_event(scripts, BASE, epoch, event(DeskEventKind.CANCELLED, 3, "x"), ticket="INC1", policy=rules,
                     now_ms=9_000, pipe=pipe)  # fmt: skip
    (reply,) = await scripts.execute(pipe)
    applied = desk_event_applied(reply)
    assert applied.outcome == "CANCELLED"
    assert sorted(orjson.loads(labels)["instance"] for labels in applied.silence_labels) == ["db-0", "db-1"]
    state = await redis.hgetall(ik.state)
    assert state[b"state"] == b"resolved" and state[b"resolved_at"] == b"0" and state[b"firing"] == b"0"


async def test_upkeep_forgets_the_tickets_of_forgotten_incidents(redis: aioredis.Redis) -> None:
    """The ticket index keeps a ticket while its incident lives; once the incident's keys expired, upkeep drops it."""
    from bridge.admin.upkeep import Upkeep
    from bridge.runtime.context import Runtime

    scripts = Scripts(redis)
    await scripts.load()
    rules = policy()
    epoch = await opened(scripts, rules, "a")
    config = MappingConfig.model_validate(
        {
            "sources": {"am": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": "https://snow.example.com", "user": "u", "password": "p"}},
            "routes": [{"name": "ops", "desk": "snow"}],
        }
    )
    await redis.hset(keys.desk_tickets("snow"), mapping={"live": f"{BASE}:{epoch}", "gone": "ops:aaaaaaaaaaaa:e1"})
    assert await Upkeep(Runtime(redis, scripts, config)).trim_tickets() == 1
    assert await redis.hgetall(keys.desk_tickets("snow")) == {b"live": f"{BASE}:{epoch}".encode()}


async def test_new_ticket_opens_with_the_alert_the_ticket_opened_with(redis: aioredis.Redis) -> None:
    """on_desk_resolve: new_ticket: a new epoch and an OPEN of the alert the first ticket opened with; an incident
    that kept no such alert (opened by an older version) is muted instead."""
    scripts = Scripts(redis)
    await scripts.load()
    rules = policy(on_desk_resolve="new_ticket")
    epoch = await opened(scripts, rules, "a")
    ik = keys.IncidentKeys(BASE)
    await redis.delete(ik.outbox)  # the first OPEN, as if delivered
    assert await apply(scripts, epoch, rules, event(DeskEventKind.RESOLVED, 1, "r")) == ["OPEN"]
    (entry,) = [orjson.loads(e) for e in await redis.lrange(ik.outbox, 0, -1)]
    raw: Any = await redis.hget(ik.state, "epoch")
    new_epoch = raw.decode()
    assert entry["kind"] == "OPEN" and entry["epoch"] == new_epoch != epoch
    assert entry["alert"]["labels"] == {"alertname": "Disk", "instance": "db-0"}
    await redis.hdel(ik.details, "open_alert")
    assert await apply(scripts, new_epoch, rules, event(DeskEventKind.RESOLVED, 2, "r2")) == ["MUTED"]
