"""Puppet's http report processor: recorded reports, Ruby tags read safely, bounded YAML, basic auth."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sources import puppet
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed
from tests.conftest import FIXTURES

RECEIVED = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)
HERE = FIXTURES / "puppet"
RECORDED = sorted(HERE.glob("*.yaml"))
YAML_TYPE = "application/x-yaml"


def parse(body: bytes, **options: Any) -> Alert:
    parsed = puppet.parse(body, YAML_TYPE, {}, ParseContext("puppet", RECEIVED, options))
    [alert] = parsed.alerts
    return alert


def run(body: bytes) -> Parsed | PayloadError:
    try:
        return puppet.parse(body, YAML_TYPE, {}, ParseContext("puppet", RECEIVED, {}))
    except PayloadError as exc:
        return exc


def test_recorded_failed_run_fires_one_alert_for_the_node() -> None:
    """The recorded failed `puppet apply` gives one firing alert for the node, listing both failed resources."""
    alert = parse((HERE / "failed.yaml").read_bytes())
    assert (alert.kind, alert.identity, alert.resource, alert.name) == ("puppet", "vm", "vm", "puppet_run")
    assert (alert.status, alert.severity) == (Status.FIRING, Severity.MAJOR)
    assert alert.summary == "Puppet run failed on vm: 2 failed resources"
    assert alert.labels["puppet_status"] == "failed" and alert.labels["environment"] == "production"
    assert alert.raw["failed"] == ["File[/tmp/pp/missing-dir/motd]", "Exec[check-disk]"]
    lines = alert.description.splitlines()
    assert lines[0] == "File[/tmp/pp/missing-dir/motd] (/tmp/pp/fail.pp:1):"
    assert lines[1].startswith("  - change from 'absent' to 'file' failed: Could not set 'file' on ensure")
    assert lines[2] == "Exec[check-disk] (/tmp/pp/fail.pp:5):"
    assert "returned 3 instead of one of [0]" in lines[3]
    # The notice- and warning-level lines (the exec's stderr, the skipped dependency) are not errors;
    # the resources' errors logged again from "Puppet" are not listed twice.
    assert "disk almost full\n" not in alert.description and "Skipping" not in alert.description
    assert len(lines) == 4
    assert alert.starts_at is None and alert.ends_at is None


@pytest.mark.parametrize("name", ["changed", "unchanged"])
def test_recorded_good_runs_resolve(name: str) -> None:
    """A changed or unchanged run is a clear for the node, ended at the run's time; it can open nothing."""
    alert = parse((HERE / f"{name}.yaml").read_bytes())
    assert (alert.identity, alert.status, alert.severity) == ("vm", Status.RESOLVED, Severity.OK)
    assert alert.labels["puppet_status"] == name
    assert alert.ends_at is not None and alert.ends_at.year == 2026
    assert alert.description == ""


def report(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"host": "web-1", "time": "2026-12-04T10:00:00.123456789+00:00", "status": "changed"}
    doc.update(fields)
    return doc


def ruby(doc: dict[str, Any]) -> bytes:
    return ("--- !ruby/object:Puppet::Transaction::Report\n" + yaml.safe_dump(doc)).encode()


def test_failed_resource_in_an_unfailed_status_still_fires() -> None:
    """A resource with failed: true fires even when the run's status is not `failed`."""
    doc = report(resource_statuses={"Service[nginx]": {"failed": True, "events": [
        {"status": "failure", "message": "Could not start Service[nginx]"},
        {"status": "success", "message": "not an error"},
    ]}})  # fmt: skip
    alert = parse(ruby(doc))
    assert alert.status is Status.FIRING
    assert alert.description == "Service[nginx]:\n  - Could not start Service[nginx]"


