"""SolarWinds trigger and reset actions: recorded JSON and form bodies, unresolved variables, broken JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import solarwinds
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
DETAILS = "https://orion.example.com/Orion/View.aspx?NetObject=AAT:1187"
NODE = "https://orion.example.com/Orion/NetPerfMon/NodeDetails.aspx?NetObject=N:412"


def parse(body: bytes | dict[str, Any], content_type: str = "application/json", **options: Any) -> Alert:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    [alert] = solarwinds.parse(raw, content_type, {}, ParseContext("orion", RECEIVED, options)).alerts
    return alert


def trigger(**fields: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / "solarwinds_trigger.json").read_bytes())
    return {**doc, **fields}


COMMON = {
    "kind": "solarwinds",
    "identity": "1187",
    "name": "Node is down",
    "resource": "LON-CORE-SW01",
    "severity": Severity.CRITICAL,
    "description": "Fires when a node stops responding to ICMP/SNMP polling.",
    "links": [DETAILS, NODE],
}
EXPECTED: dict[str, dict[str, Any]] = {
    "solarwinds_trigger.json": {
        **COMMON,
        "status": Status.FIRING,
        "summary": "Node LON-CORE-SW01 is Down.",
        "starts_at": datetime(2024, 5, 14, 9, 16, 4, tzinfo=UTC),
        "ends_at": None,
    },
    "solarwinds_reset.json": {
        **COMMON,
        "status": Status.RESOLVED,
        "summary": "Node LON-CORE-SW01 is Up.",
        "starts_at": None,
        "ends_at": datetime(2024, 5, 14, 9, 31, 10, tzinfo=UTC),
    },
    "solarwinds_trigger.form": {
        "identity": "1187",
        "name": "Node is down",
        "resource": "",
        "severity": Severity.CRITICAL,
        "status": Status.FIRING,
        "summary": "LON-CORE-SW01 (10.40.0.1): Node status is Down.",
        "links": [DETAILS, "https://orion.example.com/Orion/Netperfmon/AckAlert.aspx?ObjID=1187"],
    },
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_recorded_payloads(fixture: str) -> None:
    """Trigger, reset and the iLert-style form give one Alert keyed by AlertObjectID."""
    content_type = "application/x-www-form-urlencoded" if fixture.endswith(".form") else "application/json"
    alert = parse((FIXTURES / fixture).read_bytes(), content_type)
    expected = EXPECTED[fixture]
    assert {key: getattr(alert, key) for key in expected} == expected


def test_trigger_labels_and_raw() -> None:
    """The trigger keeps AlertActiveID and acknowledgement state in raw, object type in labels."""
    alert = parse(trigger())
    assert alert.labels == {
        "object_type": "Node",
        "solarwinds_event": "trigger",
        "node": "LON-CORE-SW01",
        "orion_server": "ORION-MPE-01",
    }
    assert alert.raw["alert_active_id"] == "40512"
    assert alert.raw["acknowledged"] == "Not Acknowledged"


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ("0", Severity.INFO),
        ("1", Severity.WARNING),
        ("2", Severity.CRITICAL),
        ("3", Severity.MAJOR),
        ("4", Severity.INFO),
        ("Serious", Severity.MAJOR),
        ("Notice", Severity.INFO),
        ("", Severity.WARNING),
        ("${N=Alerting;M=Severity}", Severity.WARNING),
    ],
)
def test_severity_numbers_and_names(value: str, severity: Severity) -> None:
    """Severity 0-4 and its names map onto the scale; unresolved or empty is warning."""
    assert parse(trigger(alert_severity=value)).severity is severity


def test_unresolved_variables_are_empty() -> None:
    """${N=...} left by SolarWinds (nested SWQL ones too) read as empty, falling back to other fields."""
    alert = parse(
        trigger(
            node_caption="${N=SWQL;M=SELECT TOP 1 RelatedNodeCaption FROM Orion.AlertObjects "
            "WHERE AlertObjectID = ${N=Alerting;M=AlertObjectID} }",
            alert_message="Node ${N=SwisEntity;M=Caption} is Down.",
            timestamp_utc="${N=SWQL;M=SELECT GETUTCDATE() as a1 FROM Orion.Engines}",
        )
    )
    assert alert.resource == "lon-core-sw01.example.com"  # node_dns, the next candidate
    assert alert.summary == "Node  is Down."
    assert alert.starts_at is None


def test_unescaped_json_is_repaired() -> None:
    """A message with raw quotes and a Windows path, pasted unescaped, still parses."""
    body = (
        b'{"event_type":"TRIGGER","alert_name":"Disk "C:\\" full","alert_object_id":"77",'
        b'"alert_message":"Volume C:\\ on "SQL01" is 99% full","alert_severity":"2"}'
    )
    alert = parse(body)
    assert (alert.identity, alert.name) == ("77", 'Disk "C:\\" full')
    assert alert.summary == 'Volume C:\\ on "SQL01" is 99% full'


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"event_type": "RESET"}, Status.RESOLVED),
        ({"event_type": "reset"}, Status.RESOLVED),
        ({"event_type": "ALERT"}, Status.FIRING),
        ({"event_type": "ACKNOWLEDGE"}, Status.ACKNOWLEDGED),
        ({"event_type": "", "reset": "true"}, Status.RESOLVED),
        ({"event_type": ""}, Status.FIRING),
    ],
)
def test_event_types(fields: dict[str, str], status: Status) -> None:
    """TRIGGER/RESET (and Datadog's reset: true) decide the status."""
    assert parse(trigger(**fields)).status is status


def test_datadog_template_without_object_id() -> None:
    """Datadog's published template has no AlertObjectID: AlertDefID plus node is the identity."""
    doc = {"alert_name": "CPU high", "alert_id": "def-1", "host": "sw-01", "alert_severity": "Warning"}
    alert = parse(doc)
    assert (alert.identity, alert.resource, alert.severity) == ("def-1!sw-01", "sw-01", Severity.WARNING)


def test_fields_and_severities_options() -> None:
    """`fields` maps a team's own keys; `severities` overrides the table."""
    form = urlencode({"kind": "RESET", "title": "Link down", "oid": "9", "sev": "Critical"}).encode()
    options = {
        "fields": {"event_type": "kind", "alert_name": "title", "alert_object_id": "oid", "alert_severity": "sev"},
        "severities": {"critical": "major"},
    }
    alert = parse(form, "application/x-www-form-urlencoded", **options)
    assert (alert.identity, alert.status, alert.severity) == ("9", Status.RESOLVED, Severity.MAJOR)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-14 09:16:04.123", datetime(2024, 5, 14, 9, 16, 4, 123000, tzinfo=UTC)),
        ("2024-05-14T09:16:04Z", datetime(2024, 5, 14, 9, 16, 4, tzinfo=UTC)),
        ("5/14/2024 9:16:04 AM", datetime(2024, 5, 14, 9, 16, 4, tzinfo=UTC)),
        ("14.05.2024 09:16:04", datetime(2024, 5, 14, 9, 16, 4, tzinfo=UTC)),
    ],
)
def test_timestamp_formats(value: str, expected: datetime) -> None:
    """GETUTCDATE() as rendered by differently configured servers reads as UTC."""
    assert parse(trigger(timestamp_utc=value)).starts_at == expected


