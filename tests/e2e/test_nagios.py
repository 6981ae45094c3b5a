"""The real Nagios Core (Debian's nagios4-core) notifying the bridge through the shipped snippets."""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.admin.incidents import show_incident
from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.core.sync import MARKER
from tests.conftest import ROOT, Snow, eventually, require

pytestmark = pytest.mark.e2e
TOKEN = "nagios-bridge-token"
SNIPPETS = ROOT / "deploy" / "snippets" / "nagios"
# What the shipped snippet points at; the test replaces exactly these, as an admin would.
SNIPPET_BASE_URL = "https://bridge.example.com"
SNIPPET_SCRIPT = "/usr/local/libexec/nagios/itsm-notify.sh"
# Debian's sample nagios.cfg (/etc/nagios4/nagios.cfg); Nagios' own defaults are empty.
DEBIAN_ILLEGAL = "illegal_object_name_chars=`~!$%^&*|'\"<>?,()=\nillegal_macro_output_chars=`~$&|'\"<>\n"
OUTPUT = 'CRITICAL - "GET /" refused & retried 3x, see C:\\Temp'


@pytest.fixture
def nagios_binary() -> str:
    require("jq")  # the snippet's script builds the JSON with jq and posts it with curl
    require("curl")
    return require("nagios4")


def main_cfg(d: Path, extra: str) -> str:
    """A private instance of Debian's nagios4 (headless: no CGI, no web server) with test-sized intervals."""
    return f"""\
log_file={d}/var/nagios.log
cfg_file={d}/objects.cfg
cfg_file={d}/itsm-bridge.cfg
object_cache_file={d}/var/objects.cache
precached_object_file={d}/var/objects.precache
resource_file={d}/resource.cfg
status_file={d}/var/status.dat
nagios_user={pwd.getpwuid(os.getuid()).pw_name}
nagios_group={grp.getgrgid(os.getgid()).gr_name}
check_external_commands=1
command_file={d}/rw/nagios.cmd
query_socket={d}/rw/nagios.qh
lock_file={d}/var/nagios.lock
temp_file={d}/var/nagios.tmp
temp_path={d}/var
check_result_path={d}/spool
check_result_reaper_frequency=1
state_retention_file={d}/var/retention.dat
retain_state_information=0
use_syslog=0
enable_notifications=1
accept_passive_service_checks=1
accept_passive_host_checks=1
interval_length=1
enable_environment_macros=1
{extra}"""


def objects_cfg(service: str) -> str:
    """A timeperiod, a host and one passive service whose notifications go to the snippet's contact."""
    week = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
    days = "".join(f"    {day} 00:00-24:00\n" for day in week)
    return f"""\
define timeperiod {{
    timeperiod_name 24x7
    alias 24 Hours A Day, 7 Days A Week
{days}}}

define command {{
    command_name check_passive
    command_line /bin/true
}}

define host {{
    host_name web-01
    alias Web server 01
    address 127.0.0.1
    check_command check_passive
    active_checks_enabled 0
    passive_checks_enabled 1
    max_check_attempts 1
    check_period 24x7
    notification_period 24x7
    notification_interval 0
    contacts itsm-bridge
}}

define service {{
    host_name web-01
    service_description {service}
    check_command check_passive
    active_checks_enabled 0
    passive_checks_enabled 1
    max_check_attempts 1
    check_interval 1
    retry_interval 1
    check_period 24x7
    notification_period 24x7
    notification_interval 1
    contacts itsm-bridge
}}
"""


def install_snippets(d: Path, bridge_port: int) -> None:
    """The shipped command/contact definitions and script, with only the URL and install path replaced."""
    cfg = (SNIPPETS / "itsm-bridge.cfg").read_text()
    assert SNIPPET_BASE_URL in cfg and SNIPPET_SCRIPT in cfg, "the snippet's placeholders changed"
    script = d / "libexec" / "itsm-notify.sh"
    script.parent.mkdir()
    shutil.copyfile(SNIPPETS / "itsm-notify.sh", script)
    script.chmod(0o755)
    cfg = cfg.replace(SNIPPET_BASE_URL, f"http://127.0.0.1:{bridge_port}").replace(SNIPPET_SCRIPT, str(script))
    (d / "itsm-bridge.cfg").write_text(cfg)
    header = d / "itsm-bridge.header"
    header.write_text(f"Authorization: Bearer {TOKEN}\n")
    header.chmod(0o400)


