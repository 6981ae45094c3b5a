"""The Opsgenie Alert API parser: creates, and the calls on an alias made from what the door kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sources.opsgenie import ACTIONS, ADAPTER
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, FollowUpKind, Severity, Status
from bridge.core.source import ParseContext, Parsed
from tests.adapters.sources.test_registry import JSON
from tests.conftest import FIXTURES, fixture_bytes

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
LATER = RECEIVED + timedelta(minutes=3)


def run(body: bytes | dict[str, Any], at: datetime = RECEIVED, /, **params: str) -> Parsed:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    ctx = ParseContext(source="og", received_at=at, params=params)
    return ADAPTER.parse(data, "application/json", {}, ctx)


def one(body: bytes | dict[str, Any], at: datetime = RECEIVED, /, **params: str) -> Alert:
    [alert] = run(body, at, **params).alerts
    return alert


def created(**fields: Any) -> Alert:
    return one({"message": "Disk full on db-1", "alias": "disk-db-1", **fields}, action="create")


def test_alertmanager_create_reads_alias_message_details_and_severity() -> None:
    """Alertmanager's recorded create: the alias is the identity, its common labels (details) are labels."""
    alert = one(fixture_bytes("opsgenie_create.json"), action="create")
    assert alert.identity == "039121f9ba4fcd03f93e1d7dfaddd658b1061549ba69d28e048a7f44441d31b1"
    assert alert.kind == "opsgenie" and alert.source == "og"
    assert alert.summary == "[FIRING:1] HostDown web-01:9100 (node critical)"
    assert alert.name == "HostDown"  # the alertname detail; the message where there is none
    assert alert.labels["alertname"] == "HostDown" and alert.labels["instance"] == "web-01:9100"
    assert alert.resource == "web-01:9100"
    # no priority: the `severity` detail decides (critical -> P1)
    assert alert.severity is Severity.CRITICAL and alert.labels["priority"] == "P1"
    assert alert.status is Status.FIRING and alert.starts_at is None
    assert alert.raw["opsgenie_source"] == "http://alertmanager:9093/#/alerts?receiver=og"


@pytest.mark.parametrize(
    ("priority", "severity"),
    [("P1", Severity.CRITICAL), ("p2", Severity.MAJOR), ("P3", Severity.MINOR), ("P4", Severity.WARNING),
     ("P5", Severity.INFO), (None, Severity.MINOR)],
)  # fmt: skip
def test_priorities_map_one_to_one_and_p3_is_the_default(priority: str | None, severity: Severity) -> None:
    """P1..P5 are critical..info; a create without priority or severity detail is P3, Opsgenie's default."""
    alert = created(**({"priority": priority} if priority else {}))
    assert alert.severity is severity
    assert alert.labels["priority"] == (priority or "P3").upper()


def test_create_fields_tags_entity_and_note() -> None:
    """Entity is the resource, key:value tags become labels, the note joins the description."""
    alert = created(
        description="used 100%", entity="db-1", tags=["team:dba", "prod", "team:other"], note="paged by cron",
        details={"region": "eu", "count": 3, "ok": True}, user="cron", source="Zabbix",
    )  # fmt: skip
    assert alert.resource == "db-1" and alert.labels["entity"] == "db-1"
    assert alert.labels["team"] == "dba" and alert.labels["tags"] == "team:dba,prod,team:other"
    assert alert.labels["region"] == "eu" and alert.labels["count"] == "3" and alert.labels["ok"] == "true"
    assert alert.description == "used 100%\n\nNote: paged by cron"
    assert alert.raw["user"] == "cron" and alert.raw["opsgenie_source"] == "Zabbix"


def test_create_without_alias_is_keyed_by_its_message_and_values_are_cut_to_opsgenies_limits() -> None:
    """No alias: the message is the identity; a message past 130 characters is cut, as Opsgenie cuts it."""
    alert = one({"message": "x" * 200, "tags": ["t" * 80]}, action="create")
    assert alert.identity == alert.name == "x" * 130
    assert alert.labels["tags"] == "t" * 50


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "message: Message can not be empty."),
        ({"message": "  "}, "message: Message can not be empty."),
        ({"message": 5}, "message: expected a string"),
        ({"message": "m", "priority": "P9"}, "priority: Priority should be one of"),
        ({"message": "m", "tags": "a,b"}, "tags: expected a list of strings"),
        ({"message": "m", "details": {"a": {"b": 1}}}, "details.a: expected a string"),
        ([1, 2], "body: expected a JSON object"),
    ],
)
def test_unprocessable_creates_name_the_field(body: Any, problem: str) -> None:
    """What Opsgenie answers 422 for is a PayloadError naming the field, in Opsgenie's words where it has them."""
    with pytest.raises(PayloadError, match=problem.replace("[", r"\[")):
        run(body, action="create")


def test_body_posted_to_the_webhook_path_is_a_create() -> None:
    """Without the door's params the body is a create (what /webhook/<source> takes)."""
    alert = one({"message": "m", "alias": "a"})
    assert alert.identity == "a" and alert.status is Status.FIRING


def kept(alert: Alert, status: str = "firing") -> dict[str, str]:
    return {"previous": alert.model_dump_json(), "status": status}


