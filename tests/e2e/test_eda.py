"""The EDA runner against a real ansible-rulebook (PyPI's, with ansible-core; its rule engine runs in
Debian's Java): the bridge posts the incident event to the webhook source, the rule fires and prints it.

The source is `eda.builtin.webhook`, the webhook source ansible-rulebook itself ships (builtin since
1.3), with the options and event shape of the ansible.eda collection's `ansible.eda.webhook` (host, port,
token checked as `Authorization: Bearer`, the JSON body as `event.payload`); that collection comes only
from Ansible Galaxy, which is not reachable here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.amp import alert, group
from tests.conftest import Snow, eventually, post, require
from tests.delivery.test_automation import config

pytestmark = pytest.mark.e2e
TOKEN = "eda-s3cret-token"

RULEBOOK = """
- name: incidents from the bridge
  hosts: all
  sources:
    - eda.builtin.webhook:
        host: 127.0.0.1
        port: {port}
        token: {token}
  rules:
    - name: an incident opens
      condition: event.payload.state == "open"
      action:
        debug:
          msg: >-
            opened {{{{ event.payload.incident }}}} {{{{ event.payload.ticket.id }}}}
            {{{{ event.payload.alerts[0].labels.instance }}}} {{{{ event.payload.extra_vars.service }}}}
"""


def rulebook_binary() -> str:
    """ansible-rulebook beside this Python (the test extra installs it), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-rulebook"
    return str(beside) if beside.exists() else require("ansible-rulebook")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


class Rulebook:
    def __init__(self, port: int, out: Path) -> None:
        self.port, self.out = port, out

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/endpoint"

    def printed(self) -> str:
        return self.out.read_text()


@pytest.fixture
async def rulebook(tmp_path: Path) -> AsyncIterator[Rulebook]:
    """ansible-rulebook running RULEBOOK in tmp_path, listening once yielded; stopped after."""
    require("java")
    binary = rulebook_binary()
    port = free_port()
    (tmp_path / "rulebook.yml").write_text(RULEBOOK.format(port=port, token=TOKEN))
    env = {
        **os.environ,
        "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its ansible-galaxy
        "PYTHONUNBUFFERED": "1",
        "HOME": str(tmp_path),  # nothing of the user's ~/.ansible is read or written
    }
    out = tmp_path / "rulebook.out"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            binary, "--rulebook", "rulebook.yml", "--inventory", "localhost,",
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await eventually(lambda: proc.returncode is not None or listening(port), within=60, interval=0.2)
        assert proc.returncode is None, out.read_text()
        yield Rulebook(port, out)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


AUTOMATION = {"runner": "rulebook", "extra_vars": {"service": "{{ labels.alertname }}"}}


async def test_real_ansible_rulebook_receives_the_incident_event(
    snow: Snow, make_bridge: Any, rulebook: Rulebook
) -> None:
    """A ticket opens; the bridge's EDA runner posts the event with the source's token; the real
    rulebook's rule fires on `state == "open"` and prints the incident, ticket, host and extra_vars it
    got; the ticket's note says the event was sent."""
    runners = {"rulebook": {"kind": "eda", "url": rulebook.url(), "secret": TOKEN}}
    bridge = await make_bridge(config(snow, runners, AUTOMATION))
    status, _ = await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert()))
    assert status == 202
    await eventually(lambda: snow.incidents(), within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    assert snow.notes(ticket)[0].startswith("Automation (rulebook, on open) was sent."), snow.notes(ticket)
    fired = " ".join(
        ["opened", ticket["correlation_id"], ticket["number"], "db-prod-01.example.com:9100",
         "NodeFilesystemAlmostOutOfSpace"]
    )  # fmt: skip
    await eventually(lambda: fired in rulebook.printed(), within=20)
    assert rulebook.printed().count("opened ") == 1


async def test_real_ansible_rulebook_refuses_a_wrong_token(snow: Snow, make_bridge: Any, rulebook: Rulebook) -> None:
    """With another token the real source answers 401: the ticket opens, its note says the event was
    refused (not retried), and the rule never fires."""
    runners = {"rulebook": {"kind": "eda", "url": rulebook.url(), "secret": "not-" + TOKEN}}
    bridge = await make_bridge(config(snow, runners, AUTOMATION))
    await post(f"http://127.0.0.1:{bridge.port}/webhook/alertmanager", group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    [ticket] = snow.incidents()
    await eventually(lambda: snow.notes(ticket), within=15)
    [note] = snow.notes(ticket)
    assert note.startswith("Automation (rulebook, on open) could not start.\nEDA webhook: 401"), note
    assert "(after 1 attempts)" in note
    assert "opened " not in rulebook.printed()
