"""Grafana unified alerting webhook: recorded payloads, bad envelopes, bad alerts, HMAC signatures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import grafana
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Severity, Status
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
SECRET = "change-me-shared-secret"
SIGNATURE = "258d62f9c3eff30ca21de4afa50eb6c9ee9ece828a4658dcdf46b059901c4fb8"
STAMP, STAMPED_SIGNATURE = "1715678420", "941d569eecb45acc237c2f1682841618c01266401533fd1a8b1540642b62d0c2"
LENIENT = grafana.GrafanaOptions(require_signature=False, require_timestamp=False)  # what a site may opt into
GRAFANA = "https://grafana.example.com"
DASHBOARD = f"{GRAFANA}/d/rYdddlPWk/node-exporter-full?from=1715674810000&orgId=1&to=1715678410000"


def ctx(**options: Any) -> ParseContext:
    return ParseContext(source="grafana-prod", received_at=RECEIVED, options=options)


def parse(body: bytes) -> Any:
    return grafana.parse(body, "application/json", {}, ctx())


def firing() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / "grafana_firing.json").read_bytes())
    return doc


COMMON = {
    "source": "grafana-prod",
    "kind": "grafana",
    "identity": "59ef5e59460f7497",
    "name": "HighCPUUsage",
    "resource": "web-01.example.com:9100",
    "severity": Severity.CRITICAL,
    "summary": "High CPU usage on web-01.example.com:9100",
    "description": ("CPU usage on web-01.example.com:9100 has been above 90% for 5 minutes (current value: 97.31%)."),
    "starts_at": datetime(2024, 5, 14, 9, 20, 10, tzinfo=UTC),
    "links": [
        f"{GRAFANA}/alerting/grafana/ddlv3kq0s1tdsa/view?orgId=1",
        DASHBOARD,
        f"{DASHBOARD}&viewPanel=3",
        "https://wiki.example.com/runbooks/high-cpu",
    ],
    "received_at": RECEIVED,
}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("grafana_firing.json", {**COMMON, "status": Status.FIRING, "ends_at": None}),
        (
            "grafana_resolved.json",
            {**COMMON, "status": Status.RESOLVED, "ends_at": datetime(2024, 5, 14, 9, 45, 10, tzinfo=UTC)},
        ),
    ],
)
def test_recorded_payloads(fixture: str, expected: dict[str, Any]) -> None:
    """Each recorded Grafana payload gives exactly one Alert with these fields."""
    parsed = parse((FIXTURES / fixture).read_bytes())
    assert parsed.rejected == []
    [alert] = parsed.alerts
    assert {key: getattr(alert, key) for key in expected} == expected
    assert alert.labels["grafana_folder"] == "Infrastructure"
    assert alert.raw["ruleUID"] == "ddlv3kq0s1tdsa"
    assert alert.raw["values"] == {"A": 97.31, "C": 1.0}


def test_unknown_fields_are_ignored() -> None:
    """Keys Grafana may add later, in the envelope or an alert, change nothing."""
    doc = firing()
    doc["enrichments"] = {"x": 1}
    doc["alerts"][0]["newField"] = ["y"]
    assert parse(orjson.dumps(doc)).alerts == parse((FIXTURES / "grafana_firing.json").read_bytes()).alerts


def test_bad_alert_is_rejected_and_the_rest_parse() -> None:
    """A sound envelope with one bad alert: that alert is a dead letter naming its field, the other parses."""
    doc = firing()
    bad = dict(doc["alerts"][0], status="pending")
    doc["alerts"].append(bad)
    doc["alerts"].append("not an alert")
    parsed = parse(orjson.dumps(doc))
    assert [alert.identity for alert in parsed.alerts] == ["59ef5e59460f7497"]
    assert [r.reason.split(":")[0] for r in parsed.rejected] == ["alerts[1]", "alerts[2]"]
    assert "status" in parsed.rejected[0].reason
    assert parsed.rejected[0].raw == bad


def test_deep_alert_is_rejected_alone() -> None:
    """An alert nested too deep is rejected by the depth guard; the envelope still parses."""
    doc = firing()
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    doc["alerts"].append(dict(doc["alerts"][0], labels=deep))
    parsed = parse(orjson.dumps(doc))
    assert len(parsed.alerts) == 1
    assert "nested deeper than" in parsed.rejected[0].reason


def test_missing_fingerprint_falls_back_to_label_hash() -> None:
    """A custom payload without `fingerprint` gets Alertmanager's label fingerprint as identity."""
    doc = firing()
    del doc["alerts"][0]["fingerprint"]
    [alert] = parse(orjson.dumps(doc)).alerts
    assert alert.identity == grafana.fingerprint(alert.labels)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[]", "JSON object"),
        (orjson.dumps({"version": "4", "alerts": []}), "version: expected '1'"),
        (orjson.dumps({"version": "1", "alerts": {}}), "alerts"),
        (orjson.dumps({"version": 1, "alerts": []}), "version"),
        (orjson.dumps({"ruleId": 1, "state": "alerting"}), "legacy"),
        (orjson.dumps({"version": "1", "alerts": [], "title": "x" * 70_000}), "body.title: text of 70000"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
    ],
)
def test_unreadable_envelope_is_a_payload_error(body: bytes, message: str) -> None:
    """An envelope that cannot be read is refused whole, with a message naming the problem."""
    with pytest.raises(PayloadError, match=message):
        parse(body)


