"""Adapters are plugins: the registry holds the built-ins through their entry points, and a desk
from a package of its own (examples/folder-desk) opens, notes and resolves tickets through a
running bridge with no change to `bridge/`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.core import plugins
from bridge.core.config import load
from bridge.core.errors import ConfigError
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import ROOT, eventually, post
from tests.running import spawn, wait_ready

PLUGIN = ROOT / "examples" / "folder-desk"


def test_the_built_ins_are_registered_through_entry_points() -> None:
    """Every built-in source and desk kind comes from pyproject.toml's entry points, named by its kind."""
    assert {"alertmanager", "nagios", "icinga2", "splunk", "zabbix", "generic"} <= set(plugins.sources())
    assert set(plugins.desks()) == {"servicenow", "servicenow_em", "jira", "jsm_ops", "remedy", "webhook"}
    assert all(adapter.kind == kind for kind, adapter in plugins.sources().items())


def test_an_unknown_desk_kind_names_the_registered_ones(tmp_path: Path) -> None:
    """A desk kind no plugin registers is a config error that lists the kinds there are."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "sources: {am: {kind: alertmanager}}\ndesks: {d: {kind: folder, path: /tmp/x}}\nroutes: [{name: r, desk: d}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load([path])
    assert "folder" in str(caught.value) and "servicenow" in str(caught.value)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/folder-desk installed (its code and entry points) into a folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("plugins")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, PLUGIN],
        check=True,
        capture_output=True,
    )
    return target


def test_the_plugin_kind_is_registered_once_installed(plugin_dir: Path) -> None:
    """With the plugin's package importable, its entry point adds the kind `folder` to the registry."""
    code = "from bridge.core import plugins; print(sorted(plugins.desks()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(plugin_dir)}, capture_output=True, check=True
    )
    assert "'folder'" in out.stdout.decode()


def _tickets(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"))]


async def test_a_desk_from_its_own_package_opens_notes_and_resolves(plugin_dir: Path, tmp_path: Path) -> None:
    """A bridge whose mapping names the plugin's desk kind opens a ticket there, notes a new member, resolves it."""
    tickets = tmp_path / "tickets"
    config = tmp_path / "mapping.yaml"
    config.write_text(
        "sources: {alertmanager: {kind: alertmanager}}\n"
        f"desks: {{files: {{kind: folder, path: {tickets}}}}}\n"
        "routes:\n"
        "  - name: all\n"
        "    desk: files\n"
        "    correlate: {by: ['{{ labels.alertname }}']}\n"
        "    lifecycle: {resolve_after: 0s}\n"
        "    ticket: {fields: {summary: '{{ name }} on {{ resource }}'}}\n"
    )
    redis = EmbeddedRedis(tmp_path / "redis").start()
    port = free_port()
    process = spawn(config, redis.url, port, PYTHONPATH=str(plugin_dir))
    try:
        await wait_ready(port)
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        await post(url, group(alert(alertname="DiskFull", instance="db-1")))
        await eventually(lambda: len(_tickets(tickets)) == 1)
        [ticket] = _tickets(tickets)
        assert ticket["fields"]["summary"].startswith("DiskFull on db-1") and ticket["state"] == "open"
        assert ticket["correlation_id"].startswith("all:")

        await post(url, group(alert(alertname="DiskFull", instance="db-2")))
        await eventually(lambda: any("db-2" in note for note in _tickets(tickets)[0]["notes"]))

        await post(url, group(*(alert("resolved", alertname="DiskFull", instance=h) for h in ("db-1", "db-2"))))
        await eventually(lambda: _tickets(tickets)[0]["state"] == "resolved")
        assert len(_tickets(tickets)) == 1
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)
        redis.stop()
    assert b"Traceback" not in (process.stderr.read() if process.stderr else b"")
