"""Every desk's `parse_events` on random and damaged bodies: a list of DeskEvents or a PayloadError, never
another exception (the body comes from the network; bridge.core.sync)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge.core.config import DeskConfig
from bridge.core.errors import PayloadError
from bridge.core.sync import DeskEvent, DeskEvents
from tests.adapters.desks.variants import JIRA_CLOUD, JIRA_DATACENTER, JSM, JSM_OPS, REMEDY, SERVICENOW_BASIC, WEBHOOK

FIXTURES = Path(__file__).parents[2] / "fixtures" / "desks"
DESKS: TypeAdapter[Any] = TypeAdapter(DeskConfig)
URL = "http://127.0.0.1:9"


def desk(variant: Any) -> DeskEvents:
    # parse_events never sends: no session is needed to read a body.
    return cast(DeskEvents, DESKS.validate_python(variant.config(URL)).build("desk", cast(Any, None)))


PARSERS = {
    "servicenow": (desk(SERVICENOW_BASIC), sorted(FIXTURES.glob("servicenow_*.json"))),
    "jira-cloud": (desk(JIRA_CLOUD), sorted(FIXTURES.glob("jira_cloud_*.json"))),
    "jira-datacenter": (desk(JIRA_DATACENTER), sorted(FIXTURES.glob("jira_dc_*.json"))),
    "jsm": (desk(JSM), sorted(FIXTURES.glob("jsm_*.json"))),
    "jsm-ops": (desk(JSM_OPS), sorted(FIXTURES.glob("jsmops_*.json"))),
    "webhook": (desk(WEBHOOK), sorted(FIXTURES.glob("webhook_*.json"))),
    "remedy": (desk(REMEDY), []),
}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def outcome(parser: DeskEvents, body: bytes) -> None:
    try:
        events = parser.parse_events(body, {"Content-Type": "application/json"})
    except PayloadError as exc:
        assert str(exc)
        return
    assert isinstance(events, list) and all(isinstance(e, DeskEvent) for e in events)
    for event in events:
        assert isinstance(event.at_ms, int) and event.event_id and event.ticket.id


def damaged(document: Any, path: list[Any], value: Any, drop: bool) -> Any:
    """`document` with the node at `path` (as far as it goes) replaced by `value`, or removed."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    if isinstance(document, dict):
        key = sorted(document)[path[0] % len(document)]
        copy = dict(document)
        if drop and len(path) == 1:
            del copy[key]
        else:
            copy[key] = damaged(document[key], path[1:], value, drop)
        return copy
    index = path[0] % len(document)
    items = list(document)
    items[index] = damaged(items[index], path[1:], value, drop)
    return items


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_random_bytes(name: str, body: bytes) -> None:
    outcome(PARSERS[name][0], body)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_random_json(name: str, value: Any) -> None:
    try:
        body = orjson.dumps(value)
    except TypeError:
        return
    outcome(PARSERS[name][0], body)


@pytest.mark.parametrize("name", [n for n in sorted(PARSERS) if PARSERS[n][1]])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    value=json_values,
    drop=st.booleans(),
)
def test_damaged_recorded_bodies(name: str, which: int, path: list[int], value: Any, drop: bool) -> None:
    parser, files = PARSERS[name]
    document = orjson.loads(files[which % len(files)].read_bytes())
    try:
        body = orjson.dumps(damaged(document, path, value, drop))
    except TypeError:
        return
    outcome(parser, body)


@pytest.mark.parametrize("name", [n for n in sorted(PARSERS) if PARSERS[n][1]])
def test_the_recorded_bodies_parse(name: str) -> None:
    parser, files = PARSERS[name]
    for path in files:
        assert parser.parse_events(path.read_bytes(), {}), path.name


adf_nodes = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "hardBreak", "paragraph"]), "text": json_values}),
    lambda inner: st.fixed_dictionaries({"type": st.just("paragraph"), "content": st.lists(inner | json_values)}),
    max_leaves=10,
)


@pytest.mark.parametrize("name", ["jira-cloud", "jsm"])
@settings(max_examples=150, deadline=None)
@given(document=st.fixed_dictionaries({"type": st.just("doc"), "content": st.lists(adf_nodes | json_values)}))
def test_comments_in_any_rich_text(name: str, document: Any) -> None:
    """A comment body in Atlassian Document Format (as API v3 shows it), however broken."""
    body = {"webhookEvent": "comment_created", "issue": {"key": "OPS-1"}, "comment": {"id": "1", "body": document}}
    try:
        raw = orjson.dumps(body)
    except TypeError:
        return
    outcome(PARSERS[name][0], raw)