class Nagios:
    """A running private Nagios and its external command pipe."""

    def __init__(self, d: Path, proc: subprocess.Popen[bytes]) -> None:
        self.dir, self.proc = d, proc

    def log(self) -> str:
        path = self.dir / "var" / "nagios.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def notifications(self, state: str) -> list[int]:
        """The times of the SERVICE NOTIFICATION lines for `state`."""
        line = re.compile(rf"^\[(\d+)\] SERVICE NOTIFICATION: itsm-bridge;web-01;[^;]*;{state};", re.M)
        return [int(t) for t in line.findall(self.log())]

    def command(self, text: str) -> bool:
        """Write one external command; False while no reader has the pipe open yet."""
        try:
            fd = os.open(self.dir / "rw" / "nagios.cmd", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENXIO):
                return False
            raise
        try:
            os.write(fd, f"[{int(time.time())}] {text}\n".encode())
        finally:
            os.close(fd)
        return True

    def service_result(self, service: str, code: int, output: str) -> bool:
        return self.command(f"PROCESS_SERVICE_CHECK_RESULT;web-01;{service};{code};{output}")

    async def wait(self, check: Any, what: str, within: float = 20.0) -> Any:
        """`eventually`, failing with Nagios' log and the notification script's output."""
        try:
            return await eventually(check, within=within)
        except AssertionError as exc:
            message = f"waiting for {what}: {exc}\n--- nagios.log\n{self.log()}"
            if self.proc.poll() is not None:
                out = (self.dir / "var" / "nagios.out").read_text(errors="replace")
                message += f"\n--- nagios exited with {self.proc.returncode}:\n{out}"
            raise AssertionError(message) from None

    def failed_notifications(self) -> list[str]:
        """Nagios logs a notification command that exits non-zero (curl --fail on a 4xx/5xx) as wproc lines."""
        return [line for line in self.log().splitlines() if "wproc:" in line and "NOTIFY job" in line]


@pytest.fixture
def start_nagios(nagios_binary: str, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(bridge_port: int, service: str, extra: str) -> Nagios:
        d = tmp_path / "nagios"
        for sub in ("var", "spool", "rw"):
            (d / sub).mkdir(parents=True)
        (d / "nagios.cfg").write_text(main_cfg(d, extra))
        (d / "resource.cfg").write_text("$USER1$=/usr/lib/nagios/plugins\n")
        (d / "objects.cfg").write_text(objects_cfg(service))
        install_snippets(d, bridge_port)
        check = subprocess.run([nagios_binary, "-v", str(d / "nagios.cfg")], capture_output=True, text=True)
        assert check.returncode == 0 and "Total Errors:   0" in check.stdout, check.stdout + check.stderr
        # The token file is not at the script's default /etc/nagios/itsm-bridge.header: point the script's
        # ITSM_AUTH_FILE at it through Nagios' environment (a systemd Environment= line in production),
        # which Nagios passes on to its notification commands.
        env = {**os.environ, "ITSM_AUTH_FILE": str(d / "itsm-bridge.header")}
        out = (d / "var" / "nagios.out").open("wb")
        procs.append(subprocess.Popen([nagios_binary, str(d / "nagios.cfg")], stdout=out, stderr=out, env=env))
        out.close()
        return Nagios(d, procs[-1])

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bridge_config(desk_url: str) -> MappingConfig:
    """One nagios source named as in the snippet's URL, one route to the simulator with a 300ms hold-down."""
    return MappingConfig.model_validate(
        {
            "sources": {"nagios-main": {"kind": "nagios", "secret": TOKEN}},
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "s3cret"}},
            "routes": [
                {
                    "name": "nagios",
                    "desk": "snow",
                    "sources": ["nagios-main"],
                    "lifecycle": {"resolve_after": "300ms", "reopen_within": "5s"},
                    "ticket": {
                        "fields": {
                            "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
                            "description": "host={{ labels.host }}\nservice={{ labels.service }}\n{{ summary }}",
                        }
                    },
                }
            ],
        }
    )


async def audit(redis: aioredis.Redis, correlation_id: str) -> list[dict[str, Any]]:
    shown = await show_incident(redis, correlation_id)
    return list(shown["audit"]) if shown else []


