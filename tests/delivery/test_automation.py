"""Route automation through running bridges: an AWX job launched once per incident, its result a work
note; a failed job, an AWX that is down and an EDA webhook, all beside the ticket, never in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from adapters.simulators.awx import STORE, TOKEN, AwxStore, Template, make_app
from bridge.core.automation import Outcome
from bridge.core.config import MappingConfig
from bridge.delivery.automation import note_text
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post, start_app


class Awx:
    def __init__(self, url: str, app: web.Application) -> None:
        self.url, self.app = url, app

    @property
    def store(self) -> AwxStore:
        return self.app[STORE]


@pytest.fixture
async def awx() -> AsyncIterator[Awx]:
    app = make_app()
    runner, url = await start_app(app)
    yield Awx(url, app)
    await runner.cleanup()


def config(snow: Snow, runners: dict[str, Any], automation: dict[str, Any]) -> MappingConfig:
    """The test mapping (alertmanager → ServiceNow simulator) with `automation` on its route."""
    data = mapping(snow.url).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"  # SecretStr dumps masked
    data["routes"][0]["automation"] = automation
    data["automation"] = runners
    return MappingConfig.model_validate(data)


def awx_runner(url: str, **kw: Any) -> dict[str, Any]:
    return {"remediate": {"kind": "awx", "url": url, "token": TOKEN, "poll": 0.05, **kw}}


AUTOMATION = {
    "runner": "remediate",
    "job_template": "7",
    "extra_vars": {"host": "{{ labels.instance }}", "ticket": "{{ incident.ticket }}", "incident": "{{ incident.id }}"},
    "timeout": "20s",
}


async def test_open_launches_one_job_across_two_replicas_and_notes_its_result(
    snow: Snow, awx: Awx, make_bridge: Any
) -> None:
    """An HA pair sends the firing group to both replicas: one ticket, one AWX job with the rendered
    extra_vars, and its result (status, elapsed, link, last lines) as one work note on the ticket."""
    cfg = config(snow, awx_runner(awx.url), AUTOMATION)
    one, two = await make_bridge(cfg), await make_bridge(cfg)
    body = group(alert())
    for bridge in (one, two):
        status, _ = await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", body)
        assert status == 202
    await eventually(lambda: snow.incidents(), within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    [note] = snow.notes(ticket)
    assert len(awx.store.launches) == 1
    [launch] = awx.store.launches
    assert launch["template"] == 7
    assert launch["extra_vars"] == {
        "host": "db-prod-01.example.com:9100",
        "ticket": ticket["number"],
        "incident": ticket["correlation_id"],
    }
    lines = note.splitlines()
    assert lines[0] == "Automation (remediate, on open): job 1 succeeded."
    assert lines[1].startswith("Elapsed: ")
    assert lines[2] == f"Job: {awx.url}/#/jobs/playbook/1/output"
    # (the desk adds its own marker line after the text: the loop back's echo check)
    assert lines[3:7] == ["Last 3 lines of output:", "PLAY [remediate] ***", "TASK [restart service] ***", "ok"]
    # Delivered and followed again later (a lease lost, a second replica's drain), the claim holds.
    for bridge in (one, two):
        delivery = bridge.delivery
        assert all(t.done() for t in delivery.automations._tasks)
    await asyncio.sleep(0.5)
    assert len(awx.store.launches) == 1 and len(snow.notes(ticket)) == 1


async def test_the_claim_starts_one_job_when_both_replicas_hand_over_the_same_open(
    snow: Snow, awx: Awx, make_bridge: Any, redis: Any
) -> None:
    """The same delivered OPEN handed to both replicas' automation at once launches one job (HSETNX claim)."""
    from bridge.core import keys
    from bridge.runtime import outbox

    cfg = config(snow, awx_runner(awx.url), AUTOMATION)
    one, two = await make_bridge(cfg), await make_bridge(cfg)
    await post(f"http://127.0.0.1:{one.port}/webhook/alertmanager", group(alert()))
    await eventually(lambda: snow.incidents() and awx.store.launches, within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    # Replay the delivered open as a second epoch's: neither replica has claimed that one yet.
    base, _, epoch = ticket["correlation_id"].rpartition(":")
    ik = keys.IncidentKeys(base)
    view = await redis.hgetall(ik.state)
    view[f"ticket:{epoch}x".encode()] = view[f"ticket:{epoch}".encode()]
    entry = orjson.dumps({"kind": "OPEN", "incident": ticket["correlation_id"] + "x", "epoch": epoch + "x",
                          "route": "prometheus", "alert": {"name": "x", "labels": {"instance": "i"}}})  # fmt: skip
    for bridge in (one, two):
        [action] = outbox.coalesce([entry])
        await bridge.delivery.actions.bind(action, view)
        bridge.delivery.automations.after(ik, action, view)
    await eventually(lambda: len(awx.store.launches) == 2, within=10)
    await asyncio.sleep(1.0)
    assert len(awx.store.launches) == 2  # one for the first epoch, one for this one: not three


@pytest.mark.parametrize(
    ("template", "first", "detail"),
    [
        ("failing-remediation", ": job 1 FAILED.", 'fatal: [web-1]: FAILED! => {"msg": "service did not start"}'),
        ("404", " could not start.", "AWX: 404 Not found."),
    ],
)
async def test_failed_or_refused_jobs_are_noted(
    snow: Snow, awx: Awx, make_bridge: Any, template: str, first: str, detail: str
) -> None:
    """A job that fails is noted as FAILED with its last lines; an unknown template as not started, with AWX's words."""
    bridge = await make_bridge(config(snow, awx_runner(awx.url), {**AUTOMATION, "job_template": template}))
    await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    [note] = snow.notes(ticket)
    assert note.splitlines()[0] == f"Automation (remediate, on open){first}"
    assert detail in note.splitlines()


async def test_awx_down_still_opens_the_ticket_and_notes_it(snow: Snow, make_bridge: Any) -> None:
    """With nothing listening at AWX's address the ticket opens as usual, and a note says the job could not start."""
    await_url = "http://127.0.0.1:9"  # discard port: connection refused
    bridge = await make_bridge(config(snow, awx_runner(await_url), AUTOMATION))
    await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    [note] = snow.notes(ticket)
    assert note.startswith("Automation (remediate, on open) could not start.\nAWX: ClientConnectorError")


async def test_a_slow_job_never_holds_the_ticket_back(snow: Snow, awx: Awx, make_bridge: Any) -> None:
    """A job running past the route's timeout: the ticket opens and resolves meanwhile; the note says it still runs."""
    awx.store.add(Template(9, "slow", duration=30.0))
    bridge = await make_bridge(
        config(snow, awx_runner(awx.url), {**AUTOMATION, "job_template": "9", "timeout": "1s", "on": ["open"]})
    )
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    await post(url, group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    await post(url, group(alert("resolved")))
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=10)
    [ticket] = snow.incidents()
    assert snow.notes(ticket) == [] or "still running" in snow.notes(ticket)[0]
    await eventually(lambda: snow.notes(ticket), within=15)
    assert snow.notes(ticket)[0].startswith("Automation (remediate, on open): job 1 is still running")


async def test_resolve_trigger_and_rate_limit(snow: Snow, awx: Awx, make_bridge: Any) -> None:
    """`on: [open, resolve]` runs a job at each; a runner allowed one run per 10 minutes notes the second as skipped."""
    runners = awx_runner(awx.url, per_second=1 / 600, burst=1)
    bridge = await make_bridge(config(snow, runners, {**AUTOMATION, "on": ["open", "resolve"]}))
    import bridge.delivery.automation as automation

    automation.RATE_WAIT_S = 0.5  # do not wait a minute for the token in a test
    try:
        url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
        await post(url, group(alert()))
        await eventually(lambda: snow.incidents(), within=10)
        [ticket] = snow.incidents()
        await eventually(lambda: snow.notes(ticket), within=15)
        await post(url, group(alert("resolved")))
        await eventually(lambda: len(snow.notes(ticket)) == 2, within=15)
    finally:
        automation.RATE_WAIT_S = 60.0
    first, second = snow.notes(ticket)
    assert first.startswith("Automation (remediate, on open): job 1 succeeded.")
    assert second.startswith("Automation (remediate, on resolve) could not start.\nrate limit of runner 'remediate'")
    assert len(awx.store.launches) == 1


async def test_eda_event_reaches_the_webhook_source(snow: Snow, make_bridge: Any) -> None:
    """The EDA runner posts the incident event (incident, route, state, ticket, alerts) with the source's
    bearer token, retrying a 503; the note says it was sent."""
    received: list[tuple[dict[str, Any], str]] = []
    answers = [503]

    async def webhook(request: web.Request) -> web.Response:
        if answers:
            return web.Response(status=answers.pop())
        received.append((await request.json(), request.headers.get("Authorization", "")))
        return web.Response(text="OK")  # ansible.eda.webhook answers 200 "OK"

    app = web.Application()
    app.router.add_post("/endpoint", webhook)
    runner, eda_url = await start_app(app)
    try:
        runners = {"rulebook": {"kind": "eda", "url": f"{eda_url}/endpoint", "secret": "eda-token"}}
        automation = {"runner": "rulebook", "extra_vars": {"service": "{{ labels.alertname }}"}}
        bridge = await make_bridge(config(snow, runners, automation))
        await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert()))
        await eventually(lambda: snow.incidents() and received, within=15)
        [ticket] = snow.incidents()
        [(event, auth)] = received
        assert auth == "Bearer eda-token"
        assert event["incident"] == ticket["correlation_id"] and event["route"] == "prometheus"
        assert event["state"] == "open" and event["ticket"]["id"] == ticket["number"]
        assert event["alerts"][0]["labels"]["instance"] == "db-prod-01.example.com:9100"
        assert event["extra_vars"] == {"service": "NodeFilesystemAlmostOutOfSpace"}
        await eventually(lambda: snow.notes(ticket), within=10)
        assert snow.notes(ticket)[0].startswith("Automation (rulebook, on open) was sent.")
    finally:
        await runner.cleanup()


