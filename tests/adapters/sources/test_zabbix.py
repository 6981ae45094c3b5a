"""Zabbix webhook media type: problem, recovery, updates; unresolved macros; server time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import zabbix
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
LINK = "https://zabbix.example.com/tr_events.php?triggerid=23456&eventid=8812345"


def recorded(name: str = "zabbix_problem.json", **fields: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return {**doc, **fields}


def parse(body: bytes | dict[str, Any], **options: Any) -> Alert:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    [alert] = zabbix.parse(raw, "application/json", {}, ParseContext("zabbix", RECEIVED, options)).alerts
    return alert


COMMON = {
    "kind": "zabbix",
    "identity": "8812345",
    "name": "MySQL: Service is down",
    "resource": "db-prod-02.example.com",
    "severity": Severity.MAJOR,
    "starts_at": datetime(2024, 5, 14, 11, 17, 42, tzinfo=UTC),
    "links": [LINK],
    "labels": {
        "class": "database",
        "component": "mysql",
        "service": "billing",
        "host": "db-prod-02",
        "trigger_id": "23456",
        "event_id": "8812345",
    },
}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "zabbix_problem.json",
            {
                **COMMON,
                "status": Status.FIRING,
                "summary": "Problem: MySQL: Service is down",
                "ends_at": None,
                "labels": {**COMMON["labels"], "zabbix_event": "problem"},
            },
        ),
        (
            "zabbix_recovery.json",
            {
                **COMMON,
                "status": Status.RESOLVED,
                "summary": "Resolved in 14m 6s: MySQL: Service is down",
                "ends_at": datetime(2024, 5, 14, 11, 31, 48, tzinfo=UTC),
                "labels": {**COMMON["labels"], "zabbix_event": "recovery"},
            },
        ),
    ],
)
def test_recorded_payloads(fixture: str, expected: dict[str, Any]) -> None:
    """Problem and recovery share {EVENT.ID} as identity and the problem's start as starts_at."""
    alert = parse((FIXTURES / fixture).read_bytes())
    assert {key: getattr(alert, key) for key in expected} == expected
    assert alert.description.startswith("Problem")


def test_unresolved_recovery_macros_are_empty() -> None:
    """In a problem notification the literal {EVENT.RECOVERY.ID} is no value at all."""
    alert = parse(recorded())
    assert "event_recovery_id" not in alert.raw
    assert alert.ends_at is None


@pytest.mark.parametrize(
    ("fields", "status", "summary"),
    [
        (
            {"event_update_action": "acknowledged", "event_ack_status": "Yes", "event_update_message": "on it"},
            Status.ACKNOWLEDGED,
            "Jane Doe acknowledged: on it",
        ),
        (
            {"event_update_action": "commented", "event_ack_status": "No", "event_update_message": "still down"},
            Status.FIRING,
            "Jane Doe commented: still down",
        ),
        (
            {"event_update_action": "unacknowledged", "event_ack_status": "Yes"},
            Status.FIRING,
            "Jane Doe unacknowledged",
        ),
        ({"event_update_action": "closed", "event_ack_status": "Yes"}, Status.RESOLVED, "Jane Doe closed"),
        (
            {"event_update_action": "changed severity from High to Disaster", "event_nseverity": "5"},
            Status.FIRING,
            "Jane Doe changed severity from High to Disaster",
        ),
    ],
)
def test_update_operations(fields: dict[str, str], status: Status, summary: str) -> None:
    """Problem updates: an ack acknowledges, a manual close resolves, anything else is a note (firing)."""
    alert = parse(recorded(event_update_status="1", event_update_user="Jane Doe", **fields))
    assert (alert.status, alert.summary, alert.labels["zabbix_event"]) == (status, summary, "update")
    assert alert.identity == "8812345"


