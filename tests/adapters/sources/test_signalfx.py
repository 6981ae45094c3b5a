"""Splunk Observability (SignalFx) webhook: recorded payloads, statusExtended, X-SFX-Signature."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import signalfx
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
SECRET = "change-me-shared-secret"
SIGNATURE = "smT5F9CJ9aS+/UUWGcZgTl7wvNBwh1r0Pk02gVi0iBk="


def recorded(name: str = "signalfx_webhook.json") -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return doc


def parse(doc: dict[str, Any] | bytes, **options: Any) -> Alert:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    [alert] = signalfx.parse(body, "application/json", {}, ParseContext("o11y", RECEIVED, options)).alerts
    return alert


COMMON = {
    "kind": "signalfx",
    "identity": "Hb3Xy9kA4AA",
    "name": "Memory utilization - prod",
    "resource": "app-03.example.com",
    "severity": Severity.CRITICAL,
}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "signalfx_webhook.json",
            {
                **COMMON,
                "status": Status.FIRING,
                "summary": "Triggered: Memory utilization - prod (Memory utilization > 90%)",
                "starts_at": datetime(2024, 5, 14, 9, 15, 30, tzinfo=UTC),
                "ends_at": None,
            },
        ),
        (
            "signalfx_webhook_ok.json",
            {
                **COMMON,
                "status": Status.RESOLVED,
                "summary": "Cleared: Memory utilization - prod (Memory utilization > 90%)",
                "starts_at": None,
                "ends_at": datetime(2024, 5, 14, 9, 48, 30, tzinfo=UTC),
            },
        ),
    ],
)
def test_recorded_payloads(fixture: str, expected: dict[str, Any]) -> None:
    """Each recorded payload gives one Alert keyed by incidentId, with dimensions as labels."""
    alert = parse((FIXTURES / fixture).read_bytes())
    assert {key: getattr(alert, key) for key in expected} == expected
    assert alert.labels["rule"] == "Memory utilization > 90%"
    assert alert.labels["AWSUniqueId"] == "i-0a1b2c3d4e5f67890_us-east-1_123456789012"
    assert alert.links[1:] == [
        "https://wiki.example.com/runbooks/memory",
        "https://org-abc123.signalfx.com/#/chart/Fz0Hk5lA0AA",
    ]
    assert alert.annotations["tip"] == "Check for leaking JVMs"


@pytest.mark.parametrize(
    ("extended", "status"),
    [
        ("anomalous", Status.FIRING),
        ("ok", Status.RESOLVED),
        ("manually resolved", Status.RESOLVED),
        ("stopped", Status.RESOLVED),
        ("Manually Resolved", Status.RESOLVED),
    ],
)
def test_status_extended(extended: str, status: Status) -> None:
    """statusExtended decides the status; manual resolution and a stopped detector close the ticket too."""
    alert = parse(dict(recorded(), status="anomalous", statusExtended=extended))
    assert alert.status is status
    assert alert.labels["sfx_status"] == extended.lower()


def test_status_used_when_status_extended_is_absent() -> None:
    """An older or templated payload without statusExtended falls back to status."""
    doc = recorded("signalfx_webhook_ok.json")
    del doc["statusExtended"]
    assert parse(doc).status is Status.RESOLVED


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ("Critical", Severity.CRITICAL),
        ("Major", Severity.MAJOR),
        ("Minor", Severity.MINOR),
        ("Info", Severity.INFO),
    ],
)
def test_severities(value: str, severity: Severity) -> None:
    """SignalFx severities map one to one onto the scale."""
    assert parse(dict(recorded(), severity=value)).severity is severity


def test_minimal_custom_payload() -> None:
    """A Handlebars-templated payload with only incidentId and status is enough."""
    alert = parse({"incidentId": "X1", "status": "anomalous", "detector": None})
    assert (alert.identity, alert.status, alert.severity, alert.resource) == (
        "X1",
        Status.FIRING,
        Severity.WARNING,
        "",
    )


def test_resource_dimension_option() -> None:
    """resource_dimensions picks which dimension names the resource."""
    assert parse(recorded(), resource_dimensions=["sf_metric"]).resource == "memory.utilization"


def test_unknown_fields_are_ignored() -> None:
    """Extra keys change nothing."""
    assert parse(dict(recorded(), newField={"a": [1]})) == parse(recorded())


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"status": "anomalous"}, "incidentId"),
        ({"incidentId": "", "status": "anomalous"}, "incidentId"),
        ({"incidentId": "X", "status": "maybe"}, "statusExtended: unknown value 'maybe'"),
        ({"incidentId": "X"}, "statusExtended: unknown value ''"),
        ({"incidentId": 5, "status": "ok"}, "incidentId"),
        ({"incidentId": "X", "status": "ok", "inputs": {"A": {"key": "host"}}}, "inputs.A.key"),
        ({"incidentId": "X", "status": "ok", "timestamp": "noon"}, "timestamp"),
    ],
)
def test_malformed_payload_is_a_payload_error(doc: dict[str, Any], message: str) -> None:
    """Missing or wrong-typed fields give a PayloadError naming the field."""
    with pytest.raises(PayloadError, match=message):
        parse(doc)


def test_signature_authenticates() -> None:
    """base64(HMAC-SHA256(secret, body)) in X-SFX-Signature authenticates (header name case-insensitive)."""
    body = (FIXTURES / "signalfx_webhook.json").read_bytes()
    signalfx.verify(body, {"x-sfx-signature": SIGNATURE}, {}, SECRET, RECEIVED)


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"X-SFX-Signature": SIGNATURE}, b"{}", "does not match"),
        ({"X-SFX-Signature": "bm9wZQ=="}, None, "does not match"),
        ({"X-SFX-Signature": "ünïcode"}, None, "does not match"),
        ({}, None, "missing X-SFX-Signature"),
        ({"Authorization": "Basic abc"}, None, "missing X-SFX-Signature"),
        ({"Authorization": "Bearer nope"}, None, "does not match"),
    ],
)
def test_bad_or_missing_signature_is_an_auth_error(headers: dict[str, str], body: bytes | None, message: str) -> None:
    """A tampered body, a wrong or missing signature: AuthError."""
    payload = body if body is not None else (FIXTURES / "signalfx_webhook.json").read_bytes()
    with pytest.raises(AuthError, match=message):
        signalfx.verify(payload, headers, {}, SECRET, RECEIVED)


def test_bearer_fallback_and_require_signature() -> None:
    """Without a signature a bearer token is accepted, unless the source requires signatures."""
    signalfx.verify(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED)
    strict = signalfx.configured({"require_signature": True}).verify
    assert strict is not None
    with pytest.raises(AuthError, match="missing X-SFX-Signature"):
        strict(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED)


def test_options_model_forbids_unknown_keys() -> None:
    """SignalFxOptions rejects a misspelt key."""
    with pytest.raises(ValidationError):
        signalfx.SignalFxOptions.model_validate({"require_signatures": True})
