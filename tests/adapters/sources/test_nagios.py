"""Nagios Core and Icinga 2 notifications: recorded payloads, every notification type, broken JSON, forms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import nagios
from bridge.core.errors import ConfigError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"


def ctx(**options: Any) -> ParseContext:
    return ParseContext(source="nagios-main", received_at=RECEIVED, options=options)


def parse(body: bytes, content_type: str = "application/json", kind: str = "nagios", **options: Any) -> Alert:
    adapter = nagios.ICINGA2 if kind == "icinga2" else nagios.NAGIOS
    parsed: Parsed = adapter.parse(body, content_type, {}, ctx(**options))
    assert parsed.rejected == []
    [alert] = parsed.alerts
    return alert


def service(**fields: str) -> bytes:
    """A service notification as the snippet's command sends it, with `fields` replaced."""
    doc = {
        "notification_type": "PROBLEM",
        "host_name": "web-01",
        "service_desc": "HTTP",
        "service_state": "CRITICAL",
        "service_output": "CRITICAL - Socket timeout",
        "timet": "1715678102",
        "service_duration_sec": "185",
        **fields,
    }
    return orjson.dumps(doc)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


EXPECTED: dict[str, dict[str, Any]] = {
    "nagios_service_problem.json": {
        "identity": "web-01!HTTP",
        "name": "HTTP",
        "resource": "web-01",
        "severity": Severity.CRITICAL,
        "status": Status.FIRING,
        "summary": "CRITICAL - Socket timeout after 10 seconds",
        "description": "Connection to 10.20.1.11:80 timed out\nRetries: 3",
        "starts_at": at(1715678102 - 185),
        "ends_at": None,
        "labels": {
            "host": "web-01",
            "service": "HTTP",
            "object_type": "service",
            "state": "CRITICAL",
            "nagios_event": "problem",
            "problem_id": "4711",
            "server": "nagios01.example.com",
            "host_groups": "linux-servers,web-servers",
        },
    },
    "nagios_service_acknowledgement.json": {
        "identity": "web-01!HTTP",
        "severity": Severity.CRITICAL,
        "status": Status.ACKNOWLEDGED,
        "summary": "Acknowledged by jdoe: Looking into it - INC0012345",
        "description": "HTTP on web-01 is CRITICAL: CRITICAL - Socket timeout after 10 seconds",
        "starts_at": at(1715678829 - 912),  # the same problem start as the PROBLEM's
    },
    "nagios_host_recovery.json": {
        "identity": "db-prod-01",
        "name": "HOST",
        "resource": "db-prod-01",
        "severity": Severity.OK,
        "status": Status.RESOLVED,
        "summary": "PING OK - Packet loss = 0%, RTA = 0.41 ms",
        "starts_at": None,
        "ends_at": at(1715679757),
        "labels": {
            "host": "db-prod-01",
            "object_type": "host",
            "state": "UP",
            "nagios_event": "recovery",
            "problem_id": "4698",  # LASTHOSTPROBLEMID: the problem this recovery closes
            "server": "nagios01.example.com",
        },
    },
    "nagios_service_problem.form": {
        "identity": "web-01!HTTP",
        "severity": Severity.CRITICAL,
        "status": Status.FIRING,
        "summary": "CRITICAL - Socket timeout after 10 seconds",
        "starts_at": None,  # the env dump has TIMET but neither duration nor last state change
        "raw": {
            "notification_type": "PROBLEM",
            "host_address": "10.20.1.11",
            "host_alias": "web-01.example.com",
            "notification_number": "1",
            "perfdata": "time=10.001s;;;0.000000 size=0B;;;0",
        },
    },
    "icinga2_problem.json": {
        "kind": "icinga2",
        "identity": "web-01.example.com!http",
        "name": "http",
        "resource": "web-01.example.com",
        "severity": Severity.CRITICAL,
        "status": Status.FIRING,
        "summary": "HTTP CRITICAL - Socket timeout after 10 seconds",
        "starts_at": datetime(2024, 5, 14, 9, 14, 51, 451000, tzinfo=UTC),
        "links": ["https://icinga.example.com/icingaweb2/icingadb/service?name=http&host.name=web-01.example.com"],
    },
    "icinga2_recovery.json": {
        "identity": "web-01.example.com!http",
        "severity": Severity.OK,
        "status": Status.RESOLVED,
        "starts_at": None,
        "ends_at": datetime(2024, 5, 14, 9, 41, 41, 2000, tzinfo=UTC),
    },
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_recorded_payloads(fixture: str) -> None:
    """Each recorded Nagios/Icinga notification gives exactly one Alert with these fields."""
    kind = "icinga2" if fixture.startswith("icinga2") else "nagios"
    content_type = FORM if fixture.endswith(".form") else "application/json"
    alert = parse((FIXTURES / fixture).read_bytes(), content_type, kind)
    expected = EXPECTED[fixture]
    assert {key: getattr(alert, key) for key in expected} == expected
    assert (alert.source, alert.kind, alert.received_at) == ("nagios-main", kind, RECEIVED)


@pytest.mark.parametrize(
    ("ntype", "state", "status", "event", "summary"),
    [
        ("PROBLEM", "CRITICAL", Status.FIRING, "problem", "CRITICAL - Socket timeout"),
        ("RECOVERY", "OK", Status.RESOLVED, "recovery", "CRITICAL - Socket timeout"),
        (
            "ACKNOWLEDGEMENT",
            "CRITICAL",
            Status.ACKNOWLEDGED,
            "acknowledgement",
            "Acknowledged by jdoe: on it",
        ),
        ("FLAPPINGSTART", "OK", Status.FIRING, "flapping_start", "Flapping started: HTTP on web-01 is OK"),
        ("FLAPPINGSTOP", "OK", Status.RESOLVED, "flapping_stop", "Flapping stopped: HTTP on web-01 is OK"),
        ("FLAPPINGSTOP", "CRITICAL", Status.FIRING, "flapping_stop", "Flapping stopped: HTTP on web-01 is"),
        ("FLAPPINGEND", "OK", Status.RESOLVED, "flapping_stop", "Flapping stopped"),
        ("FLAPPINGDISABLED", "WARNING", Status.FIRING, "flapping_disabled", "Flap detection disabled"),
        (
            "DOWNTIMESTART",
            "OK",
            Status.ACKNOWLEDGED,
            "downtime_start",
            "Scheduled downtime started by jdoe: on it",
        ),
        ("DOWNTIMESTART", "CRITICAL", Status.ACKNOWLEDGED, "downtime_start", "Scheduled downtime started"),
        (
            "DOWNTIMEEND",
            "OK",
            Status.RESOLVED,
            "downtime_end",
            "Scheduled downtime ended: HTTP on web-01 is OK",
        ),
        ("DOWNTIMEEND", "CRITICAL", Status.FIRING, "downtime_end", "Scheduled downtime ended"),
        (
            "DOWNTIMECANCELLED",
            "WARNING",
            Status.FIRING,
            "downtime_cancelled",
            "Scheduled downtime cancelled by",
        ),
        ("DOWNTIMEREMOVED", "OK", Status.RESOLVED, "downtime_cancelled", "Scheduled downtime cancelled"),
        ("CUSTOM", "CRITICAL", Status.FIRING, "custom", "Custom notification by jdoe: on it"),
        ("CUSTOM", "OK", Status.ACKNOWLEDGED, "custom", "Custom notification by jdoe: on it"),
        ("acknowledgement", "CRITICAL", Status.ACKNOWLEDGED, "acknowledgement", "Acknowledged"),
    ],
)
def test_notification_types(ntype: str, state: str, status: Status, event: str, summary: str) -> None:
    """Every notification type maps to a status and an event label; notes never resolve a problem state."""
    body = service(
        notification_type=ntype,
        service_state=state,
        notification_author="jdoe",
        notification_comment="on it",
    )
    alert = parse(body)
    assert (alert.status, alert.labels["nagios_event"]) == (status, event)
    assert alert.summary.startswith(summary)
    assert alert.identity == "web-01!HTTP"


def test_downtime_start_never_resolves() -> None:
    """DOWNTIMESTART is a note (acknowledged) even for an object that is OK: never a resolve, never a fire."""
    for state in ("OK", "WARNING", "CRITICAL", "UNKNOWN", ""):
        assert parse(service(notification_type="DOWNTIMESTART", service_state=state)).status is Status.ACKNOWLEDGED


def test_firing_note_about_healthy_object_is_at_least_warning() -> None:
    """FLAPPINGSTART while the state happens to be OK fires as a warning, not as severity ok."""
    assert parse(service(notification_type="FLAPPINGSTART", service_state="OK")).severity is Severity.WARNING


@pytest.mark.parametrize(
    ("fields", "severity"),
    [
        ({"service_state": "WARNING"}, Severity.WARNING),
        ({"service_state": "UNKNOWN"}, Severity.MAJOR),
        ({"service_state": "", "service_state_id": "2"}, Severity.CRITICAL),
        ({"service_state": "", "service_state_id": "9"}, Severity.WARNING),
        ({"service_desc": "", "host_state": "DOWN"}, Severity.CRITICAL),
        ({"service_desc": "", "host_state": "UNREACHABLE"}, Severity.MAJOR),
        ({"service_desc": "", "host_state": "", "host_state_id": "1"}, Severity.CRITICAL),
    ],
)
def test_state_severities(fields: dict[str, str], severity: Severity) -> None:
    """Service and host states (by name, else by id) map onto the one severity scale."""
    assert parse(service(**fields)).severity is severity


def test_host_notification_identity() -> None:
    """A host notification (no service) has the host as identity and HOST as name."""
    alert = parse(service(service_desc="", host_state="DOWN", host_output="PING CRITICAL"))
    assert (alert.identity, alert.name, alert.summary) == ("web-01", "HOST", "PING CRITICAL")
    assert "service" not in alert.labels


def test_object_type_host_wins_over_stray_service_field() -> None:
    """object_type=host makes it a host alert even when a service macro came through non-empty."""
    assert parse(service(object_type="host", host_state="DOWN")).identity == "web-01"


def test_unknown_fields_are_ignored() -> None:
    """Extra keys in a notification change nothing."""
    assert parse(service(contact_pager="x", extra_var="y")) == parse(service())


def test_unescaped_json_is_repaired() -> None:
    """Quotes, a Windows path, a raw newline and a tab pasted unescaped by Nagios still parse."""
    body = (
        b'{"notification_type":"PROBLEM","host_name":"win-07","service_desc":"Disk "C:" usage",'
        b'"service_state":"CRITICAL","service_output":"CRITICAL - C:\\Temp is 99% "full"",'
        b'"long_service_output":"line one\nline\ttwo","notification_comment":"say "hi", ok"}'
    )
    alert = parse(body)
    assert alert.identity == 'win-07!Disk "C:" usage'
    assert alert.summary == 'CRITICAL - C:\\Temp is 99% "full"'
    assert alert.description == "line one\nline\ttwo"


def test_long_output_escapes_from_env_macros_are_undone() -> None:
    """$LONGSERVICEOUTPUT$ sent through an env macro keeps Nagios' `\\n`/`\\\\` escapes: they are decoded."""
    alert = parse(service(long_service_output="line one\\nC:\\\\Temp"))
    assert alert.description == "line one\nC:\\Temp"


def test_json_sent_as_form_content_type_is_read_as_json() -> None:
    """curl --data without -H labels JSON as a form; the body decides."""
    assert parse(service(), FORM) == parse(service())


def test_env_dump_form_with_prefixes() -> None:
    """A form of NAGIOS_*/ICINGA_* environment macros (prefix kept) is read like bare macro names."""
    form = urlencode(
        {"NAGIOS_NOTIFICATIONTYPE": "PROBLEM", "NAGIOS_HOSTNAME": "db-1", "NAGIOS_HOSTSTATE": "DOWN"}
    ).encode()
    alert = parse(form, FORM)
    assert (alert.identity, alert.severity) == ("db-1", Severity.CRITICAL)


def test_latin1_bytes_are_read_not_refused() -> None:
    """Plugin output in Latin-1 (not UTF-8) is read as Latin-1 rather than losing the alert."""
    alert = parse(service(service_output="XX").replace(b"XX", b"Temperatur 45\xb0C zu hoch"))
    assert alert.summary == "Temperatur 45°C zu hoch"


def test_unresolved_macros_count_as_empty() -> None:
    """A macro Nagios left unresolved ($SERVICEDISPLAYNAME$) is an empty value, not text."""
    alert = parse(service(notification_comment="$NOTIFICATIONCOMMENT$", notification_type="CUSTOM"))
    assert alert.summary == "Custom notification"


def test_fields_option_maps_custom_keys() -> None:
    """The `fields` option reads a field from the key a team's own command uses."""
    body = orjson.dumps({"what": "RECOVERY", "node": "db-2", "state": "UP"})
    options = {"fields": {"notification_type": "what", "host_name": "node", "host_state": "state"}}
    alert = parse(body, **options)
    assert (alert.identity, alert.status, alert.severity) == ("db-2", Status.RESOLVED, Severity.OK)


def test_severities_option_overrides_states() -> None:
    """The `severities` option changes what a state means (here UNKNOWN → warning)."""
    alert = parse(service(service_state="UNKNOWN"), severities={"unknown": "warning"})
    assert alert.severity is Severity.WARNING


def test_icinga_event_label_and_dialect() -> None:
    """Icinga 2's FLAPPINGEND folds into flapping_stop, labelled icinga2_event."""
    alert = parse(service(notification_type="FLAPPINGEND", service_state="OK"), kind="icinga2")
    assert alert.labels["icinga2_event"] == "flapping_stop"
    assert alert.status is Status.RESOLVED


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b"[1, 2]", "JSON array"),
        (b"just words", "neither a JSON object nor form"),
        (b'{"notification_type": "PROBLEM", "host_name": ', "cannot be repaired"),
        (b'{"notification_type": "PROBLEM" "host_name": "x"}', "notification_type: unknown value"),
        (b'{"a": {"nested": 1}, oops}', "cannot be repaired"),
        (service(notification_type=""), "notification_type missing"),
        (service(notification_type="BANANA"), "notification_type: unknown value 'BANANA'"),
        (service(host_name=""), "host_name missing"),
        (orjson.dumps({"notification_type": "PROBLEM", "host_name": {"x": 1}}), "host_name: expected text"),
        (
            orjson.dumps({"notification_type": ["PROBLEM"], "host_name": "x"}),
            "notification_type: expected text",
        ),
        (service(timet="yesterday"), "timet: expected a Unix time"),
        (service(timet="1e30"), "timet: .* is not a plausible Unix time"),
        (service(service_duration_sec="long"), "service_duration_sec: expected seconds"),
        (service(service_output="x" * 70_000), "service_output: text of 70000"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than"),
        (b"a=1&" * 3000, "more than 2000 fields"),
    ],
)
def test_unreadable_or_wrong_payload_is_a_payload_error(body: bytes, message: str) -> None:
    """Bodies that truly cannot be read, or miss or mistype a key field, give a PayloadError naming it."""
    with pytest.raises(PayloadError, match=message):
        nagios.NAGIOS.parse(body, "application/json", {}, ctx())


