"""Datadog webhook with the documented $VARIABLES: recorded payload, transitions, priorities, forms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from adapters.sources import datadog
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
TRIGGERED = datetime(2024, 5, 14, 9, 16, tzinfo=UTC)


def recorded(**fields: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / "datadog.json").read_bytes())
    return {**doc, **fields}


def parse(body: bytes | dict[str, Any], content_type: str = "application/json") -> Alert:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    [alert] = datadog.parse(raw, content_type, {}, ParseContext("dd", RECEIVED)).alerts
    return alert


def test_recorded_payload() -> None:
    """The recorded Triggered notification gives one firing Alert keyed by monitor and scope."""
    alert = parse((FIXTURES / "datadog.json").read_bytes())
    expected = {
        "kind": "datadog",
        "identity": "98765432:host:web-04,service:checkout",
        "name": "High p99 latency on checkout",
        "resource": "web-04",
        "severity": Severity.MAJOR,
        "status": Status.FIRING,
        "summary": "[Triggered on {host:web-04,service:checkout}] High p99 latency on checkout",
        "starts_at": TRIGGERED,
        "ends_at": None,
        "links": ["https://app.datadoghq.com/event/event?id=7512345678901234567"],
    }
    assert {key: getattr(alert, key) for key in expected} == expected
    assert alert.description.startswith("@webhook-itsm p99 latency")
    assert "%%%" not in alert.description
    assert alert.labels["team"] == "payments"
    assert alert.labels["monitor"] == "true"
    assert alert.labels["alert_cycle_key"] == "6921402711442317923"
    assert alert.raw["org_name"] == "Example Corp"


@pytest.mark.parametrize(
    ("transition", "status", "severity", "starts"),
    [
        ("Triggered", Status.FIRING, Severity.MAJOR, True),
        ("Re-Triggered", Status.FIRING, Severity.MAJOR, False),
        ("Warn", Status.FIRING, Severity.WARNING, True),
        ("Re-Warn", Status.FIRING, Severity.WARNING, False),
        ("No Data", Status.FIRING, Severity.MAJOR, True),
        ("Renotify", Status.FIRING, Severity.MAJOR, False),
        ("Recovered", Status.RESOLVED, Severity.MAJOR, False),
    ],
)
def test_transitions(transition: str, status: Status, severity: Severity, starts: bool) -> None:
    """$ALERT_TRANSITION decides the status; only a cycle's first notification sets starts_at."""
    alert = parse(recorded(alert_transition=transition))
    assert (alert.status, alert.severity) == (status, severity)
    assert alert.starts_at == (TRIGGERED if starts else None)
    assert alert.ends_at == (TRIGGERED if status is Status.RESOLVED else None)
    assert alert.identity == "98765432:host:web-04,service:checkout"


@pytest.mark.parametrize(
    ("priority", "alert_type", "severity"),
    [
        ("P1", "error", Severity.CRITICAL),
        ("P3", "error", Severity.MINOR),
        ("P4", "error", Severity.WARNING),
        ("P5", "error", Severity.INFO),
        ("", "error", Severity.MAJOR),
        ("", "warning", Severity.WARNING),
        ("", "success", Severity.OK),
        ("", "", Severity.WARNING),
    ],
)
def test_priorities(priority: str, alert_type: str, severity: Severity) -> None:
    """$ALERT_PRIORITY P1-P5 maps one to one; without a priority, $ALERT_TYPE decides."""
    assert parse(recorded(alert_priority=priority, alert_type=alert_type)).severity is severity


def test_without_transition_success_type_resolves() -> None:
    """A payload without $ALERT_TRANSITION resolves on alert_type success."""
    doc = recorded(alert_type="success")
    del doc["alert_transition"]
    assert parse(doc).status is Status.RESOLVED


def test_form_encoded_payload() -> None:
    """'Encode as form' bodies are read like JSON ones."""
    form = urlencode({"alert_id": "1", "alert_transition": "Recovered", "alert_title": "Disk", "hostname": "h"})
    alert = parse(form.encode(), "application/x-www-form-urlencoded")
    assert (alert.identity, alert.status, alert.resource) == ("1", Status.RESOLVED, "h")


def test_resource_from_host_tag() -> None:
    """Without $HOSTNAME the host tag names the resource."""
    assert parse(recorded(hostname="")).resource == "web-04"


def test_unknown_fields_are_ignored() -> None:
    """Extra keys change nothing."""
    assert parse(recorded(snapshot="https://x", user="a")) == parse(recorded())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (orjson.dumps(recorded(alert_id="")), "alert_id missing"),
        (orjson.dumps(recorded(alert_transition="Exploded")), "alert_transition: unknown value"),
        (orjson.dumps(recorded(date="tomorrow")), "date: expected a Unix time"),
        (orjson.dumps(dict(recorded(), alert_title={"a": 1})), "alerttitle: expected text"),
        (b"[]", "JSON array"),
    ],
)
def test_malformed_payload_is_a_payload_error(body: bytes, message: str) -> None:
    """A missing monitor id, an unknown transition, a bad date or the wrong shape: PayloadError."""
    with pytest.raises(PayloadError, match=message):
        parse(body)
