"""The sender snippets in deploy/snippets/ send exactly the keys the parsers read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bridge.core.models import Alert
from bridge.core.plugins import sources
from bridge.core.source import ParseContext
from tests.conftest import FIXTURES, ROOT

SOURCES = sources()

SNIPPETS = ROOT / "deploy" / "snippets"

RECEIVED = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)


def parse(kind: str, body: bytes) -> Alert:
    [alert] = SOURCES[kind].parse(body, "application/json", {}, ParseContext("s", RECEIVED)).alerts
    return alert


def recorded(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return doc


def test_datadog_payload_template_matches_parser() -> None:
    """payload.json sends exactly the recording's keys (the ones the parser reads), each a $VARIABLE."""
    sample = recorded("datadog.json")
    template: dict[str, Any] = orjson.loads((SNIPPETS / "datadog" / "payload.json").read_bytes())
    assert set(template) == set(sample)
    flat = [value for key, value in template.items() if key != "org"] + list(template["org"].values())
    assert all(re.fullmatch(r"\$[A-Z_]+", value) for value in flat)


@pytest.mark.parametrize("action", ["trigger", "reset"])
def test_solarwinds_bodies_match_parser(action: str) -> None:
    """trigger.json/reset.json, variables substituted, parse like the recorded trigger/reset."""
    sample = recorded(f"solarwinds_{action}.json")
    body: dict[str, Any] = orjson.loads((SNIPPETS / "solarwinds" / f"{action}.json").read_bytes())
    assert set(sample) <= set(body) | {"node_dns"}
    filled = {key: sample.get(key, value) for key, value in body.items()}
    assert parse("solarwinds", orjson.dumps(filled)).model_dump(exclude={"raw"}) == parse(
        "solarwinds", orjson.dumps(sample)
    ).model_dump(exclude={"raw"})


def test_solarwinds_body_with_nothing_resolved_is_refused_by_name() -> None:
    """If SolarWinds resolves no variable at all, the 400 names the missing alert name."""
    with pytest.raises(Exception, match="alert_name missing"):
        parse("solarwinds", (SNIPPETS / "solarwinds" / "trigger.json").read_bytes())


@pytest.mark.parametrize("fixture", ["zabbix_problem.json", "zabbix_recovery.json"])
def test_zabbix_media_type_parameters_match_parser(fixture: str) -> None:
    """The media type's parameters, with the recording's values, parse like the recording."""
    media = yaml.safe_load((SNIPPETS / "zabbix" / "media_itsm_bridge.yaml").read_text())
    parameters = {p["name"]: p["value"] for p in media["zabbix_export"]["media_types"][0]["parameters"]}
    sample = recorded(fixture)
    assert set(sample) - {"source", "event_object", "item_name", "item_value"} <= set(parameters)
    sent = {name: sample.get(name, value) for name, value in parameters.items()}
    for name in ("itsm_url", "itsm_token", "HTTPProxy"):  # the script deletes these before posting
        del sent[name]
    assert parse("zabbix", orjson.dumps(sent)) == parse("zabbix", orjson.dumps(sample))


def _run_script(script: Path, env: dict[str, str], tmp_path: Path) -> bytes:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "curl").write_text(f'#!/bin/sh\ncat > "{tmp_path}/body.json"\n')
    (shim / "curl").chmod(0o755)
    full = {"PATH": f"{shim}:{os.environ['PATH']}", "ITSM_URL": "http://bridge/webhook/x", **env}
    subprocess.run(["bash", str(script), *env.pop("ARGS", "").split()], env=full, check=True, timeout=30)
    return (tmp_path / "body.json").read_bytes()


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="needs bash and jq")
def test_nagios_script_escapes_hostile_values(tmp_path: Path) -> None:
    """itsm-notify.sh turns quotes, backslashes, `$(...)` and newlines in macros into valid JSON data."""
    comment = 'don\'t restart; $(touch /tmp/pwned) `id` "quoted" C:\\Temp\nline 2'
    env = {
        "ARGS": "service",
        "ITSM_AUTH_FILE": "/dev/null",
        "NAGIOS_NOTIFICATIONTYPE": "ACKNOWLEDGEMENT",
        "NAGIOS_HOSTNAME": "web-01",
        "NAGIOS_SERVICEDESC": 'Disk "C:\\"',
        "NAGIOS_SERVICESTATE": "CRITICAL",
        "NAGIOS_NOTIFICATIONAUTHOR": "jdoe",
        "NAGIOS_NOTIFICATIONCOMMENT": comment,
        "NAGIOS_LASTSERVICESTATECHANGE": "1715677917",
    }
    alert = parse("nagios", _run_script(SNIPPETS / "nagios" / "itsm-notify.sh", env, tmp_path))
    assert alert.identity == 'web-01!Disk "C:\\"'
    assert alert.summary == f"Acknowledged by jdoe: {comment}"
    assert alert.starts_at == datetime.fromtimestamp(1715677917, UTC)


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="needs bash and jq")
def test_icinga_script_sends_what_the_parser_reads(tmp_path: Path) -> None:
    """The Icinga 2 script's JSON gives identity host!service and the hard state change as starts_at."""
    env = {
        "ITSM_TOKEN": "t",
        "OBJECT_TYPE": "service",
        "NOTIFICATIONTYPE": "PROBLEM",
        "HOSTNAME": "web-01.example.com",
        "SERVICENAME": "http",
        "SERVICESTATE": "CRITICAL",
        "SERVICEOUTPUT": 'HTTP CRITICAL - "timeout"',
        "SERVICELASTHARDSTATECHANGE": "1715678091.451",
    }
    alert = parse("icinga2", _run_script(SNIPPETS / "icinga2" / "itsm-notify.sh", env, tmp_path))
    assert (alert.identity, alert.summary) == ("web-01.example.com!http", 'HTTP CRITICAL - "timeout"')
    assert alert.starts_at == datetime(2024, 5, 14, 9, 14, 51, 451000, tzinfo=UTC)