def test_failed_run_without_resources_lists_its_errors() -> None:
    """A run that failed before any resource (a catalog that did not compile) lists its error logs."""
    doc = report(status="failed", logs=[
        {"level": "err", "source": "Puppet", "message": "Could not retrieve catalog from remote server: Error 500"},
        {"level": "warning", "source": "Puppet", "message": "Not using cache on failed catalog"},
    ])  # fmt: skip
    alert = parse(ruby(doc), severity="critical")
    assert (alert.summary, alert.severity) == ("Puppet run failed on web-1: run failed", Severity.CRITICAL)
    assert alert.description == "Other errors:\n  - Could not retrieve catalog from remote server: Error 500"


def test_description_is_bounded() -> None:
    """Hundreds of failed resources with long messages give a bounded description that says how many more."""
    statuses = {f"File[/f{i}]": {"failed": True} for i in range(300)}
    logs = [
        {"level": "err", "source": f"/Stage[main]/Main/File[/f{i}]/ensure", "message": "x" * 5000} for i in range(300)
    ]
    alert = parse(ruby(report(status="failed", resource_statuses=statuses, logs=logs)))
    assert len(alert.description) <= puppet.MAX_DESCRIPTION
    assert alert.description.endswith(" more failed resources)")
    assert alert.description.count("File[") >= 5  # as many as fit, each with its message
    assert all(len(line) <= puppet.MAX_MESSAGE + 4 for line in alert.description.splitlines())


