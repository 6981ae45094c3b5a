"""The audit trail keeps the milestones whatever the number of repeats: after an HA pair's storm of
repeats, hundreds of changes, a resolve and a reopen, `bridge incidents show` still tells the whole story."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from bridge.core.config import MappingConfig
from bridge.process.embedded import EmbeddedRedis
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, post
from tests.running import cli, webhook_url


def config(desk_url: str) -> MappingConfig:
    """One incident per alertname, a short hold-down and a reopen window to reopen within."""
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [
                {
                    "name": "prometheus",
                    "desk": "snow",
                    "correlate": {"by": ["{{ labels.alertname }}"]},
                    "lifecycle": {"resolve_after": "200ms", "reopen_within": "1m"},
                    "ticket": {"fields": {"short_description": "{{ name }}"}},
                }
            ],
        }
    )


def hosts(prefix: str, status: str = "firing", starts: str = "2024-05-14T09:12:45.123Z") -> dict[str, Any]:
    """One Alertmanager group of 60 alerts of one alertname, one per host."""
    return group(*(alert(status, instance=f"{prefix}{i:02d}:9100", starts=starts) for i in range(60)))


async def test_incidents_show_tells_the_whole_story_after_a_storm(
    snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis
) -> None:
    """240 repeats are counted, not listed; 297 changes keep the latest 200; the first alert, the open, every
    desk action with its answer, the resolve and the reopen are all still in `bridge incidents show`."""
    # Every copy to the engine: the repeat window would answer the copies itself (tests/ingress/test_repeats.py).
    bridge = await make_bridge(config(snow.url), tuning=dataclasses.replace(FAST, repeat_window_ms=0))
    url = webhook_url(bridge)
    for _ in range(4):  # an HA pair, each sending the group twice (group_interval): 180 repeats
        await post(url, hosts("a"))
    ticket = (await eventually(lambda: snow.incidents()))[0]
    for _ in range(2):  # 60 new members, then 60 repeats
        await post(url, hosts("b"))
    await post(url, group(*hosts("a", "resolved")["alerts"], *hosts("b", "resolved")["alerts"]))
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "6", within=10)
    await post(url, hosts("a", starts="2024-05-14T11:00:00Z"))  # fires again within the window
    await eventually(lambda: snow.store.get(ticket["sys_id"])["state"] == "2", within=10)
    await asyncio.sleep(0.5)

    shown = orjson.loads(
        (await cli("incidents", "show", ticket["correlation_id"], BRIDGE_REDIS_URL=redis_server.url)).stdout
    )
    story = list(reversed(shown["audit"]))  # oldest first
    decisions = [e["decision"] for e in story]
    assert shown["repeats"] == {"repeat": 240}
    assert "DUPLICATE" not in decisions
    assert shown["changes_dropped"] == 59 + 60 + 119 + 59 - 200
    first = story[0]
    assert first["decision"] == "OPEN" and first["identity"] and first["status"] == "firing"
    milestones = [e["decision"] for e in story if e["decision"] != "NOTE"]
    assert milestones[:2] == ["OPEN", "DESK"]
    assert milestones.index("RESOLVE_PENDING") < milestones.index("RESOLVE") < milestones.index("REOPEN")
    desk = [(e["action"], e["outcome"]) for e in story if e["decision"] == "DESK"]
    assert desk[0] == ("OPEN", "delivered") and ("RESOLVE", "delivered") in desk and ("REOPEN", "delivered") in desk
    assert all(outcome == "delivered" for _, outcome in desk)
    # Each work note went with a NOTE action, or with the OPEN or REOPEN whose changes it carried.
    assert 1 <= sum(1 for action, _ in desk if action == "NOTE") <= len(snow.notes(ticket)) <= len(desk)
    opened = next(e for e in story if e["decision"] == "DESK" and e["action"] == "OPEN")
    assert opened["answer"] == ticket["number"]
    assert sum(1 for d in decisions if d == "NOTE") == 200  # the latest changes, as many as are kept
