"""Each mappings/examples/<desk>.yaml loads, and its rendered tickets open, note and resolve on its simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.simulators import jira, jsm_ops, remedy, servicenow, webhook
from bridge.cli import main
from bridge.core.config import load
from bridge.core.desk import Desk, TicketPhase
from bridge.tools.explain import explain
from tests.adapters.desks.conftest import serve
from tests.conftest import ROOT

EXAMPLES = ROOT / "mappings" / "examples"
SAMPLE = ROOT / "bridge" / "samples" / "alertmanager_firing.json"
# Each example, the simulator as `bridge simulate <desk>` runs it (admin/admin), and its URL variable.
CASES: dict[str, tuple[Callable[[], web.Application], str]] = {
    "servicenow.yaml": (lambda: servicenow.make_app(user="admin", password="admin"), "SERVICENOW_URL"),
    "servicenow_em.yaml": (lambda: servicenow.make_app(user="admin", password="admin"), "SERVICENOW_URL"),
    "jira.yaml": (lambda: jira.make_app(email="admin", api_token="admin", pat="admin"), "JIRA_URL"),
    "jsm.yaml": (lambda: jira.make_app(email="admin", api_token="admin", pat="admin"), "JIRA_URL"),
    "jira-datacenter.yaml": (
        lambda: jira.make_app(mode="datacenter", email="admin", api_token="admin", pat="admin"),
        "JIRA_DC_URL",
    ),
    "remedy.yaml": (lambda: remedy.make_app(user="admin", password="admin"), "REMEDY_URL"),
    "webhook.yaml": (lambda: webhook.make_app(token="admin"), "TICKETS_URL"),
    "jsm_ops.yaml": (lambda: jsm_ops.make_app(api_key="admin", email="admin", api_token="admin"), "JSM_OPS_URL"),
}


def test_every_example_is_listed_and_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    """`bridge check-config` accepts every example, and every example has a case here."""
    files = sorted(path.name for path in EXAMPLES.glob("*.yaml"))
    assert files == sorted(CASES)
    for name in files:
        assert main(["check-config", str(EXAMPLES / name)]) == 0, name
        assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_example_tickets_open_note_and_resolve(name: str, tmp_path: Path) -> None:
    """The example's rendered fields, for a critical and a warning alert, make tickets the simulator accepts."""
    make_app, variable = CASES[name]
    payload = orjson.loads(SAMPLE.read_bytes())
    payload["alerts"][1]["labels"] |= {"severity": "warning", "instance": "db-prod-02.example.com:9100"}
    recorded = tmp_path / "payload.json"
    recorded.write_bytes(orjson.dumps(payload))
    runner, url = await serve(make_app())
    try:
        config = load([EXAMPLES / name], env={variable: url})
        explained = explain(config, "alertmanager", recorded)
        placements = [p for alert in explained["alerts"] for p in alert["routes"]]
        assert len(placements) == 2
        async with aiohttp.ClientSession() as session:
            for placement in placements:
                desk: Desk = config.desks[placement["desk"]].build(placement["desk"], session)
                correlation = placement["incident"] + ":1"
                ref = await desk.open(correlation, placement["ticket_fields"])
                assert await desk.find(correlation) == ref
                await desk.note(ref, "a note")
                await desk.resolve(ref, "resolved by the example test", {})
                assert (await desk.state(ref)).phase is TicketPhase.RESOLVED
                await desk.aclose()
    finally:
        await runner.cleanup()
