"""The source registry and every parser's contract: registered kinds, strict options, only PayloadError."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.errors import ConfigError, PayloadError
from bridge.core.plugins import configured, sources
from bridge.core.source import ParseContext, Parsed
from tests.conftest import FIXTURES

SOURCES = sources()


RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
KINDS = [
    "alertmanager", "grafana", "nagios", "icinga2", "splunk", "signalfx", "solarwinds", "zabbix", "datadog", "opsgenie",
    "puppet",
]  # fmt: skip
OPTIONS: dict[str, dict[str, Any]] = {"generic": {"alerts": "alerts", "name": "name", "status": "status"}}
ALL_KINDS = [*KINDS, "generic"]
RECORDED = sorted(path for path in FIXTURES.iterdir() if path.suffix in (".json", ".form"))
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # JSON cannot carry lone surrogates
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)


def run(kind: str, body: bytes, content_type: str = "application/json") -> Parsed | PayloadError:
    ctx = ParseContext(source=f"{kind}-1", received_at=RECEIVED, options=OPTIONS.get(kind, {}))
    try:
        return SOURCES[kind].parse(body, content_type, {}, ctx)
    except PayloadError as exc:
        return exc


def test_every_kind_is_registered_under_its_own_name() -> None:
    """Each kind of the issue is in SOURCES, and each adapter says which kind it is."""
    assert sorted(SOURCES) == sorted(ALL_KINDS)
    assert all(adapter.kind == kind for kind, adapter in SOURCES.items())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_options_models_forbid_unknown_keys(kind: str) -> None:
    """Every kind that takes options validates them with a model that refuses unknown keys."""
    model = SOURCES[kind].options
    if model is None:
        assert kind in ("alertmanager", "datadog", "opsgenie")
        return
    model.model_validate(OPTIONS.get(kind, {}))
    with pytest.raises(ValueError, match="bogus"):
        model.model_validate({**OPTIONS.get(kind, {}), "bogus": 1})


def test_configured_validates_options() -> None:
    """configured() accepts good options, and names the kind when options are bad or not taken."""
    assert configured("nagios", {"severities": {"UNKNOWN": "warning"}}).kind == "nagios"
    assert configured("datadog", {}) is SOURCES["datadog"]
    with pytest.raises(ConfigError, match="'zabbix'"):
        configured("zabbix", {"timezone": "Nowhere/Land"})
    with pytest.raises(ConfigError, match="takes no options"):
        configured("datadog", {"x": 1})


@pytest.mark.parametrize("kind", ["nagios", "icinga2", "solarwinds", "zabbix", "datadog"])
def test_template_senders_accept_forms_and_text(kind: str) -> None:
    """Tools whose body is a user template may post JSON, form fields or text/plain."""
    assert {"application/json", "application/x-www-form-urlencoded", "text/plain"} <= SOURCES[kind].content_types


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.name)
def test_recorded_payloads_parse_only_in_their_own_kind(path: Path) -> None:
    """A recorded payload gives alerts in its own kind, and no exception other than PayloadError in any kind."""
    own = "datadog" if path.stem == "datadog" else path.stem.split("_")[0]
    for kind in ALL_KINDS:
        result = run(kind, path.read_bytes())
        if kind == own:
            assert isinstance(result, Parsed) and result.alerts and not result.rejected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(ALL_KINDS), body=st.binary(max_size=300), form=st.booleans())
def test_random_bytes_give_only_payload_errors(kind: str, body: bytes, form: bool) -> None:
    """Random bytes into any parser give Parsed or PayloadError, never another exception."""
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    assert isinstance(run(kind, body, content_type), Parsed | PayloadError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(ALL_KINDS), doc=JSON)
def test_random_json_gives_only_payload_errors(kind: str, doc: Any) -> None:
    """Random JSON documents into any parser give Parsed or PayloadError, never another exception."""
    assert isinstance(run(kind, orjson.dumps(doc)), Parsed | PayloadError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(RECORDED),
    at=st.integers(min_value=0, max_value=4000),
    junk=st.binary(min_size=1, max_size=8) | st.sampled_from([b'"', b"\\", b"\n", b"\x00", b"\xff", b"{", b"}"]),
    replace=st.booleans(),
)
def test_damaged_recordings_give_only_payload_errors(path: Path, at: int, junk: bytes, replace: bool) -> None:
    """A recorded payload with bytes inserted or overwritten (quotes, backslashes, NUL, bad UTF-8) never crashes."""
    body = path.read_bytes()
    at %= len(body)
    damaged = body[:at] + junk + body[at + (len(junk) if replace else 0) :]
    for kind in ALL_KINDS:
        assert isinstance(run(kind, damaged), Parsed | PayloadError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(ALL_KINDS), fields=st.dictionaries(TEXT, JSON, max_size=12))
def test_random_flat_records_give_only_payload_errors(kind: str, fields: dict[str, Any]) -> None:
    """Objects with random keys and values (the shape template senders post) never crash a parser."""
    names = ["notification_type", "host_name", "alert_name", "alert_object_id", "event_id", "alert_id"]
    doc = {**dict.fromkeys(names, "x"), **fields}
    assert isinstance(run(kind, orjson.dumps(doc)), Parsed | PayloadError)