def test_note_text_is_bounded() -> None:
    """A job's output of thousands of long lines makes a note of at most 8,000 characters, its last lines kept."""
    outcome = Outcome(status="failed", job="3", output=[f"line {i} " + "x" * 300 for i in range(5000)])
    text = note_text("remediate", "open", outcome)
    assert len(text) <= 8_000
    assert text.endswith("line 4999 " + "x" * 300)


@pytest.mark.parametrize(
    ("automation", "error"),
    [
        ({"runner": "nope", "job_template": "7"}, "unknown runner 'nope'"),
        ({"runner": "remediate"}, "name the job template"),
        ({"runner": "remediate", "job_template": "7", "on": ["close"]}, "on"),
        ({"runner": "remediate", "job_template": "7", "extra_vars": {"x": "{{ broken"}}, "extra_vars"),
    ],
)
def test_mapping_errors(snow: Snow, automation: dict[str, Any], error: str) -> None:
    """An unknown runner, an AWX route without a template, a bad trigger or template are mapping errors."""
    with pytest.raises(ValueError, match=error):
        config(snow, awx_runner("http://127.0.0.1:1"), automation)


def test_yaml_on_key_is_read(snow: Snow) -> None:
    """YAML 1.1 reads `on:` as true: the route's automation takes it as the trigger list (a bare string too)."""
    import yaml

    doc = yaml.safe_load("runner: remediate\njob_template: '7'\non: resolve\n")
    assert True in doc
    cfg = config(snow, awx_runner("http://127.0.0.1:1"), doc)
    assert cfg.routes[0].automation is not None and cfg.routes[0].automation.on == ["resolve"]


def test_a_mapping_file_with_runners_loads(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML mapping with the top-level `automation:` section, a token from the environment and a bare
    `on:` key loads; the token is among the secrets masked."""
    from bridge.core.config import load

    monkeypatch.setenv("AWX_TOKEN", "awx-secret-from-env")
    path = tmp_path / "mapping.yaml"
    path.write_text(
        """
sources: {alertmanager: {kind: alertmanager}}
desks: {snow: {kind: servicenow, url: "http://127.0.0.1:1", user: u, password: p}}
automation:
  awx-prod: {kind: awx, url: "https://awx.example.com", token: "${AWX_TOKEN}"}
  rulebook: {kind: eda, url: "https://eda.example.com:5000/endpoint"}
routes:
  - name: web
    desk: snow
    automation:
      runner: awx-prod
      job_template: "42"
      on: [open, resolve]
      extra_vars: {host: "{{ labels.instance }}"}
"""
    )
    cfg = load([str(path)])
    assert cfg.routes[0].automation is not None and cfg.routes[0].automation.on == ["open", "resolve"]
    assert "awx-secret-from-env" in cfg.secrets()
    assert sorted(cfg.automation) == ["awx-prod", "rulebook"]
