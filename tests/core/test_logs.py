"""Logs: JSON lines off a terminal, with request, source and incident bound, and never a secret."""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.admin import api
from bridge.core import logs
from bridge.core.logs import MASK, redact
from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.runtime.http import errors_as_json
from tests.amp import alert, group
from tests.conftest import Snow, eventually, post, start_app
from tests.running import call, spawn, wait_ready, write_mapping

SOURCE_TOKEN = "am-s3cret-token-7f2b"
ADMIN_TOKEN = "adm-s3cret-token-91c4"
DESK_PASSWORD = "s3cret"  # the simulator's


async def test_logs_are_json_with_context_and_never_hold_a_secret(
    snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A real bridge logs JSON events with request, source, incident and identity, and never a token or password."""
    path = write_mapping(tmp_path / "mapping.yaml", snow)
    data = orjson.loads(path.read_bytes())
    data["sources"]["alertmanager"]["secret"] = "${AM_TOKEN}"  # secrets come from the environment
    path.write_bytes(orjson.dumps(data))
    port = free_port()
    env = {"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN, "AM_TOKEN": SOURCE_TOKEN, "BRIDGE_LOG_LEVEL": "debug"}
    proc = spawn(path, redis_server.url, port, **env)
    try:
        await wait_ready(port)
        url = f"http://127.0.0.1:{port}"
        assert (await post(url + "/webhook/alertmanager", group(alert()), Authorization="Bearer nope"))[0] == 401
        status, _ = await post(url + "/webhook/alertmanager", group(alert()), Authorization=f"Bearer {SOURCE_TOKEN}")
        assert status == 202
        await eventually(lambda: snow.incidents(), within=10)
        assert (await call("GET", url + api.PREFIX + "/incidents", token=SOURCE_TOKEN))[0] == 401
        listed = (await call("GET", url + api.PREFIX + "/incidents", token=ADMIN_TOKEN))[1]
        resolve = url + api.PREFIX + f"/incidents/{listed[0]['id']}/resolve"
        assert (await call("POST", resolve, token=ADMIN_TOKEN, body={"note": "disk replaced"}))[0] == 202
        await eventually(lambda: snow.incidents()[0]["state"] == "6", within=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        log = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()

    events = [orjson.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    names = {e["event"] for e in events}
    assert {"bridge_started", "alerts_accepted", "ticket_opened", "bridge_stopped"} <= names, names
    accepted = next(e for e in events if e["event"] == "alerts_accepted")
    assert accepted["source"] == "alertmanager" and accepted["request_id"]
    refused = next(e for e in events if e["event"] == "request_refused")
    assert refused["request_id"] and refused["status"] == 401
    opened = next(e for e in events if e["event"] == "ticket_opened")
    assert opened["incident"] == listed[0]["id"] and opened["identity"], opened

    basic = base64.b64encode(f"bridge:{DESK_PASSWORD}".encode()).decode()
    for secret in (SOURCE_TOKEN, ADMIN_TOKEN, basic, f"bridge:{DESK_PASSWORD}", f'"{DESK_PASSWORD}"'):
        assert secret not in log, f"a secret is in the log: {secret[:4]}..."


async def test_a_request_s_log_context_ends_with_the_request() -> None:
    """Each request's log lines carry its id (the sender's X-Request-Id, else a new one, the same on
    each line) and its source; the next request on the same kept-alive connection (the same server
    task) carries neither."""

    def logged() -> dict[str, Any]:  # what a line logged here gets from the log context
        return dict(logs.merge_lazy(None, "info", structlog.contextvars.merge_contextvars(None, "info", {})))

    async def context(request: web.Request) -> web.Response:
        port = request.transport.get_extra_info("peername")[1] if request.transport else 0
        first = logged()
        assert logged() == first  # a second line of the same request: the same id
        return web.json_response({**first, "port": port})

    app = web.Application(middlewares=[errors_as_json])
    app.router.add_post("/webhook/{source}", context)
    app.router.add_get("/healthz", context)
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/webhook/nagios", headers={"X-Request-Id": "from-sender"}) as resp:
                first = await resp.json()
            async with session.get(url + "/healthz") as resp:
                second = await resp.json()
            async with session.get(url + "/healthz") as resp:
                third = await resp.json()
    finally:
        await runner.cleanup()
    assert first.pop("port") == second.pop("port") == third.pop("port")  # one connection
    assert first == {"request_id": "from-sender", "source": "nagios"}
    assert set(second) == set(third) == {"request_id"}
    assert len({first["request_id"], second["request_id"], third["request_id"]}) == 3


def test_bound_restores_what_was_bound_before() -> None:
    """`logs.bound` binds for a block and restores the values (or their absence) as they were."""
    structlog.contextvars.clear_contextvars()
    with logs.bound(incident="outer", request_id="r1"):
        with logs.bound(incident="inner", identity="a1"):
            inner = {"incident": "inner", "identity": "a1", "request_id": "r1"}
            assert structlog.contextvars.get_contextvars() == inner
        assert structlog.contextvars.get_contextvars() == {"incident": "outer", "request_id": "r1"}
        try:
            with logs.bound(incident="failing"):
                raise ValueError("boom")
        except ValueError:
            pass
        assert structlog.contextvars.get_contextvars() == {"incident": "outer", "request_id": "r1"}
    assert structlog.contextvars.get_contextvars() == {}


def test_redact_masks_credentials_in_any_field() -> None:
    """Credential-named keys, Authorization values, URL passwords and ?token= are masked, counts are not."""
    event: dict[str, Any] = {
        "event": "x",
        "password": "hunter2",
        "headers": {"Authorization": "Basic YWRtaW46aHVudGVyMg==", "Accept": "application/json"},
        "error": "POST failed: Bearer abcdef123456 rejected",
        "url": "redis://:hunter2@redis:6379/0",
        "query": "https://splunk/hook?token=hunter2&x=1",
        "tokens": 3,
        "items": [{"api_key": "k-123"}],
    }
    out = redact(None, "info", dict(event))
    assert out["password"] == MASK and out["headers"]["Authorization"] == MASK
    assert out["headers"]["Accept"] == "application/json"
    assert out["error"] == f"POST failed: Bearer {MASK} rejected"
    assert out["url"] == f"redis://:{MASK}@redis:6379/0"
    assert out["query"] == f"https://splunk/hook?token={MASK}&x=1"
    assert out["tokens"] == 3 and out["items"] == [{"api_key": MASK}]
    assert "hunter2" not in orjson.dumps(out).decode()


PIECES = st.sampled_from(["Bearer ", "basic ", "https://u:", "@h", "?token=", "&password=", "SECRET=", "api_key=",
                          "passwd=", " ", "abcd1234", "x", "=", "://", "\u017fecret=", "K"])  # fmt: skip


@settings(max_examples=500)
@given(st.lists(PIECES | st.text(max_size=6), max_size=8).map("".join))
def test_scrub_skips_only_text_no_pattern_could_change(text: str) -> None:
    """The one-search pre-check leaves text as it is only when none of the patterns would change it."""
    slow = text
    for pattern, replacement in logs._IN_TEXT:
        slow = pattern.sub(replacement, slow)
    assert logs._scrub(text) == slow


def test_an_event_is_one_line_whatever_its_text_holds() -> None:
    """U+2028, U+2029 and NEL in a logged value (alert text, a request path) are escaped: every reader of
    lines, str.splitlines included, sees one line per event, and its JSON the same text."""
    import subprocess
    import sys

    text = "/opsgenie/x/é\u2028y\x85z\u2029"
    script = (
        "import structlog; from bridge.core import logs; logs.configure(json=True); "
        f"structlog.get_logger('t').info('request_refused', path={text!r})"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, timeout=30)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert orjson.loads(lines[0])["path"] == text
