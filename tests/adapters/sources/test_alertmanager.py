"""The Alertmanager webhook parser: recorded payloads in, exact Alerts out; bad input named precisely."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.sources.alertmanager import fingerprint, parse
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed
from tests.amp import alert, group
from tests.conftest import fixture_bytes, fixture_json

RECEIVED = datetime(2024, 5, 14, 10, 5, 0, tzinfo=UTC)
CTX = ParseContext(source="prom-eu", received_at=RECEIVED)
RUNBOOK = "https://runbooks.prometheus-operator.dev/runbooks/node/nodefilesystemalmostoutofspace"
GROUP_KEY = (
    '{}/{severity=~"critical|warning"}:'
    '{alertname="NodeFilesystemAlmostOutOfSpace", instance="db-prod-01.example.com:9100"}'
)
RAW = {"groupKey": GROUP_KEY, "externalURL": "http://alertmanager.example.com:9093", "receiver": "itsm-webhook"}


def run(body: bytes | dict[str, Any]) -> Parsed:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse(data, "application/json", {}, CTX)


def recorded_alert(
    device: str, mountpoint: str, free: str, starts: datetime, *, status: Status, ends: datetime | None
) -> Alert:
    """One of the two alerts in the recorded group, written out field by field."""
    labels = {
        "alertname": "NodeFilesystemAlmostOutOfSpace",
        "cluster": "prod-eu1",
        "device": device,
        "fstype": "ext4",
        "instance": "db-prod-01.example.com:9100",
        "job": "node",
        "mountpoint": mountpoint,
        "severity": "critical",
        "team": "dba",
    }
    description = (
        f"Filesystem on {device}, mounted on {mountpoint}, at db-prod-01.example.com:9100 "
        f"has only {free}% available space left."
    )
    generator = fixture_json("alertmanager_firing.json")["alerts"][0]["generatorURL"]
    assert generator.startswith("http://prometheus-0.example.com:9090/graph?g0.expr=")
    return Alert(
        source="prom-eu",
        kind="alertmanager",
        identity={"/dev/sdb1": "6cba2cfc9fff8da5", "/dev/sda1": "658cbc17d4762484"}[device],
        name="NodeFilesystemAlmostOutOfSpace",
        resource="db-prod-01.example.com:9100",
        severity=Severity.CRITICAL,
        status=status,
        summary="Filesystem has less than 5% space left.",
        description=description,
        labels=labels,
        annotations={
            "description": description,
            "runbook_url": RUNBOOK,
            "summary": "Filesystem has less than 5% space left.",
        },
        starts_at=starts,
        ends_at=ends,
        links=[generator, RUNBOOK],
        received_at=RECEIVED,
        raw=RAW,
    )


SDB_START = datetime(2024, 5, 14, 9, 12, 45, 123000, tzinfo=UTC)
SDA_START = datetime(2024, 5, 14, 9, 14, 15, 123000, tzinfo=UTC)


def test_firing_payload_gives_the_exact_alerts() -> None:
    """The recorded firing group becomes two firing Alerts with every field as documented."""
    parsed = run(fixture_bytes("alertmanager_firing.json"))
    assert parsed.rejected == []
    assert parsed.alerts == [
        recorded_alert("/dev/sdb1", "/var/lib/postgresql", "3.12", SDB_START, status=Status.FIRING, ends=None),
        recorded_alert("/dev/sda1", "/", "4.87", SDA_START, status=Status.FIRING, ends=None),
    ]


def test_resolved_payload_gives_resolved_alerts_with_end_times() -> None:
    """The recorded resolved group becomes two resolved Alerts whose ends_at is the resolve time."""
    parsed = run(fixture_bytes("alertmanager_resolved.json"))
    assert parsed.rejected == []
    assert parsed.alerts == [
        recorded_alert(
            "/dev/sdb1",
            "/var/lib/postgresql",
            "3.12",
            SDB_START,
            status=Status.RESOLVED,
            ends=datetime(2024, 5, 14, 10, 2, 45, 123000, tzinfo=UTC),
        ),
        recorded_alert(
            "/dev/sda1",
            "/",
            "4.87",
            SDA_START,
            status=Status.RESOLVED,
            ends=datetime(2024, 5, 14, 9, 58, 15, 123000, tzinfo=UTC),
        ),
    ]


def test_go_zero_end_time_means_still_open() -> None:
    """`endsAt: 0001-01-01T00:00:00Z` (Go's zero time) is None, never a date in year 1."""
    payload = group(alert(ends="0001-01-01T00:00:00Z"), alert(device="/dev/sdc", ends="2024-05-14T11:00:00Z"))
    first, second = run(payload).alerts
    assert first.ends_at is None
    assert second.ends_at == datetime(2024, 5, 14, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["alertmanager_firing.json", "alertmanager_resolved.json"])
def test_fingerprint_reproduces_the_recorded_fingerprints(name: str) -> None:
    """fingerprint(labels) equals the fingerprint Alertmanager itself computed and sent."""
    alerts = fixture_json(name)["alerts"]
    assert [fingerprint(a["labels"]) for a in alerts] == [a["fingerprint"] for a in alerts]


def test_fingerprint_of_no_labels_is_the_fnv_offset_basis() -> None:
    """An empty label set hashes to FNV-1a-64's offset basis, as in prometheus/common."""
    assert fingerprint({}) == "cbf29ce484222325"


def test_identity_is_computed_when_the_fingerprint_is_absent() -> None:
    """An alert without `fingerprint` gets the same identity Alertmanager would have sent."""
    payload = fixture_json("alertmanager_firing.json")
    for item in payload["alerts"]:
        del item["fingerprint"]
    assert [a.identity for a in run(payload).alerts] == ["6cba2cfc9fff8da5", "658cbc17d4762484"]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", Severity.CRITICAL),
        ("CRITICAL", Severity.CRITICAL),
        ("page", Severity.CRITICAL),
        ("emergency", Severity.CRITICAL),
        ("p1", Severity.CRITICAL),
        ("major", Severity.MAJOR),
        ("error", Severity.MAJOR),
        ("high", Severity.MAJOR),
        ("minor", Severity.MINOR),
        ("medium", Severity.MINOR),
        ("warning", Severity.WARNING),
        ("warn", Severity.WARNING),
        ("info", Severity.INFO),
        ("none", Severity.INFO),
        ("low", Severity.INFO),
        ("something-else", Severity.WARNING),
        (None, Severity.WARNING),
    ],
)
def test_severity_label_maps_to_the_unified_scale(label: str | None, expected: Severity) -> None:
    """The `severity` label maps per the documented table; unknown or missing falls back to warning."""
    item = alert(severity=label or "x")
    if label is None:
        del item["labels"]["severity"]
    assert run(group(item)).alerts[0].severity is expected