def test_unknown_fields_are_ignored() -> None:
    """Extra keys in the body change nothing."""
    assert parse(trigger(custom_property="x")) == parse(trigger())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (orjson.dumps(trigger(alert_name="")), "alert_name missing"),
        (orjson.dumps(trigger(alert_object_id="${N=Alerting;M=AlertObjectID}", alert_def_id="")), "alert_object_id"),
        (orjson.dumps(trigger(event_type="EXPLODE")), "event_type: unknown value 'EXPLODE'"),
        (orjson.dumps(trigger(timestamp_utc="last tuesday")), "timestamp_utc"),
        (orjson.dumps(dict(trigger(), alert_name={"a": 1})), "alert_name: expected text"),
        (b'{"alert_name": "x", "alert_object_id": ', "cannot be repaired"),
        (b"", "body is empty"),
    ],
)
def test_malformed_payload_is_a_payload_error(body: bytes, message: str) -> None:
    """Missing identity, unknown event type, bad time or unreadable body: PayloadError naming it."""
    with pytest.raises(PayloadError, match=message):
        solarwinds.parse(body, "application/json", {}, ParseContext("orion", RECEIVED))


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": "Bearer s3cret"}, {}),
        ({}, {"token": "s3cret"}),
        ({"authorization": "Basic x"}, {"token": "s3cret"}),
    ],
)
def test_bearer_or_url_token_authenticates(headers: dict[str, str], query: dict[str, str]) -> None:
    """A bearer header, or a ?token= for versions whose action cannot set headers, authenticates."""
    solarwinds.verify(b"{}", headers, query, "s3cret", RECEIVED)


@pytest.mark.parametrize(
    ("headers", "query", "message"),
    [
        ({}, {}, "missing"),
        ({"Authorization": "Bearer nope"}, {"token": "s3cret"}, "does not match"),
        ({}, {"token": "nope"}, "does not match"),
    ],
)
def test_missing_or_wrong_token_is_an_auth_error(headers: dict[str, str], query: dict[str, str], message: str) -> None:
    """No credentials or a wrong one is refused; a wrong bearer header is not rescued by the URL token."""
    with pytest.raises(AuthError, match=message):
        solarwinds.verify(b"{}", headers, query, "s3cret", RECEIVED)


def test_options_model_forbids_unknown_keys() -> None:
    """SolarWindsOptions rejects unknown keys and unknown field names."""
    with pytest.raises(ValidationError):
        solarwinds.SolarWindsOptions.model_validate({"fields": {"AlertName": "x"}})
    with pytest.raises(ValidationError):
        solarwinds.SolarWindsOptions.model_validate({"severity": {}})
