"""Alert text cannot steer a desk call: a webhook desk's rendered path keeps its shape (values escaped
per segment, `..` refused), Jira fields are JSON only where the desk declares them, no label from alert
text passes for a correlation label, and plain http:// to another host needs `allow_insecure_http`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import ValidationError
from structlog.testing import capture_logs

from adapters.simulators import jira
from bridge.core.config import MappingConfig
from bridge.core.templates import render_path
from tests.amp import alert, group
from tests.conftest import eventually, post, start_app

HOSTILE = "../../admin/users/1?delete=true#"


def recording_desk() -> tuple[web.Application, list[dict[str, Any]]]:
    """A ticket API that records each request's raw path and opens ticket 1 for any POST."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {"method": request.method, "raw_path": request.raw_path, "auth": request.headers.get("Authorization")}
        )
        if request.method == "POST" and request.path.endswith("/tickets"):
            return web.json_response({"ticket": {"id": 1}}, status=201)
        return web.json_response({}, status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, seen


def webhook_mapping(url: str) -> MappingConfig:
    action = {
        "method": "POST",
        "path": "/api/queues/{{ fields.queue }}/tickets",
        "body": {"t": "{{ fields.title }}"},
        "id": "ticket.id",
    }
    note = {"method": "POST", "path": "/api/tickets/{{ ticket.id }}/comments", "body": {"b": "{{ note }}"}}
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {
                "hook": {
                    "kind": "webhook",
                    "url": url,
                    "token": "desk-bearer-token",
                    "open": action,
                    "note": note,
                    "resolve": note,
                    "reopen": note,
                }
            },
            "routes": [
                {
                    "name": "r",
                    "desk": "hook",
                    "correlate": {"by": ["{{ labels.queue }}"]},
                    "ticket": {"fields": {"queue": "{{ labels.queue }}", "title": "{{ name }}"}},
                }
            ],
        }
    )


async def test_alert_text_stays_inside_its_path_segment_and_dot_dot_is_refused(
    make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A label `../../admin/users/1?delete=true#` is one escaped segment; a label `..` is dead-lettered, never sent."""
    app, seen = recording_desk()
    runner, url = await start_app(app)
    try:
        bridge = await make_bridge(webhook_mapping(url))
        hook = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
        assert (await post(hook, group(alert(queue=HOSTILE))))[0] == 202
        await eventually(lambda: seen, within=10)
        assert (await post(hook, group(alert(queue="..", instance="other"))))[0] == 202

        async def refused() -> list[Any]:
            return [f for _, f in await redis.xrange("bridge:v1:dlq") if f[b"kind"] == b"desk_rejected"]

        letters = await eventually(refused, within=10)
    finally:
        await runner.cleanup()
    # One segment: `=` needs no escaping in a path (yarl leaves it as it is), `/`, `?` and `#` stay escaped.
    assert [r["raw_path"] for r in seen] == ["/api/queues/..%2F..%2Fadmin%2Fusers%2F1%3Fdelete=true%23/tickets"]
    assert all(not r["raw_path"].startswith("/admin") for r in seen)
    error = orjson.loads(letters[0][b"error"])
    assert "'..' segment" in error["message"], error


def test_path_templates_escape_values_but_keep_their_own_text() -> None:
    """What the template writes stays; each value it puts in is one segment; `.` or `..` segments are refused."""
    context = {"ticket": {"id": "a/b?c#d %"}, "queue": "ops"}
    assert (
        render_path("/api/{{ queue }}/tickets/{{ ticket.id }}?x=1", context)
        == "/api/ops/tickets/a%2Fb%3Fc%23d%20%25?x=1"
    )
    for bad in ("..", "."):
        with pytest.raises(ValueError, match="segment"):
            render_path("/api/{{ queue }}/x", {"queue": bad})
    assert render_path("/api/{{ queue }}", {"queue": "..."}) == "/api/..."


async def test_a_label_from_alert_text_cannot_pass_for_a_jira_correlation_label(make_bridge: Any) -> None:
    """A rendered label shaped `<route>:<hash>:<epoch>` is dropped; the issue carries only the bridge's own one."""
    app = jira.make_app(mode="cloud", email="bot@example.com", api_token="jira-token")
    runner, url = await start_app(app)
    try:
        config = MappingConfig.model_validate(
            {
                "sources": {"alertmanager": {"kind": "alertmanager"}},
                "desks": {
                    "jira": {
                        "kind": "jira",
                        "url": url,
                        "email": "bot@example.com",
                        "api_token": "jira-token",
                        "project": "OPS",
                        "api_type": "cloud",
                    }
                },
                "routes": [
                    {
                        "name": "r",
                        "desk": "jira",
                        "ticket": {"fields": {"summary": "{{ name }}", "labels": "alertmanager {{ labels.team }}"}},
                    }
                ],
            }
        )
        bridge = await make_bridge(config)
        forged = "r:0123456789ab:zz1"
        body = group(alert(team=f"db {forged} ops"))
        assert (await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", body))[0] == 202
        store = app[jira.STORE]
        await eventually(lambda: store.issues, within=10)
        labels = next(iter(store.issues.values())).fields["labels"]
    finally:
        await runner.cleanup()
    assert forged not in labels and {"alertmanager", "db", "ops"} <= set(labels), labels
    assert len([label for label in labels if label.startswith("r:")]) == 1, labels


def _desk(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "sources": {"alertmanager": {"kind": "alertmanager"}},
        "desks": {"snow": {"kind": "servicenow", "url": url, "user": "u", "password": "p4ssword", **extra}},
        "routes": [{"name": "r", "desk": "snow"}],
    }


def test_plain_http_to_another_host_needs_allow_insecure_http() -> None:
    """http:// to another host is refused naming the switch; https://, loopback and the switch pass."""
    with pytest.raises(ValidationError, match="allow_insecure_http"):
        MappingConfig.model_validate(_desk("http://snow.example.com"))
    for url in ("https://snow.example.com", "http://127.0.0.1:8081", "http://localhost:8081", "http://[::1]:8081"):
        MappingConfig.model_validate(_desk(url))
    MappingConfig.model_validate(_desk("http://snow.example.com", allow_insecure_http=True))


async def test_an_allowed_plain_http_desk_is_warned_about_at_start(make_bridge: Any) -> None:
    """A bridge whose desk is http:// to another host (allowed) logs desk_insecure_http naming it, once."""
    config = MappingConfig.model_validate(_desk("http://snow.example.invalid", allow_insecure_http=True))
    with capture_logs() as logged:
        await make_bridge(config)
    warned = [e for e in logged if e["event"] == "desk_insecure_http"]
    assert [(w["desk"], w["url"]) for w in warned] == [("snow", "http://snow.example.invalid")], warned