def test_fallbacks_for_summary_description_resource_and_links() -> None:
    """No summary: the alertname; `message` stands in for description; pod for instance; no empty links."""
    item = alert(instance="", pod="api-7f9c")
    item["annotations"] = {"message": "queue is stuck"}
    item["generatorURL"] = ""
    parsed = run(group(item)).alerts[0]
    assert (parsed.summary, parsed.description, parsed.resource, parsed.links) == (
        "NodeFilesystemAlmostOutOfSpace",
        "queue is stuck",
        "api-7f9c",
        [],
    )


def test_unknown_keys_are_ignored() -> None:
    """Keys newer Alertmanagers add (notification_reason, routeLabels, anything) change nothing."""
    plain = fixture_json("alertmanager_firing.json")
    extended = copy.deepcopy(plain)
    extended["notification_reason"] = "new alerts added"
    extended["routeLabels"] = {"team": "dba"}
    extended["someFutureKey"] = {"nested": [1, 2, 3]}
    for item in extended["alerts"]:
        item["someFutureKey"] = "x"
        item["silenceURL"] = "http://alertmanager.example.com:9093/#/silences/new"
    assert run(extended) == run(plain)
    assert len(run(extended).alerts) == 2


TRUNCATED = fixture_bytes("alertmanager_firing.json")[:300]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"version": "4", alerts: []}', "not valid JSON"),
        (TRUNCATED, "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'[{"version": "4", "alerts": []}]', "JSON object"),
        (b"null", "JSON object"),
        (b'{"version": "4", "alerts": {"0": {}}}', "alerts: Input should be a valid list"),
        (b'{"version": "4", "alerts": "none"}', "alerts: Input should be a valid list"),
        (b'{"version": "4"}', "alerts: Field required"),
        (b'{"version": "3", "alerts": []}', "version: expected '4'"),
        (b'{"version": "1", "orgId": 1, "alerts": []}', "version: expected '4'"),
        (b'{"version": 4, "alerts": []}', "version: Input should be a valid string"),
        (b'{"alerts": []}', "version: Field required"),
    ],
    ids=[
        "malformed",
        "truncated",
        "empty",
        "not-utf8",
        "array",
        "null",
        "alerts-object",
        "alerts-string",
        "alerts-missing",
        "version-3",
        "grafana-version",
        "version-number",
        "version-missing",
    ],
)
def test_unreadable_envelope_is_a_payload_error_naming_the_problem(body: bytes, problem: str) -> None:
    """An envelope that cannot be read is refused whole, with a message that says what is wrong."""
    with pytest.raises(PayloadError) as caught:
        run(body)
    assert problem in caught.value.detail
    assert caught.value.status == 400