def test_signature_without_timestamp_is_accepted_only_when_timestamps_are_not_required() -> None:
    """hex(HMAC-SHA256(secret, body)) alone authenticates with require_timestamp off; by default it is refused."""
    body = (FIXTURES / "grafana_firing.json").read_bytes()
    grafana.verify(body, {"X-Grafana-Alerting-Signature": SIGNATURE}, {}, SECRET, RECEIVED, options=LENIENT)
    with pytest.raises(AuthError, match="requires signed timestamps"):
        grafana.verify(body, {"X-Grafana-Alerting-Signature": SIGNATURE}, {}, SECRET, RECEIVED)


def test_signature_with_timestamp_inside_window_is_accepted() -> None:
    """A timestamped signature within the replay window authenticates, headers matched case-insensitively."""
    body = (FIXTURES / "grafana_firing.json").read_bytes()
    headers = {"x-grafana-alerting-timestamp": STAMP, "x-grafana-alerting-signature": STAMPED_SIGNATURE}
    grafana.verify(body, headers, {}, SECRET, datetime.fromtimestamp(int(STAMP) + 299, UTC))


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"X-Grafana-Alerting-Signature": SIGNATURE}, b"{}", "does not match"),
        ({"X-Grafana-Alerting-Signature": "00" * 32}, None, "does not match"),
        ({"X-Grafana-Alerting-Signature": "é"}, None, "does not match"),
        ({}, None, "missing X-Grafana-Alerting-Signature"),
        ({"Authorization": "Bearer wrong"}, None, "does not match"),
        ({"X-Grafana-Alerting-Timestamp": STAMP, "X-Grafana-Alerting-Signature": SIGNATURE}, None, "match"),
        (
            {"X-Grafana-Alerting-Timestamp": "soon", "X-Grafana-Alerting-Signature": STAMPED_SIGNATURE},
            None,
            "Unix",
        ),
        (
            {"X-Grafana-Alerting-Timestamp": "١٢", "X-Grafana-Alerting-Signature": STAMPED_SIGNATURE},
            None,
            "Unix",
        ),
    ],
)
def test_bad_or_missing_signature_is_an_auth_error(headers: dict[str, str], body: bytes | None, message: str) -> None:
    """A wrong signature, a tampered body, a bad timestamp or no credentials at all: AuthError."""
    payload = body if body is not None else (FIXTURES / "grafana_firing.json").read_bytes()
    with pytest.raises(AuthError, match=message):
        grafana.verify(payload, headers, {}, SECRET, datetime.fromtimestamp(int(STAMP), UTC), options=LENIENT)


def test_signature_outside_replay_window_is_an_auth_error() -> None:
    """A correctly signed but old (or future) timestamp is refused: the request may be a replay."""
    body = (FIXTURES / "grafana_firing.json").read_bytes()
    headers = {"X-Grafana-Alerting-Timestamp": STAMP, "X-Grafana-Alerting-Signature": STAMPED_SIGNATURE}
    for skew in (301, -301):
        with pytest.raises(AuthError, match="replay window"):
            grafana.verify(body, headers, {}, SECRET, datetime.fromtimestamp(int(STAMP) + skew, UTC))


def test_bearer_token_is_accepted_without_signature_only_when_signatures_are_not_required() -> None:
    """`Authorization: Bearer <secret>` alone passes with require_signature off; by default it is refused."""
    grafana.verify(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED, options=LENIENT)
    with pytest.raises(AuthError, match="missing X-Grafana-Alerting-Signature"):
        grafana.verify(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED)


def test_only_a_signed_timestamp_gives_a_replay_nonce() -> None:
    """The nonce is the signature, kept twice the replay window; without a timestamp there is none."""
    stamped = {"X-Grafana-Alerting-Timestamp": STAMP, "X-Grafana-Alerting-Signature": STAMPED_SIGNATURE.upper()}
    assert grafana.replayed(stamped) == (STAMPED_SIGNATURE, 600.0)
    assert grafana.replayed({"X-Grafana-Alerting-Signature": SIGNATURE}) is None
    replay = grafana.configured({"replay_window": 60}).replay
    assert replay is not None and replay(stamped) == (STAMPED_SIGNATURE, 120.0)


def test_configured_options_bind_into_verify() -> None:
    """configured() binds the source's replay window, header names and require_* switches into verify."""
    body = (FIXTURES / "grafana_firing.json").read_bytes()
    headers = {"X-Stamp": STAMP, "X-Sig": STAMPED_SIGNATURE}
    options = {"signature_header": "X-Sig", "timestamp_header": "X-Stamp", "replay_window": 3600}
    verify = grafana.configured(options).verify
    assert verify is not None
    verify(body, headers, {}, SECRET, datetime.fromtimestamp(int(STAMP) + 3000, UTC))
    strict = grafana.configured({"require_timestamp": False}).verify
    assert strict is not None
    with pytest.raises(AuthError, match="missing X-Grafana-Alerting-Signature"):
        strict(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED)
    strict(body, {"X-Grafana-Alerting-Signature": SIGNATURE}, {}, SECRET, RECEIVED)
    needs_stamp = grafana.configured({"require_signature": False}).verify
    assert needs_stamp is not None
    with pytest.raises(AuthError, match="requires signed timestamps"):
        needs_stamp(body, {"X-Grafana-Alerting-Signature": SIGNATURE}, {}, SECRET, RECEIVED)
    needs_stamp(b"{}", {"Authorization": f"Bearer {SECRET}"}, {}, SECRET, RECEIVED)


def test_options_model_forbids_unknown_keys() -> None:
    """A typo in the options is caught at start-up, not ignored."""
    with pytest.raises(ValidationError):
        grafana.GrafanaOptions.model_validate({"replay_windw": 60})
    with pytest.raises(ValidationError):
        grafana.GrafanaOptions.model_validate({"replay_window": 0})
