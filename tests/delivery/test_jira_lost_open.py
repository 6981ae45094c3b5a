"""No duplicate Jira issue when a create's answer is lost while the site's search still trails it (Jira
Cloud's /search/jql is eventually consistent), through a running bridge against the Jira simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.simulators import jira
from bridge.admin.incidents import show_incident
from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import eventually, post, start_app

SITE_LAG_S = 4.0  # how long the simulated site's /search/jql hides a new issue


def config(url: str, search_lag: float) -> MappingConfig:
    """One route to a Jira Cloud desk that gives up on an answer after 1 s and assumes `search_lag`."""
    desk = {"kind": "jira", "url": url, "email": "bot@example.com", "api_token": "jira-token", "project": "OPS"}
    desk |= {"api_type": "cloud", "timeout": 1.0, "search_lag": search_lag}
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"jira": desk},
            "routes": [
                {
                    "name": "ops",
                    "desk": "jira",
                    "lifecycle": {"resolve_after": "100ms"},
                    "ticket": {"fields": {"summary": "{{ name }} on {{ resource }}"}},
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("search_lag", "issues"),
    [pytest.param(SITE_LAG_S + 1, 1, id="within-the-bound"), pytest.param(0.0, 2, id="site-lags-more-than-assumed")],
)
async def test_a_lost_create_is_adopted_once_search_shows_it(
    make_bridge: Any, redis: aioredis.Redis, search_lag: float, issues: int
) -> None:
    """The create is stored but its answer never comes, and search hides the new issue for 4 s: a bridge that
    allows for that lag (`search_lag`) searches again instead of creating again, adopts the one issue and
    resolves it; one that assumes no lag opens a second issue: the bound is the setting."""
    app = jira.make_app(mode="cloud", email="bot@example.com", api_token="jira-token", search_lag_s=SITE_LAG_S)
    app[jira.FAULTS].set(timeout_after_commit=1, hang_s=30)  # the first create: stored, its answer held
    runner, url = await start_app(app)
    try:
        store = app[jira.STORE]
        bridge = await make_bridge(config(url, search_lag))
        webhook = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
        await post(webhook, group(alert()))
        if issues == 1:
            await eventually(lambda: store.issues, within=5)
            base = next(iter(await redis.zrange(keys.INCIDENTS, 0, -1))).decode()

            async def adopted() -> bool:
                shown = await show_incident(redis, base)
                return shown is not None and shown["ticket"] is not None

            await eventually(adopted, within=15)
            await post(webhook, group(alert("resolved")))
            await eventually(lambda: next(iter(store.issues.values())).category == "done", within=10)
        else:
            await eventually(lambda: len(store.issues) == 2, within=15)
        await asyncio.sleep(0.5)
        assert len(store.issues) == issues
        creates = [r for r in store.requests if r["method"] == "POST" and r["path"].endswith("/issue")]
        assert len(creates) == issues
    finally:
        await runner.cleanup()
