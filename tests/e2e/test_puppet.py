"""The real Puppet (Debian's puppet package): `puppet apply` reports to the bridge through the shipped snippet."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import show_incident
from bridge.core import keys
from bridge.core.config import MappingConfig
from tests.conftest import ROOT, Snow, eventually, require

pytestmark = pytest.mark.e2e
SECRET = "puppet-report-s3cret"
SNIPPET = ROOT / "deploy" / "snippets" / "puppet" / "puppet.conf"
SNIPPET_URL = "https://puppet:CHANGE-ME-SECRET@bridge.example.com/webhook/puppet"


def bridge_config(desk_url: str) -> MappingConfig:
    """A puppet source as in the snippet, one route to the simulator with a 300ms hold-down."""
    return MappingConfig.model_validate(
        {
            "sources": {"puppet": {"kind": "puppet", "secret": SECRET}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [
                {
                    "name": "puppet",
                    "desk": "snow",
                    "sources": ["puppet"],
                    "lifecycle": {"resolve_after": "300ms", "reopen_within": "5s"},
                    "ticket": {
                        "fields": {
                            "short_description": "{{ summary }}",
                            "description": "{{ description }}",
                            "cmdb_ci": "{{ resource }}",
                        }
                    },
                }
            ],
        }
    )


class Puppet:
    """`puppet apply` in a private confdir/vardir/codedir (nothing of the system's is read or written)."""

    def __init__(self, binary: str, d: Path, bridge_port: int) -> None:
        self.binary, self.dir = binary, d
        for sub in ("conf", "var", "code", "log", "run", "target"):
            (d / sub).mkdir(parents=True)
        conf = SNIPPET.read_text()
        assert SNIPPET_URL in conf, "the snippet's placeholder changed"
        # The shipped snippet with only its URL replaced, as an admin would.
        (d / "conf" / "puppet.conf").write_text(
            conf.replace(SNIPPET_URL, f"http://puppet:{SECRET}@127.0.0.1:{bridge_port}/webhook/puppet")
        )

    async def apply(self, manifest: str) -> subprocess.CompletedProcess[str]:
        path = self.dir / "site.pp"
        path.write_text(manifest)
        d = self.dir
        command = [
            self.binary, "apply", "--color=false", "--detailed-exitcodes",
            "--confdir", str(d / "conf"), "--vardir", str(d / "var"), "--codedir", str(d / "code"),
            "--logdir", str(d / "log"), "--rundir", str(d / "run"), str(path),
        ]  # fmt: skip
        return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=90)


def manifest(target: Path, *, broken: bool) -> str:
    """A file in a directory that exists only when fixed, and an exec that fails while broken (fixed: skipped)."""
    parent = target / ("missing" if broken else "present")
    make_dir = "" if broken else f"file {{ '{parent}': ensure => directory }}\n"
    return f"""{make_dir}file {{ '{parent}/motd':
  ensure  => file,
  content => "managed by puppet\\n",
}}
exec {{ 'check-disk':
  command => '/bin/sh -c "exit 3"',
  {"" if broken else "unless  => '/bin/true',"}
}}
"""


async def test_real_puppet_failed_run_opens_and_good_run_resolves(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A failing `puppet apply` opens one ticket naming the failed resources; the fixed manifest resolves it."""
    binary = require("puppet")
    bridge = await make_bridge(bridge_config(snow.url))
    puppet = Puppet(binary, tmp_path / "puppet", bridge.port)
    target = puppet.dir / "target"

    done = await puppet.apply(manifest(target, broken=True))
    # --detailed-exitcodes: 4 (failures) or 6 (changes and failures); the report was sent either way.
    assert done.returncode in (4, 6), done.stdout + done.stderr
    assert "Unable to submit report" not in done.stdout + done.stderr
    await eventually(lambda: snow.incidents(), within=20)
    [ticket] = snow.incidents()
    assert ticket["short_description"].startswith("Puppet run failed on ")
    assert ticket["short_description"].endswith(": 2 failed resources")
    assert f"File[{target}/missing/motd]" in ticket["description"]
    assert "Exec[check-disk]" in ticket["description"]
    assert "returned 3 instead of one of [0]" in ticket["description"]
    node = ticket["cmdb_ci"]
    assert node and node in ticket["short_description"]

    # Failing again is the same problem: no second ticket.
    done = await puppet.apply(manifest(target, broken=True))
    assert done.returncode in (4, 6), done.stdout + done.stderr

    async def seen_twice() -> bool:
        shown = await show_incident(redis, ticket["correlation_id"])
        return shown is not None and sum(shown["repeats"].values()) >= 1

    await eventually(seen_twice, within=20)

    done = await puppet.apply(manifest(target, broken=False))
    assert done.returncode == 2, done.stdout + done.stderr  # changes, no failures
    assert (target / "present" / "motd").read_text() == "managed by puppet\n"
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=20)

    # An unchanged run of a healthy node opens nothing.
    done = await puppet.apply(manifest(target, broken=False))
    assert done.returncode == 0, done.stdout + done.stderr
    await asyncio.sleep(0.5)
    assert len(snow.incidents()) == 1
    assert [r["method"] for r in snow.store.requests].count("POST") == 1
    assert await redis.xlen(keys.DLQ) == 0


async def test_real_puppet_with_a_wrong_password_is_refused(snow: Snow, make_bridge: Any, tmp_path: Path) -> None:
    """A reporturl with the wrong password gets a 401, which Puppet logs as an unsubmitted report."""
    binary = require("puppet")
    bridge = await make_bridge(bridge_config(snow.url))
    puppet = Puppet(binary, tmp_path / "puppet", bridge.port)
    conf = puppet.dir / "conf" / "puppet.conf"
    conf.write_text(conf.read_text().replace(SECRET, "wrong"))
    done = await puppet.apply(manifest(puppet.dir / "target", broken=True))
    assert "Unable to submit report" in done.stdout + done.stderr and "[401]" in done.stdout + done.stderr
    await asyncio.sleep(0.5)
    assert snow.incidents() == []