@pytest.mark.parametrize(
    ("nseverity", "name", "severity"),
    [
        ("5", "Disaster", Severity.CRITICAL),
        ("4", "High", Severity.MAJOR),
        ("3", "Average", Severity.MINOR),
        ("2", "Warning", Severity.WARNING),
        ("1", "Information", Severity.INFO),
        ("0", "Not classified", Severity.INFO),
        ("{EVENT.NSEVERITY}", "Average", Severity.MINOR),
        ("", "", Severity.WARNING),
    ],
)
def test_severities(nseverity: str, name: str, severity: Severity) -> None:
    """{EVENT.NSEVERITY} 0-5 (else the name) maps one to one onto the scale."""
    assert parse(recorded(event_nseverity=nseverity, event_severity=name)).severity is severity


def test_severities_option() -> None:
    """`severities` lets a team fold High into critical."""
    assert parse(recorded(), severities={"4": "critical"}).severity is Severity.CRITICAL


def test_timezone_option_converts_server_local_times() -> None:
    """{EVENT.DATE}/{EVENT.TIME} are server-local: the timezone option turns them into UTC (DST aware)."""
    alert = parse(recorded("zabbix_recovery.json"), timezone="Europe/Berlin")
    assert alert.starts_at == datetime(2024, 5, 14, 9, 17, 42, tzinfo=UTC)
    assert alert.ends_at == datetime(2024, 5, 14, 9, 31, 48, tzinfo=UTC)


def test_tags_fall_back_to_text_form() -> None:
    """Without {EVENT.TAGSJSON}, {EVENT.TAGS} `k:v, k:v` gives the labels; repeated tags are joined."""
    alert = parse(recorded(event_tagsjson="{EVENT.TAGSJSON}", event_tags="team:db, team:ops, tier:1"))
    assert (alert.labels["team"], alert.labels["tier"]) == ("db,ops", "1")


def test_zabbix_stock_parameter_names() -> None:
    """Parameter names of Zabbix's own media types (eventid, eventvalue, severity, url) are read too."""
    doc = {"eventid": "42", "eventvalue": "1", "eventname": "Disk full", "hostname": "h1", "severity": "5"}
    alert = parse(doc)
    assert (alert.identity, alert.name, alert.resource, alert.severity) == ("42", "Disk full", "h1", Severity.CRITICAL)


def test_unknown_fields_are_ignored() -> None:
    """Extra parameters change nothing."""
    assert parse(recorded(HTTPProxy="", item_key="mysql.ping")) == parse(recorded())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (orjson.dumps(recorded(event_id="{EVENT.ID}")), "event_id missing"),
        (orjson.dumps(recorded(event_value="7")), "event_value: expected 1"),
        (orjson.dumps(recorded(event_date="14/05/2024")), "event_date: expected yyyy.mm.dd"),
        (orjson.dumps(dict(recorded(), event_name=[1])), "event_name: expected text"),
        (b"{{{", "cannot be repaired"),
    ],
)
def test_malformed_payload_is_a_payload_error(body: bytes, message: str) -> None:
    """A missing event id, a bad value or date, or an unreadable body: PayloadError naming it."""
    with pytest.raises(PayloadError, match=message):
        parse(body)


def test_options_model_validates_timezone_and_keys() -> None:
    """ZabbixOptions rejects an unknown time zone and unknown keys at start-up."""
    with pytest.raises(ValidationError, match="time zone"):
        zabbix.ZabbixOptions.model_validate({"timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError):
        zabbix.ZabbixOptions.model_validate({"tz": "UTC"})


def test_the_echo_of_the_bridges_own_update_is_dropped() -> None:
    """An update whose message carries the bridge's marker is its own acknowledgement's echo: dropped, counted;
    the same update by a person is a note; the alert keeps its event id as a label (for acknowledging it)."""
    ctx = ParseContext("zabbix", RECEIVED, {})
    ours = recorded(event_update_status="1", event_update_action="acknowledged", event_ack_status="Yes",
                    event_update_message="[alert-ticket-bridge] Acknowledged from ticket INC0010001")  # fmt: skip
    parsed = zabbix.parse(orjson.dumps(ours), "application/json", {}, ctx)
    assert (parsed.ours, parsed.alerts) == (1, [])
    theirs = {**ours, "event_update_message": "on it"}
    [alert] = zabbix.parse(orjson.dumps(theirs), "application/json", {}, ctx).alerts
    assert alert.labels["event_id"] == "8812345"