def _without_starts(item: dict[str, Any]) -> dict[str, Any]:
    del item["startsAt"]
    return item


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (lambda a: {**a, "labels": "alertname=Disk"}, "alerts[1].labels: Input should be a valid dictionary"),
        (lambda a: {**a, "labels": {"alertname": "Disk", "code": 500}}, "alerts[1].labels.code:"),
        (lambda a: {**a, "status": "weird"}, "alerts[1].status:"),
        (lambda a: {**a, "status": None}, "alerts[1].status:"),
        (_without_starts, "alerts[1].startsAt: Field required"),
        (lambda a: {**a, "startsAt": "yesterday"}, "alerts[1].startsAt:"),
        (lambda a: {**a, "endsAt": 12.5e300}, "alerts[1].endsAt:"),
        (lambda a: {**a, "annotations": ["summary"]}, "alerts[1].annotations:"),
        (lambda a: 42, "alerts[1]: Input should be a valid dictionary"),
    ],
    ids=[
        "labels-string",
        "label-number",
        "status-weird",
        "status-null",
        "startsAt-missing",
        "startsAt-junk",
        "endsAt-huge",
        "annotations-list",
        "alert-number",
    ],
)
def test_one_bad_alert_is_rejected_and_the_others_parsed(spoil: Any, where: str) -> None:
    """A sound envelope with one bad alert: that alert rejected with its path, the rest accepted."""
    bad = spoil(alert(device="/dev/bad"))
    payload = group(alert(device="/dev/sda1"), bad, alert(device="/dev/sdc1"))
    parsed = run(payload)
    assert [a.labels["device"] for a in parsed.alerts] == ["/dev/sda1", "/dev/sdc1"]
    assert len(parsed.rejected) == 1
    assert parsed.rejected[0].reason.startswith(where), parsed.rejected[0].reason
    assert parsed.rejected[0].raw == bad


def test_an_envelope_with_no_alerts_parses_to_nothing() -> None:
    """`alerts: []` is a sound, empty group: nothing accepted, nothing rejected, no error."""
    assert run(group()) == Parsed()


def test_alerts_survive_the_json_round_trip_the_intake_stream_uses() -> None:
    """model_dump_json -> model_validate_json gives back the same Alert (what ingress and engine do)."""
    for parsed in run(fixture_bytes("alertmanager_resolved.json")).alerts:
        assert Alert.model_validate_json(parsed.model_dump_json()) == parsed
