"""Change-aware tickets and problem records on Jira, through the Jira simulator (issue links, JQL for
changes), against real Redis, with the exact desk calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from adapters.simulators import jira
from adapters.simulators.jira_store import Issue, JiraStore
from bridge.core.config import MappingConfig
from tests.amp import alert, group
from tests.conftest import eventually, post, start_app
from tests.engine.policy.test_changes import audit_of
from tests.engine.policy.test_knobs import webhook

CHANGE_JQL = "project = CHG AND issuetype = Change AND statusCategory != Done AND labels = {{ ci }}"


class Site:
    def __init__(self, url: str, app: web.Application) -> None:
        self.url, self.app = url, app

    @property
    def store(self) -> JiraStore:
        return self.app[jira.STORE]

    def issues(self, project: str = "OPS", kind: str = "Incident") -> list[Issue]:
        return [i for i in self.store.issues.values() if i.project.key == project and i.fields["issuetype"] == kind]

    def calls(self) -> list[tuple[str, str]]:
        """(method, path after /rest/api/3/, the key dropped) of every API call but serverInfo."""
        out = []
        for r in self.store.requests:
            path = r["path"].split("/rest/api/3/", 1)[-1]
            parts = path.split("/")
            if parts[0] == "issue" and len(parts) > 1:
                parts[1] = "{key}"
            if not r["path"].endswith("/serverInfo"):
                out.append((r["method"], "/".join(parts)))
        return out

    def change(self, ci: str, start_s: float, end_s: float) -> Issue:
        """A change issue on `ci` (its label) planned from `start_s` to `end_s` from now."""

        def stamp(offset: float) -> str:
            return datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")

        fields = {
            "project": {"key": "CHG"},
            "issuetype": {"name": "Change"},
            "summary": "Kernel upgrade",
            "labels": [ci],
            "customfield_10040": stamp(start_s),
            "customfield_10041": stamp(end_s),
        }
        return self.store.create({"fields": fields}, version=3, clock=time.monotonic())


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    app = jira.make_app(mode="cloud")
    runner, url = await start_app(app)
    yield Site(url, app)
    await runner.cleanup()


def config(url: str, route: dict[str, Any]) -> MappingConfig:
    desk = {
        "kind": "jira",
        "url": url,
        "email": "bridge@example.com",
        "api_token": "api-token",
        "project": "OPS",
        "timeout": 2.0,
        "change_jql": CHANGE_JQL,
        "change_start_field": "customfield_10040",
        "change_end_field": "customfield_10041",
        "problem_link_type": "Problem/Incident",
    }
    base = {
        "name": "ops",
        "desk": "jira",
        "lifecycle": {"resolve_after": "50ms", "reopen_within": "0s"},
        "ticket": {"fields": {"summary": "[{{ severity | upper }}] {{ name }} on {{ resource }}"}},
        **route,
    }
    return MappingConfig.model_validate(
        {"sources": {"alertmanager": {"kind": "alertmanager"}}, "desks": {"jira": desk}, "routes": [base]}
    )


CHANGE = {"change": {"ci": "{{ labels.instance.split(':')[0] }}", "during_change": "annotate"}}


async def test_annotate_links_the_change_issue(site: Site, make_bridge: Any) -> None:
    """The ticket opens linked to the change that covers its CI (an issue link with the note as its comment)."""
    change = site.change("web-01", -60, 600)
    bridge = await make_bridge(config(site.url, CHANGE))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: site.issues() and site.issues()[0].links)
    (ticket,) = site.issues()
    (link,) = ticket.links
    assert link["outward"] is ticket and link["inward"] is change
    assert "CHG-1" in str(ticket.comments[-1]["body"])
    assert site.calls() == [("POST", "search/jql"), ("POST", "issue"), ("POST", "issueLink")]
    shown = site.store.requests[-1]
    assert shown["body"]["type"] == {"name": "Relates"}


async def test_suppress_names_the_change_issue(site: Site, make_bridge: Any, redis: Any) -> None:
    """`suppress` opens nothing while the change's window lasts; the audit names the change."""
    site.change("web-01", -60, 600)
    route = {"change": {**CHANGE["change"], "during_change": "suppress"}}
    bridge = await make_bridge(config(site.url, route))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    (entry,) = await eventually(lambda: audit_of(redis, "suppressed"))
    await asyncio.sleep(0.3)
    assert entry["change"] == "CHG-1" and site.issues() == []
    assert site.calls() == [("POST", "search/jql")]


async def test_a_change_outside_its_window_does_not_count(site: Site, make_bridge: Any) -> None:
    """The JQL finds a change on the CI whose planned window is over: the ticket opens unlinked."""
    site.change("web-01", -7200, -3600)
    bridge = await make_bridge(config(site.url, CHANGE))
    await post(webhook(bridge), group(alert(instance="web-01:9100")))
    await eventually(lambda: site.issues())
    await asyncio.sleep(0.3)
    assert site.issues()[0].links == []
    assert site.calls() == [("POST", "search/jql"), ("POST", "issue")]


async def test_third_ticket_opens_a_problem_issue_linked_to_each(site: Site, make_bridge: Any) -> None:
    """Three tickets of one key within the window make one Problem issue; each ticket is linked to it."""
    route = {"problem": {"after": 3, "within": "1h", "fields": {"summary": "Recurring: {{ name }}"}}}
    bridge = await make_bridge(config(site.url, route))
    for hour in range(1, 5):
        starts = f"2024-05-14T{hour:02d}:00:00Z"
        await post(webhook(bridge), group(alert(starts=starts)))
        await eventually(lambda n=hour: len(site.issues()) == n)
        await post(webhook(bridge), group(alert("resolved", starts=starts)))
        await eventually(lambda: site.issues()[-1].status == "Resolved")
    await eventually(lambda: all(i.links for i in site.issues()))
    (problem,) = site.issues(kind="Problem")
    assert problem.fields["summary"] == "Recurring: NodeFilesystemAlmostOutOfSpace"
    assert {id(link["outward"]) for link in problem.links} == {id(i) for i in site.issues()}
    assert all(link["type"] == "10005" for link in problem.links)  # Problem/Incident
    assert [c for c in site.calls() if c == ("POST", "issueLink")] == [("POST", "issueLink")] * 4