async def repeats(redis: aioredis.Redis, correlation_id: str) -> dict[str, int]:
    shown = await show_incident(redis, correlation_id)
    return dict(shown["repeats"]) if shown else {}


@pytest.mark.parametrize(
    ("service", "extra"),
    [pytest.param("Shop's HTTP", "", id="nagios-defaults"), pytest.param("HTTP", DEBIAN_ILLEGAL, id="debian-sample")],
)
async def test_real_nagios_opens_and_resolves_an_incident(
    snow: Snow, make_bridge: Any, start_nagios: Any, redis: aioredis.Redis, service: str, extra: str
) -> None:
    """A passive CRITICAL and its re-notification open one incident; the OK result resolves it."""
    bridge = await make_bridge(bridge_config(snow.url))
    nagios = start_nagios(bridge.port, service, extra)
    await nagios.wait(lambda: "Successfully launched command file worker" in nagios.log(), "Nagios to start")
    # With the Debian sample the illegal characters are in force (no warning about their absence), and the
    # output below still arrives intact: Nagios strips them from macros pasted into command lines, not from
    # the NAGIOS_* environment the snippet's script reads.
    assert ("Nothing specified for illegal_macro_output_chars" in nagios.log()) == (not extra)

    await nagios.wait(lambda: nagios.service_result(service, 2, OUTPUT), "a reader on the command pipe")
    await nagios.wait(lambda: snow.incidents(), "the incident")
    first = nagios.notifications("CRITICAL")
    assert len(first) == 1, nagios.log()
    ticket = snow.incidents()[0]

    # Past notification_interval (1s), another CRITICAL result makes Nagios notify again: no second ticket.
    # Nagios runs notifications in parallel workers, so a RECOVERY sent right away may overtake this repeat
    # (the bridge then drops the repeat as stale); wait until the bridge has seen it to keep the order fixed.
    await asyncio.sleep(max(0.0, first[0] + 2 - time.time()))
    assert nagios.service_result(service, 2, OUTPUT)

    async def repeat_seen() -> bool:
        return (await repeats(redis, ticket["correlation_id"])).get("repeat", 0) >= 1

    await nagios.wait(repeat_seen, "the bridge to see the re-notification")
    assert len(nagios.notifications("CRITICAL")) == 2

    # An operator acknowledges the problem in Nagios (sticky, notify, not persistent): its ACKNOWLEDGEMENT
    # notification, sent with the problem's start unchanged, becomes a work note with author and comment.
    assert nagios.command(f"ACKNOWLEDGE_SVC_PROBLEM;web-01;{service};2;1;0;jdoe;Looking into it - INC42")
    await nagios.wait(lambda: snow.notes(ticket), "the acknowledgement's work note")
    assert [n.removesuffix(f"\n\n{MARKER}") for n in snow.notes(ticket)] == [  # the desk's marker line
        f"[acknowledged] {service} on web-01 (critical): Acknowledged by jdoe: Looking into it - INC42"
    ]
    assert len(nagios.notifications(r"ACKNOWLEDGEMENT \(CRITICAL\)")) == 1

    assert nagios.service_result(service, 0, "OK - 200 in 0.01s")
    await nagios.wait(lambda: snow.incidents()[0]["state"] == "6", "the incident to resolve")
    assert len(nagios.notifications("OK")) == 1

    incidents = snow.incidents()
    assert len(incidents) == 1, incidents
    ticket = incidents[0]
    assert ticket["short_description"] == f"[CRITICAL] {service} on web-01"
    assert ticket["description"] == f"host=web-01\nservice={service}\n{OUTPUT}"
    assert ticket["close_code"] == "Solution provided"
    assert [r["method"] for r in snow.store.requests].count("POST") == 1
    assert [e["decision"] for e in await audit(redis, ticket["correlation_id"]) if e["decision"] != "DESK"] == [
        "RESOLVE",
        "RESOLVE_PENDING",
        "NOTE",
        "OPEN",
    ]
    assert await repeats(redis, ticket["correlation_id"]) == {"repeat": 1}
    assert len(snow.notes(ticket)) == 1
    assert await redis.xlen(keys.DLQ) == 0
    assert nagios.failed_notifications() == []