def test_older_dumps_with_tags_inside_are_plain_data() -> None:
    """Puppet 3/4 dumps tag every log, status and event, and symbols: all read as the plain data they tag."""
    body = b"""--- !ruby/object:Puppet::Transaction::Report
host: db-2
time: 2015-03-01 10:00:00.5 +01:00
status: failed
logs:
  - !ruby/object:Puppet::Util::Log
    level: !ruby/sym err
    message: "Could not find dependency Package[pg]"
    source: "/Stage[main]/Db/Service[postgresql]"
resource_statuses:
  "Service[postgresql]": !ruby/object:Puppet::Resource::Status
    failed: true
    events: !ruby/array:Puppet::Events [ ]
metrics: !ruby/hash-with-ivars:Puppet::Util::Metric {}
"""
    alert = parse(body)
    assert (alert.identity, alert.status) == ("db-2", Status.FIRING)
    assert alert.description == "Service[postgresql]:\n  - Could not find dependency Package[pg]"
    assert parse(body.replace(b"status: failed", b"status: unchanged").replace(b"true", b"false")).ends_at == (
        datetime(2015, 3, 1, 9, 0, 0, 500000, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "tag",
    [
        "!ruby/object:File",
        "!!python/object/apply:os.system",
        "!python/name:os.system",
        "!<tag:yaml.org,2002:python/object:os.Popen>",
    ],
)
def test_no_tag_constructs_an_object(tag: str) -> None:
    """Tags that a full loader would turn into objects or calls give plain strings, mappings and lists."""
    body = f"""--- !ruby/object:Puppet::Transaction::Report
host: {tag} node-1
status: {tag} ["unchanged"]
extra: {tag} {{a: 1}}
""".encode()
    doc = puppet.load_report(body)
    assert doc == {"host": "node-1", "status": ["unchanged"], "extra": {"a": 1}}


def test_alias_bomb_is_refused_quickly() -> None:
    """A billion-laughs document (aliases that expand to 10^9 values) is a PayloadError, decided quickly."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [{','.join(['*' + chr(96 + i)] * 10)}]")
    body = ("host: x\nstatus: failed\n" + "\n".join(lines) + "\n").encode()
    started = time.process_time()
    with pytest.raises(PayloadError, match="expands to more than"):
        puppet.load_report(body)
    assert time.process_time() - started < 5  # CPU seconds: not a speed claim, the bomb's guard


def test_recursive_alias_and_deep_nesting_are_refused() -> None:
    """An alias to its own ancestor and a document nested past the bound are PayloadErrors, not crashes."""
    with pytest.raises(PayloadError, match="recursive"):
        puppet.load_report(b"host: x\nstatus: failed\nloop: &l [1, *l]\n")
    with pytest.raises(PayloadError, match="deeper"):
        puppet.load_report(b"host: " + b"[" * 5000 + b"]" * 5000 + b"\n")


def test_small_aliases_are_read() -> None:
    """A few aliases (Psych writes them for an object dumped twice) are fine."""
    doc = puppet.load_report(b"host: &h web-1\nstatus: failed\nagain: *h\ntags: &t [a, b]\nmore: *t\n")
    assert doc["again"] == "web-1" and doc["more"] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"- a\n- b\n", "YAML mapping"),
        (b"status: failed\n", "host missing"),
        (b"host: web-1\n", "status missing"),
        (b"host: web-1\nstatus: failed\ntime: yesterday\n", "time"),
        (b"host: [unclosed\n", "not a YAML report"),
        (b"# only a comment\n", "empty report"),
        (b"---\n...\n", "YAML mapping"),
        (b"host: a\nstatus: failed\n? [a, b]\n: c\n", "report"),
    ],
)
def test_unreadable_reports_are_payload_errors(body: bytes, match: str) -> None:
    """Bodies that are not a report say what is wrong (a 400 at the ingress)."""
    with pytest.raises(PayloadError, match=match):
        parse(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(RECORDED),
    at=st.integers(min_value=0, max_value=12000),
    junk=st.binary(min_size=1, max_size=8)
    | st.sampled_from([b"*", b"&a ", b"!ruby/x ", b"\t", b"\x00", b"\xff", b":"]),
    replace=st.booleans(),
)
def test_damaged_reports_give_only_payload_errors(path: Path, at: int, junk: bytes, replace: bool) -> None:
    """A recorded report with bytes inserted or overwritten gives Parsed or PayloadError, never another exception."""
    body = path.read_bytes()
    at %= len(body)
    assert isinstance(run(body[:at] + junk + body[at + (len(junk) if replace else 0) :]), Parsed | PayloadError)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=8)
    | st.datetimes(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.dictionaries(st.sampled_from(["host", "status", "time", "logs", "resource_statuses", "x"]), YAML_VALUES))
def test_random_reports_give_only_payload_errors(doc: dict[str, Any]) -> None:
    """Reports whose fields have random types and values (bytes, sets of times, ...) never crash the parser."""
    assert isinstance(run(ruby(doc)), Parsed | PayloadError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400))
def test_random_bytes_give_only_payload_errors(body: bytes) -> None:
    """Random bytes give Parsed or PayloadError, never another exception."""
    assert isinstance(run(body), Parsed | PayloadError)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_recorded_basic_auth_from_the_reporturl_is_accepted() -> None:
    """The header Puppet sent for reporturl http://bridge:s3cret@.../ (recorded) passes with secret s3cret."""
    recorded = (HERE / "failed.headers.txt").read_text().splitlines()
    [auth] = [line.split(": ", 1)[1] for line in recorded if line.startswith("Authorization:")]
    puppet.verify(b"", {"Authorization": auth}, {}, "s3cret", RECEIVED)
    with pytest.raises(AuthError, match="do not match"):
        puppet.verify(b"", {"Authorization": auth}, {}, "other", RECEIVED)


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        (basic("anyone", "s3cret"), True),
        (basic("puppet", "s3cret:with:colons"), False),
        ({"authorization": "Bearer s3cret"}, True),
        ({"Authorization": "Bearer wrong"}, False),
        (basic("puppet", ""), False),
        ({"Authorization": "Basic not-base64!"}, False),
        ({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}, False),
        ({"Authorization": "Basic " + base64.b64encode(b"u:\xff").decode()}, False),
        ({}, False),
    ],
)
def test_verify_takes_the_secret_as_basic_password_or_bearer(headers: dict[str, str], ok: bool) -> None:
    """The secret is accepted as the basic-auth password (any user) or a bearer token; anything else is a 401."""
    if ok:
        puppet.verify(b"", headers, {}, "s3cret", RECEIVED)
    else:
        with pytest.raises(AuthError):
            puppet.verify(b"", headers, {}, "s3cret", RECEIVED)
