"""Splunk Enterprise webhook alert action: recorded payload, identity from result fields, URL token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adapters.sources import splunk
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status, stable_hash
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
SEARCH = "Windows - Service Stopped"


def recorded() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / "splunk_webhook.json").read_bytes())
    return doc


def parse(doc: dict[str, Any] | bytes, **options: Any) -> Alert:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    parsed = splunk.parse(body, "application/json", {}, ParseContext("splunk", RECEIVED, options))
    [alert] = parsed.alerts
    return alert


def with_result(**fields: Any) -> dict[str, Any]:
    doc = recorded()
    doc["result"] = {**doc["result"], **fields}
    return doc


def test_recorded_payload() -> None:
    """The recorded Splunk webhook gives one firing Alert: search name, host, result fields as labels."""
    alert = parse((FIXTURES / "splunk_webhook.json").read_bytes())
    expected = {
        "kind": "splunk",
        "identity": stable_hash(["splunk", SEARCH, [["host", "WIN-APP-07"]]]),
        "name": SEARCH,
        "resource": "WIN-APP-07",
        "severity": Severity.MAJOR,
        "status": Status.FIRING,
        "summary": "Windows - Service Stopped on WIN-APP-07",
        "starts_at": None,
        "ends_at": None,
        "links": [recorded()["results_link"]],
    }
    assert {key: getattr(alert, key) for key in expected} == expected
    assert alert.description.startswith("05/14/2024 11:14:02 AM\nLogName=System")
    assert alert.labels["Name"] == "MSSQLSERVER"
    assert alert.labels["search_name"] == SEARCH
    assert "_raw" not in alert.labels and "_si" not in alert.labels
    assert alert.raw == {
        "sid": recorded()["sid"],
        "app": "search",
        "owner": "admin",
        "result_time": "1715678042",
    }


def test_identity_is_search_plus_configured_fields() -> None:
    """identity_fields picks the result fields that tell problems apart; other fields do not matter."""
    one = parse(recorded(), identity_fields=["host", "Name"])
    other_service = parse(with_result(Name="W3SVC"), identity_fields=["host", "Name"])
    same_problem_later = parse(with_result(count="9", _time="1715679999"), identity_fields=["host", "Name"])
    assert one.identity == same_problem_later.identity
    assert one.identity != other_service.identity


def test_alert_key_is_used_when_the_search_computes_one() -> None:
    """The default identity uses `alert_key` (and host) when the search evaluates them."""
    assert parse(with_result(alert_key="a")).identity != parse(with_result(alert_key="b")).identity


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ("critical", Severity.CRITICAL),
        ("6", Severity.CRITICAL),
        ("high", Severity.MAJOR),
        ("4", Severity.MAJOR),
        ("medium", Severity.MINOR),
        ("low", Severity.WARNING),
        ("3", Severity.WARNING),
        ("info", Severity.INFO),
        ("whatever", Severity.WARNING),
    ],
)
def test_severity_from_result_field(value: str, severity: Severity) -> None:
    """The search's own severity field maps by Splunk's names and numbers; unknown is warning."""
    assert parse(with_result(severity=value)).severity is severity


def test_options_pick_fields_and_override_severities() -> None:
    """resource_field, severity_field, summary_field and severities are honoured."""
    doc = with_result(node="sql-01", prio="p0", text="MSSQL stopped on sql-01")
    options = {
        "resource_field": "node",
        "severity_field": "prio",
        "summary_field": "text",
        "severities": {"P0": "critical"},
    }
    alert = parse(doc, **options)
    assert (alert.resource, alert.severity, alert.summary) == (
        "sql-01",
        Severity.CRITICAL,
        "MSSQL stopped on sql-01",
    )


def test_unknown_fields_are_ignored() -> None:
    """Extra top-level keys (other add-ons) change nothing."""
    assert parse(dict(recorded(), extra={"a": 1}, user_agent="x")) == parse(recorded())


def test_multivalue_fields_are_joined() -> None:
    """Multivalue result fields (JSON arrays) become comma-joined text."""
    assert parse(with_result(dest=["a", "b"])).labels["dest"] == "a,b"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xc3\x28", "not valid UTF-8"),
        (b'"text"', "JSON object"),
        (orjson.dumps(dict(recorded(), search_name=None)), "search_name is empty"),
        (orjson.dumps(dict(recorded(), result=["a"])), "result"),
        (orjson.dumps(dict(recorded(), sid=12)), "sid"),
        (orjson.dumps(with_result(_raw="x" * 70_000)), "result._raw: text of 70000"),
    ],
)
def test_malformed_payload_is_a_payload_error(body: bytes, message: str) -> None:
    """Malformed or wrong-typed payloads give a PayloadError naming the problem."""
    with pytest.raises(PayloadError, match=message):
        splunk.parse(body, "application/json", {}, ParseContext("splunk", RECEIVED))


def test_url_token_authenticates() -> None:
    """The ?token= query parameter equal to the secret authenticates the request."""
    splunk.verify(b"{}", {}, {"token": "s3cret"}, "s3cret", RECEIVED)


@pytest.mark.parametrize(
    ("query", "headers", "message"),
    [
        ({}, {}, "missing \\?token="),
        ({"token": ""}, {}, "missing \\?token="),
        ({"token": "wrong"}, {}, "does not match"),
        ({"token": "s3crét"}, {}, "does not match"),
        ({}, {"Authorization": "Bearer s3cret"}, "missing \\?token="),
    ],
)
def test_missing_or_wrong_token_is_an_auth_error(query: dict[str, str], headers: dict[str, str], message: str) -> None:
    """No token, an empty or a wrong token is refused; a header is not a substitute for the URL token."""
    with pytest.raises(AuthError, match=message):
        splunk.verify(b"{}", headers, query, "s3cret", RECEIVED)


def test_options_model_forbids_unknown_keys() -> None:
    """SplunkOptions rejects a misspelt key."""
    with pytest.raises(ValidationError):
        splunk.SplunkOptions.model_validate({"identity_field": ["host"]})