def test_bad_options_are_a_config_error() -> None:
    """Options that slipped past start-up validation are the operator's error, not a 400."""
    with pytest.raises(ConfigError, match="nagios-main"):
        nagios.NAGIOS.parse(service(), "application/json", {}, ctx(fieldz={}))


def test_options_model_forbids_unknown_keys_and_fields() -> None:
    """NagiosOptions rejects unknown keys and unknown field names at start-up."""
    with pytest.raises(ValidationError):
        nagios.NagiosOptions.model_validate({"field": {}})
    with pytest.raises(ValidationError):
        nagios.NagiosOptions.model_validate({"fields": {"hostname": "x"}})
    with pytest.raises(ValidationError):
        nagios.NagiosOptions.model_validate({"severities": {"DOWN": "catastrophic"}})


@pytest.mark.parametrize("kind", ["nagios", "icinga2"])
@pytest.mark.parametrize(
    ("fields", "ours"),
    [
        ({"notification_comment": "[alert-ticket-bridge] Acknowledged from ticket INC0010001 by jane"}, True),
        ({"notification_author": "alert-ticket-bridge", "notification_comment": "on it"}, True),
        ({"notification_author": "jdoe", "notification_comment": "Looking into it - INC0012345"}, False),
        ({"notification_type": "PROBLEM", "notification_comment": "[alert-ticket-bridge] x"}, False),
    ],
    ids=["marker", "bridge-author", "person", "problem-with-marker"],
)
def test_the_echo_of_the_bridges_own_acknowledgement_is_dropped(kind: str, fields: dict[str, str], ours: bool) -> None:
    """An ACKNOWLEDGEMENT carrying the bridge's marker or made by its author is dropped and counted (the loop
    back's echo); a person's is an alert; a problem is never dropped for its text."""
    doc = {**orjson.loads((FIXTURES / "nagios_service_acknowledgement.json").read_bytes()), **fields}
    adapter = nagios.ICINGA2 if kind == "icinga2" else nagios.NAGIOS
    parsed = adapter.parse(orjson.dumps(doc), "application/json", {}, ctx())
    assert (parsed.ours, len(parsed.alerts)) == ((1, 0) if ours else (0, 1))


def test_own_authors_is_configurable() -> None:
    """A bridge whose upstream writes as another author names it in own_authors."""
    doc = {
        **orjson.loads((FIXTURES / "nagios_service_acknowledgement.json").read_bytes()),
        "notification_author": "itsm",
    }
    parsed = nagios.NAGIOS.parse(orjson.dumps(doc), "application/json", {}, ctx(own_authors=["itsm"]))
    assert (parsed.ours, parsed.alerts) == (1, [])