def test_close_resolves_the_alert_the_door_kept() -> None:
    """A close carries only the alias: the alert is the kept create, resolved, with its labels for routing."""
    first = created(tags=["team:dba"])
    closed = one({"source": "x", "user": "ann", "note": "fixed"}, LATER, action="close", **kept(first))
    assert closed.identity == first.identity and closed.labels == first.labels
    assert closed.status is Status.RESOLVED and closed.ends_at == LATER and closed.received_at == LATER
    assert closed.raw["user"] == "ann" and closed.raw["note"] == "fixed"


def test_acknowledge_and_note_become_follow_ups() -> None:
    """An acknowledgement and a note are follow-ups by their user, each told apart by when it came."""
    first = created()
    ack = one({"user": "ann", "note": "on it"}, LATER, action="acknowledge", **kept(first))
    assert ack.status is Status.ACKNOWLEDGED
    assert ack.event is not None and ack.event.kind is FollowUpKind.ACKNOWLEDGEMENT
    assert ack.event.text() == "Acknowledged by ann: on it" and ack.event.at == LATER
    note = one({"user": "bob", "note": "disk swapped"}, LATER, action="notes", **kept(first, "acknowledged"))
    assert note.status is Status.ACKNOWLEDGED  # a note keeps the alert's status
    assert note.event is not None and note.event.text() == "Comment by bob: disk swapped"
    with pytest.raises(PayloadError, match="note: Note can not be empty"):
        run({"user": "bob"}, LATER, action="notes", **kept(first))


def test_unacknowledge_is_a_comment_and_the_alert_fires_again() -> None:
    """Unacknowledge: a comment saying so; the alert is firing again."""
    alert = one({"user": "ann"}, LATER, action="unacknowledge", **kept(created(), "acknowledged"))
    assert alert.status is Status.FIRING
    assert alert.event is not None and alert.event.text() == "Comment by ann: unacknowledged"


def test_updates_change_summary_description_and_severity() -> None:
    """PUT message, description, priority: the kept alert with that field changed."""
    first = created(priority="P3")
    assert one({"message": "Disk 99%"}, action="message", **kept(first)).summary == "Disk 99%"
    assert one({"description": "d2"}, action="description", **kept(first)).description == "d2"
    raised = one({"priority": "P1"}, action="priority", **kept(first))
    assert raised.severity is Severity.CRITICAL and raised.labels["priority"] == "P1"


def test_a_repeated_create_keeps_the_alerts_status() -> None:
    """A create while the alert is open (Opsgenie deduplicates it) keeps an acknowledgement."""
    first = created()
    again = one(
        {"message": "Disk full on db-1", "alias": "disk-db-1"}, LATER, action="create", **kept(first, "acknowledged")
    )
    assert again.status is Status.ACKNOWLEDGED
    after_close = one({"message": "m", "alias": "disk-db-1"}, LATER, action="create", **kept(first, "resolved"))
    assert after_close.status is Status.FIRING


@pytest.mark.parametrize("action", ["close", "acknowledge", "notes", "message"])
def test_calls_on_unknown_or_closed_aliases_give_nothing(action: str) -> None:
    """Nothing kept for the alias, or the alert closed: no alert (the door says so in the request's status)."""
    body = {"note": "n", "message": "m"}
    assert run(body, action=action).alerts == []
    assert run(body, action=action, **kept(created(), "resolved")).alerts == []


def test_genie_key_authenticates() -> None:
    """`Authorization: GenieKey <key>` (or Bearer) with the source's secret; anything else is a 401."""
    assert ADAPTER.verify is not None
    ADAPTER.verify(b"", {"Authorization": "GenieKey k3y"}, {}, "k3y", RECEIVED)
    ADAPTER.verify(b"", {"Authorization": "Bearer k3y"}, {}, "k3y", RECEIVED)
    for header in ("GenieKey other", "Basic k3y", "GenieKey", ""):
        with pytest.raises(AuthError):
            ADAPTER.verify(b"", {"Authorization": header}, {}, "k3y", RECEIVED)


def test_recorded_exchange_is_what_the_fixture_holds() -> None:
    """The recorded Alertmanager exchange: a create then a close by alias, with a GenieKey."""
    calls = [orjson.loads(line) for line in (FIXTURES / "opsgenie_alertmanager.jsonl").read_bytes().splitlines()]
    assert [c["path"].split("?")[0].rsplit("/", 1)[-1] for c in calls] == ["alerts", "close"]
    assert calls[1]["path"].endswith("?identifierType=alias")
    assert calls[1]["path"].split("/")[-2] == calls[0]["body"]["alias"]
    assert all(c["headers"]["Authorization"].startswith("GenieKey ") for c in calls)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.sampled_from(ACTIONS), doc=JSON, status=st.sampled_from(["firing", "acknowledged", "resolved", "x"]))
def test_random_json_in_any_action_gives_only_payload_errors(action: str, doc: Any, status: str) -> None:
    """Random JSON into any action, with or without a kept alert, gives Parsed or PayloadError only."""
    params = {"action": action, **kept(created(), status)}
    try:
        result = run(orjson.dumps(doc), **params)
    except PayloadError:
        return
    assert isinstance(result, Parsed) and len(result.alerts) <= 1
