"""Problem records (route `problem:`), against real Redis and the ServiceNow simulator's problem table, with
the exact desk calls; the count and claim (problem_count.lua) raced directly."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from adapters.simulators.servicenow_store import ServiceNowError
from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.runtime.scripts import Scripts
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.engine.policy.test_knobs import FIELDS, webhook

PROBLEM = {"short_description": "Recurring: {{ name }} on {{ resource }} ({{ problem.count }} incidents)"}


def config(desk_url: str, **problem: Any) -> MappingConfig:
    """One route whose incidents start a new ticket whenever they fire again after resolving."""
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [
                {
                    "name": "ops",
                    "desk": "snow",
                    "lifecycle": {"resolve_after": "50ms", "reopen_within": "0s"},
                    "ticket": {"fields": FIELDS},
                    "problem": {"after": 3, "within": "1h", "fields": PROBLEM, **problem},
                }
            ],
        }
    )


def problems(snow: Snow) -> list[dict[str, str]]:
    return list(snow.store.itsm.tables["problem"].values())


async def outage(snow: Snow, bridges: list[Any], hour: int) -> dict[str, str]:
    """The alert fires (a new occurrence) and clears, through the next replica; returns its new ticket."""
    bridge = bridges[hour % len(bridges)]
    before = len(snow.incidents())
    starts = f"2024-05-14T{hour:02d}:00:00Z"
    await post(webhook(bridge), group(alert(starts=starts)))
    await eventually(lambda: len(snow.incidents()) == before + 1)
    await post(webhook(bridge), group(alert("resolved", starts=starts)))
    await eventually(lambda: snow.incidents()[-1]["state"] == "6")
    return snow.incidents()[-1]


async def test_third_ticket_opens_one_problem_and_links_every_ticket(snow: Snow, make_bridge: Any) -> None:
    """Three tickets of one key within the window open one problem; all three, and the fourth, link to it."""
    bridge = await make_bridge(config(snow.url))
    for hour in (1, 2):
        await outage(snow, [bridge], hour)
    assert problems(snow) == []
    await outage(snow, [bridge], 3)
    await eventually(lambda: all(i["problem_id"] for i in snow.incidents()))
    (problem,) = problems(snow)
    assert (
        problem["short_description"]
        == "Recurring: NodeFilesystemAlmostOutOfSpace on db-prod-01.example.com:9100 (3 incidents)"
    )
    assert problem["correlation_id"].startswith("ops:") and ":problem:" in problem["correlation_id"]
    for record in snow.incidents():
        assert record["problem_id"] == problem["sys_id"]
        assert any(problem["number"] in note for note in snow.notes(record))
    fourth = await outage(snow, [bridge], 4)
    await eventually(lambda: snow.store.get(fourth["sys_id"])["problem_id"])
    assert len(problems(snow)) == 1 and snow.store.get(fourth["sys_id"])["problem_id"] == problem["sys_id"]
    posts = [r["path"].rsplit("/", 1)[-1] for r in snow.store.requests if r["method"] == "POST"]
    assert posts == ["incident", "incident", "incident", "problem", "incident"]
    links = [r for r in snow.store.requests if r["method"] == "PATCH" and "problem_id" in (r.get("body") or {})]
    assert len(links) == 4


async def test_two_replicas_open_one_problem(snow: Snow, make_bridge: Any) -> None:
    """Tickets of one key delivered by two replicas in turn still make exactly one problem record."""
    bridges = [await make_bridge(config(snow.url)), await make_bridge(config(snow.url))]
    for hour in range(1, 6):
        await outage(snow, bridges, hour)
    await eventually(lambda: all(i["problem_id"] for i in snow.incidents()))
    assert len(problems(snow)) == 1
    assert {i["problem_id"] for i in snow.incidents()} == {problems(snow)[0]["sys_id"]}


async def test_a_refused_problem_record_holds_no_ticket_back(snow: Snow, make_bridge: Any) -> None:
    """The desk refuses the problem table: every ticket still opens, and a later one tries the record again."""
    bridge = await make_bridge(config(snow.url))
    for hour in (1, 2):
        await outage(snow, [bridge], hour)
    original = snow.store.itsm.create

    def refuse(table: str, body: Any) -> Any:
        raise ServiceNowError(403, "Operation Failed", "ACL Exception Insert Failed due to security constraints")

    snow.store.itsm.create = refuse  # type: ignore[method-assign]
    await outage(snow, [bridge], 3)
    assert problems(snow) == [] and len(snow.incidents()) == 3
    snow.store.itsm.create = original  # type: ignore[method-assign]
    await outage(snow, [bridge], 4)
    await eventually(lambda: problems(snow))
    await eventually(lambda: sum(1 for i in snow.incidents() if i["problem_id"]) == 4)


async def test_the_claim_is_exactly_once_under_concurrency(redis: Any) -> None:
    """Twenty tickets counted at once, the threshold three: one caller claims the record, the rest do not."""
    scripts = Scripts(redis)
    await scripts.load()
    ik = keys.IncidentKeys("ops:abc123")
    replies = await asyncio.gather(
        *(
            scripts.problem_count(
                ik, 1_000, 60_000, 3, orjson.dumps([f"e{i}", f"t{i}", "", ""]).decode(), f"token{i}", 60_000
            )
            for i in range(20)
        )
    )
    kinds = [r[0] for r in replies]
    assert kinds.count("CLAIMED") == 1 and kinds.count("WAIT") == 17 and kinds.count("COUNT") == 2
    claimed = next(r for r in replies if r[0] == "CLAIMED")
    assert len(claimed) == 1 + 3
    token = f"token{replies.index(claimed)}"
    assert await scripts.problem_set(ik, 2_000, 60_000, token, orjson.dumps(["p1", "PRB1", ""]).decode())
    again = await scripts.problem_count(
        ik, 3_000, 60_000, 3, orjson.dumps(["e99", "t99", "", ""]).decode(), "x", 60_000
    )
    assert again == ["LINK", '["p1","PRB1",""]']
    assert 0 < await redis.pttl(ik.problem) <= 60_000 + 60_000
    later = await scripts.problem_count(
        ik, 70_000, 60_000, 3, orjson.dumps(["e100", "t100", "", ""]).decode(), "y", 60_000
    )
    assert later == ["COUNT", "1"], "after the window the key counts anew"
    assert 0 < await redis.pttl(ik.opened) <= 60_000 + 60_000
