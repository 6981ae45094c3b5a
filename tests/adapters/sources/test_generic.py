"""Generic JSON: fields extracted by JMESPath or sandboxed Jinja, batches split, bad elements dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import generic
from bridge.core.errors import ConfigError, PayloadError
from bridge.core.models import Severity, Status, stable_hash
from bridge.core.source import ParseContext, Parsed

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
UPTIME = {
    "alerts": "checks",
    "identity": "id",
    "name": "check_name",
    "resource": "host",
    "status": "state",
    "status_map": {"DOWN": "firing", "up": "resolved"},
    "severity": {"template": "{{ 'critical' if alert.tier == 1 else 'minor' }}"},
    "summary": {"template": "{{ alert.check_name }} is {{ alert.state }} ({{ payload.account }})"},
    "description": "details.text",
    "starts_at": "since",
    "labels": {"team": "owner.team", "tier": "tier"},
    "annotations": "notes",
    "links": ["url", "extra_links"],
    "raw": {"region": "region"},
}
BODY = {
    "account": "acme",
    "checks": [
        {
            "id": "c1",
            "check_name": "API",
            "host": "api-1",
            "state": "down",
            "tier": 1,
            "owner": {"team": "core"},
            "since": 1715678160,
            "url": "https://uptime.example.com/c/1",
            "extra_links": ["https://wiki.example.com/api"],
            "details": {"text": "HTTP 503 from /health"},
            "notes": {"runbook": "https://wiki.example.com/api", "empty": None},
            "region": "eu-1",
            "ignored": {"deep": [1, 2, 3]},
        },
        {"id": "c2", "check_name": "Web", "state": "up", "tier": 2, "since": "2024-05-14T09:00:00+02:00"},
    ],
}


def parse(body: Any, **options: Any) -> Parsed:
    return generic.parse(orjson.dumps(body), "application/json", {}, ParseContext("uptime", RECEIVED, options))


def test_extracts_every_field() -> None:
    """JMESPath and template extracts fill each Alert field; maps translate status and severity."""
    parsed = parse(BODY, **UPTIME)
    assert parsed.rejected == []
    first, second = parsed.alerts
    expected = {
        "kind": "generic",
        "identity": "c1",
        "name": "API",
        "resource": "api-1",
        "severity": Severity.CRITICAL,
        "status": Status.FIRING,
        "summary": "API is down (acme)",
        "description": "HTTP 503 from /health",
        "labels": {"team": "core", "tier": "1"},
        "annotations": {"runbook": "https://wiki.example.com/api"},
        "starts_at": datetime(2024, 5, 14, 9, 16, tzinfo=UTC),
        "ends_at": None,
        "links": ["https://uptime.example.com/c/1", "https://wiki.example.com/api"],
        "raw": {"region": "eu-1"},
    }
    assert {key: getattr(first, key) for key in expected} == expected
    assert (second.identity, second.status, second.severity) == ("c2", Status.RESOLVED, Severity.MINOR)
    assert second.starts_at == datetime(2024, 5, 14, 7, 0, tzinfo=UTC)


def test_whole_body_is_one_alert_without_alerts_expression() -> None:
    """Without `alerts` the body is one alert; identity defaults to a hash of name, resource, labels."""
    [alert] = parse({"title": "Backup failed", "box": "nas-1"}, name="title", resource="box").alerts
    assert alert.identity == stable_hash({"name": "Backup failed", "resource": "nas-1", "labels": {}})
    assert (alert.status, alert.severity, alert.summary) == (Status.FIRING, Severity.WARNING, "Backup failed")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1715678160, datetime(2024, 5, 14, 9, 16, tzinfo=UTC)),
        (1715678160000, datetime(2024, 5, 14, 9, 16, tzinfo=UTC)),
        ("1715678160", datetime(2024, 5, 14, 9, 16, tzinfo=UTC)),
        ("2024-05-14T09:16:00Z", datetime(2024, 5, 14, 9, 16, tzinfo=UTC)),
        ("2024-05-14 09:16:00", datetime(2024, 5, 14, 9, 16, tzinfo=UTC)),
        (None, None),
    ],
)
def test_times(value: Any, expected: datetime | None) -> None:
    """starts_at accepts ISO 8601 (naive is UTC) and Unix seconds or milliseconds."""
    [alert] = parse({"n": "x", "t": value}, name="n", starts_at="t").alerts
    assert alert.starts_at == expected


def test_native_status_and_severity_values_need_no_map() -> None:
    """Values that already are firing/resolved or critical/... are taken as they are, any case."""
    [alert] = parse({"n": "x", "s": "RESOLVED", "p": "Major"}, name="n", status="s", severity="p").alerts
    assert (alert.status, alert.severity) == (Status.RESOLVED, Severity.MAJOR)


def test_unmapped_severity_falls_back_to_default() -> None:
    """A severity value nobody mapped gives default_severity."""
    [alert] = parse({"n": "x", "p": "sev9"}, name="n", severity="p", default_severity="info").alerts
    assert alert.severity is Severity.INFO


@pytest.mark.parametrize(
    ("element", "options", "reason"),
    [
        ({"id": "c3", "check_name": "DB", "state": "paused"}, {}, "status: 'paused' is not"),
        ({"id": "c3", "state": "down"}, {}, "name: the expression gave nothing"),
        ({"check_name": "DB", "state": "down"}, {}, "identity: the expression gave nothing"),
        ({"id": "c3", "check_name": {"a": 1}, "state": "down"}, {}, "name: expected text, got a JSON object"),
        ({"id": "c3", "check_name": "DB", "state": "down", "since": "soon"}, {}, "starts_at: 'soon' is not"),
        ({"id": "c3", "check_name": "DB", "state": "down", "since": True}, {}, "starts_at: expected a time"),
        ({"id": "c3", "check_name": "DB", "state": "down", "notes": [1]}, {}, "annotations: the expression must"),
        (
            {"id": "c3", "check_name": "DB", "state": "down", "xs": [1]},
            {"summary": {"template": "{{ alert.xs.append(1) if alert.xs else '' }}"}},
            "summary: SecurityError",
        ),
        (
            {"id": "c3", "check_name": "DB", "state": "down", "n": "a"},
            {"summary": {"template": "{{ (alert.n or '') * 100000 }}"}},
            "summary: 100000 characters",
        ),
        (
            {"id": "c3", "check_name": "DB", "state": "down", "xs": [1, "a"]},
            {"description": "join(',', sort(xs || `[]`))"},
            "description: JMESPathTypeError",
        ),
    ],
)
def test_bad_element_is_rejected_and_the_rest_parse(
    element: dict[str, Any], options: dict[str, Any], reason: str
) -> None:
    """A bad element becomes a dead letter naming the field; the good elements of the batch still parse."""
    body = {**BODY, "checks": [BODY["checks"][0], element]}
    parsed = parse(body, **{**UPTIME, **options})
    assert [alert.identity for alert in parsed.alerts] == ["c1"]
    [rejected] = parsed.rejected
    assert rejected.reason.startswith("alerts[1]: ")
    assert reason in rejected.reason
    assert rejected.raw == element


def test_sandbox_hides_python_internals() -> None:
    """Templates cannot reach Python internals: dunder attributes render as nothing."""
    options = {"name": "n", "summary": {"template": "[{{ alert.__class__ }}{{ ''.__class__.__mro__ }}]"}}
    [alert] = parse({"n": "x"}, **options).alerts
    assert alert.summary == "[]"


@pytest.mark.parametrize(
    ("body", "options", "message"),
    [
        (b"{", {"name": "n"}, "not valid JSON"),
        ({"checks": {"a": 1}}, {"name": "n", "alerts": "checks"}, "found a dict in the body, not a list"),
        ({"other": []}, {"name": "n", "alerts": "checks"}, "found nothing in the body"),
        ({"checks": [{}] * 1001}, {"name": "n", "alerts": "checks"}, "more than 1000"),
        ({"a": "x" * 70_000}, {"name": "n"}, "body.a: text of 70000"),
    ],
)
def test_unreadable_envelope_is_a_payload_error(body: Any, options: dict[str, Any], message: str) -> None:
    """A body that is not JSON, or whose `alerts` expression finds no list, is refused whole."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(PayloadError, match=message):
        generic.parse(raw, "application/json", {}, ParseContext("uptime", RECEIVED, options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "name"),
        ({"name": "a[?"}, "not a valid JMESPath expression"),
        ({"name": {"template": "{{ oops"}}, "template does not compile"),
        ({"name": {"template": "x", "extra": 1}}, "extra"),
        ({"name": "n", "labelz": {}}, "labelz"),
        ({"name": "n", "status_map": {"down": "broken"}}, "status_map"),
        ({"name": "n", "severity_map": {"p1": "urgent"}}, "severity_map"),
    ],
)
def test_options_are_validated_at_start_up(options: dict[str, Any], message: str) -> None:
    """GenericOptions rejects unknown keys, bad JMESPath, templates that do not compile, unknown map values."""
    with pytest.raises(ValidationError, match=message):
        generic.GenericOptions.model_validate(options)


def test_bad_options_at_parse_time_are_a_config_error() -> None:
    """Options that were never validated surface as a ConfigError naming the source, not a 400."""
    with pytest.raises(ConfigError, match="uptime"):
        parse({"n": "x"}, nme="n")
