"""Secrets are never stored: with secrets planted in every desk's URL, query, headers, body and
credentials, in the Opsgenie door's API key and a heartbeat's token, and a desk that rejects every call
and repeats back all it was sent, none of them is in Redis, in the log, in an admin API answer or in
`bridge dlq list`."""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from bridge.core.config import load
from bridge.core.secrets import MASK, Masker
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import FIXTURES, eventually, post, start_app
from tests.running import TOKEN, LogTail, call, cli, spawn, wait_ready

SECRETS = {
    "AM_TOKEN": "am-tok-4f1d9a7c2b",
    "SNOW_PASSWORD": "snow-pw-8c1e5a92",
    "JIRA_TOKEN": "jira-api-7d3b0f61",
    "REMEDY_PASSWORD": "remedy-pw-2a9c7e4b",
    "HOOK_TOKEN": "hook-bearer-5e8a1c3d",
    "HOOK_HEADER": "hook-header-9b2f6d0a",
    "HOOK_KEY": "hook-query-3c7e9a15",
    "HOOK_BODY": "hook-body-6f0b4d82",
    "HOOK_PATH": "T0PATHb1x9secret41",
}
USERS = {"SNOW_PASSWORD": "bridge", "JIRA_TOKEN": "bot@example.com", "REMEDY_PASSWORD": "bridge"}


def forms(secret: str, user: str = "") -> list[str]:
    """A secret as it may leak: as it is, and in a Basic header with its user."""
    found = [secret]
    if user:
        found.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return found


LEAKS = [form for name, secret in SECRETS.items() for form in forms(secret, USERS.get(name, ""))]


async def echo(request: web.Request) -> web.Response:
    """A desk that refuses everything, repeating the request back: path, query, headers, body."""
    said = {
        "url": str(request.url),
        "headers": {str(k): v for k, v in request.headers.items()},
        "body": (await request.read()).decode(errors="replace"),
    }
    text = orjson.dumps(said).decode()
    body = {"error": {"message": f"rejected: {text}", "detail": text}, "errorMessages": [text], "message": text}
    return web.json_response(body, status=400)


def mapping(desk_url: str) -> dict[str, Any]:
    fields = {"summary": "{{ name }}", "short_description": "{{ name }}", "Description": "{{ name }}"}
    routes = [
        {"name": f"to-{desk}", "desk": desk, "continue": True, "correlate": {"by": ["{{ labels.alertname }}"]},
         "ticket": {"fields": fields}}
        for desk in ("snow", "jira", "remedy", "hook")
    ]  # fmt: skip
    hook_action = {
        "method": "POST",
        "path": "/tickets",
        "params": {"api_key": "${HOOK_KEY}", "team": "ops"},
        "body": {"title": "{{ fields.summary }}", "key": "${HOOK_BODY}", "id": "{{ correlation_id }}"},
        "id": "ticket.id",
    }
    return {
        "sources": {"alertmanager": {"kind": "alertmanager", "secret": "${AM_TOKEN}"}},
        "desks": {
            "snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "${SNOW_PASSWORD}"},
            "jira": {
                "kind": "jira",
                "url": desk_url,
                "email": "bot@example.com",
                "api_token": "${JIRA_TOKEN}",
                "project": "OPS",
                "api_type": "cloud",
            },
            "remedy": {"kind": "remedy", "url": desk_url, "user": "bridge", "password": "${REMEDY_PASSWORD}"},
            "hook": {
                "kind": "webhook",
                "url": desk_url + "/hooks/${HOOK_PATH}",
                "token": "${HOOK_TOKEN}",
                "headers": {"X-Api-Key": "${HOOK_HEADER}"},
                "open": hook_action,
                "note": hook_action,
                "resolve": hook_action,
                "reopen": hook_action,
            },
        },
        "routes": routes,
    }


async def everything_in(redis: aioredis.Redis) -> bytes:
    """Every key and value in Redis, as one blob to search."""
    out: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        out.append(key)
        if kind == "string":
            out.append(await redis.get(key) or b"")
        elif kind == "hash":
            out.extend(b"%s=%s" % kv for kv in (await redis.hgetall(key)).items())
        elif kind == "list":
            out.extend(await redis.lrange(key, 0, -1))
        elif kind == "set":
            out.extend(await redis.smembers(key))
        elif kind == "zset":
            out.extend(m for m, _ in await redis.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for _, entry in await redis.xrange(key):
                out.extend(b"%s=%s" % kv for kv in entry.items())
    return b"\n".join(out)


def assert_no_secret(where: str, text: str | bytes) -> None:
    blob = text if isinstance(text, str) else text.decode(errors="replace")
    leaked = [secret for secret in LEAKS if secret in blob]
    assert not leaked, f"{where} holds secrets: {[s[:6] + '...' for s in leaked]}"


async def test_secrets_planted_in_every_desk_are_in_no_store_log_or_answer(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Four desks refuse every call and echo it; dead letters, audit, log, API and CLI hold none of the secrets."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner, desk_url = await start_app(app)
    path = tmp_path / "mapping.yaml"
    path.write_bytes(orjson.dumps(mapping(desk_url)))
    port = free_port()
    proc = spawn(path, redis_server.url, port, BRIDGE_ADMIN_TOKEN=TOKEN, BRIDGE_ATTEMPTS="1", **SECRETS)
    tail = LogTail(proc)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        await wait_ready(port)
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        bad = {**alert(), "labels": {"alertname": SECRETS["HOOK_BODY"], "x": {"y": 1}}}  # refused; it quotes one
        body = group(alert(alertname="DiskFull"), bad)
        status, answer = await post(url, body, Authorization=f"Bearer {SECRETS['AM_TOKEN']}")
        assert (status, answer["accepted"], answer["rejected"]) == (202, 1, 1), answer

        async def letters() -> list[dict[str, Any]]:
            return [e for e in (await call("GET", api + "/dlq"))[1] if e["kind"] == "desk_rejected"]

        found = await eventually(lambda: _four(letters()), within=30)
        incidents = (await call("GET", api + "/incidents"))[1]
        shown = [(await call("GET", api + f"/incidents/{i['id']}"))[1] for i in incidents]
        listed = (await call("GET", api + "/dlq"))[1]
        printed = (await cli("dlq", "list", BRIDGE_REDIS_URL=redis_server.url)).stdout
        stored = await everything_in(redis)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        tail.join()
        await runner.cleanup()

    assert {letter["error"]["desk"] for letter in found} == {"snow", "jira", "remedy", "hook"}, found
    hook = next(letter for letter in found if letter["error"]["desk"] == "hook")
    assert hook["error"]["request"]["url"].endswith(f"{MASK}/tickets?api_key={MASK}&team=ops"), hook  # masked
    assert hook["error"]["request"]["json"]["key"] == MASK
    assert len(incidents) == 4 and all(i["audit"] for i in shown)
    assert_no_secret("Redis", stored)
    assert_no_secret("the log", tail.text())
    assert_no_secret("GET /api/v1/dlq", orjson.dumps(listed))
    assert_no_secret("GET /api/v1/incidents/{id}", orjson.dumps(shown))
    assert_no_secret("bridge dlq list", printed)


async def _four(letters: Any) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await letters
    return found if len({letter["error"]["desk"] for letter in found}) == 4 else None


def test_the_masker_masks_secrets_in_every_form_and_secret_query_parameters() -> None:
    """As is, URL-encoded and JSON-escaped; api_key/token/sig parameters and Bearer/Basic credentials by pattern."""
    masker = Masker(['p@ss w/rd"x', "abc"])  # the second is too short to search for
    text = 'a=p@ss w/rd"x b=p%40ss%20w%2Frd%22x c=p%40ss+w%2Frd%22x d="p@ss w/rd\\"x" abc'
    assert masker.text(text) == 'a=*** b=*** c=*** d="***" abc'
    url = "https://x/y?api_key=K1&team=ops&sig=abc&access_token=T"
    assert masker.text(url) == "https://x/y?api_key=***&team=ops&sig=***&access_token=***"
    assert masker.text("Authorization: Bearer eyJabc.def") == "Authorization: Bearer ***"
    value = {"password": "hunter2", "tries": 3, "nested": [{"key": "OPS-1", "note": 'p@ss w/rd"x'}]}
    assert masker.value(value) == {"password": MASK, "tries": 3, "nested": [{"key": "OPS-1", "note": MASK}]}


def test_the_secrets_of_every_section_are_known(tmp_path: Path) -> None:
    """SecretStr values of sources, desks and heartbeats, and every value they take from the environment."""
    path = tmp_path / "mapping.yaml"
    path.write_bytes(
        orjson.dumps(
            {
                "sources": {"am": {"kind": "alertmanager", "secret": "${SOURCE_TOKEN}"}},
                "desks": {"snow": {"kind": "servicenow", "url": "https://snow.example.com", "user": "${SNOW_USER}",
                                   "password": "desk-password-1"}},
                "routes": [{"name": "r", "desk": "snow"}],
                "heartbeats": {"prod": {"interval": "1m", "desk": "snow", "secret": "${BEAT_TOKEN}"}},
            }
        )
    )  # fmt: skip
    env = {"SOURCE_TOKEN": "source-token-1", "SNOW_USER": "integration-user", "BEAT_TOKEN": "beat-token-1"}
    found = load([path], env).secrets()
    basic = base64.b64encode(b"integration-user:desk-password-1").decode()
    assert {"source-token-1", "desk-password-1", "beat-token-1", "integration-user", basic} <= found


DOOR_SECRETS = {
    "OG_KEY": "og-genie-key-0d5f2b7e",
    "NAG_KEY": "nagios-api-key-7c4e1a90",
    "BEAT_TOKEN": "beat-token-3a8f6c21",
    "SNOW_PASSWORD": SECRETS["SNOW_PASSWORD"],
}
DOOR_LEAKS = [*DOOR_SECRETS.values(), *forms(SECRETS["SNOW_PASSWORD"], "bridge")[1:]]


def door_mapping(desk_url: str) -> dict[str, Any]:
    """An Opsgenie source, a nagios source for Opsgenie's nagios script, a heartbeat with a token; the
    echoing desk, so that every ticket is a dead letter holding what the bridge sent."""
    fields = {"short_description": "{{ name }} {{ summary }}", "description": "{{ description }}"}
    return {
        "sources": {
            "og": {"kind": "opsgenie", "secret": "${OG_KEY}"},
            "nag": {"kind": "nagios", "secret": "${NAG_KEY}"},
        },
        "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "${SNOW_PASSWORD}"}},
        "routes": [
            {"name": "all", "desk": "snow", "correlate": {"by": ["{{ source }}"]}, "ticket": {"fields": fields}}
        ],
        "heartbeats": {
            "beat": {"interval": "1s", "grace": "1s", "desk": "snow", "secret": "${BEAT_TOKEN}", "key": ["cluster"],
                     "ticket": {"fields": fields}},
        },
    }  # fmt: skip


def assert_no_door_secret(where: str, text: str | bytes) -> None:
    blob = text if isinstance(text, str) else text.decode(errors="replace")
    leaked = [secret for secret in DOOR_LEAKS if secret in blob]
    assert not leaked, f"{where} holds secrets: {[s[:6] + '...' for s in leaked]}"


async def test_secrets_of_the_opsgenie_door_and_heartbeats_are_in_no_store_log_or_answer(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The Opsgenie API key (header, query, the nagios script's body), a heartbeat's token (header, query):
    none in Redis, the log, the admin API, `bridge dlq list` or `bridge heartbeats list`."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner, desk_url = await start_app(app)
    path = tmp_path / "mapping.yaml"
    path.write_bytes(orjson.dumps(door_mapping(desk_url)))
    port = free_port()
    proc = spawn(path, redis_server.url, port, BRIDGE_ADMIN_TOKEN=TOKEN, BRIDGE_ATTEMPTS="1", **DOOR_SECRETS)
    tail = LogTail(proc)
    base, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api/v1"
    genie = f"GenieKey {DOOR_SECRETS['OG_KEY']}"
    try:
        await wait_ready(port)
        create = {"message": "DiskFull on db-1", "alias": "db-1-disk", "description": "df says 100%"}
        url = f"{base}/opsgenie/og/v2/alerts?apiKey={DOOR_SECRETS['OG_KEY']}"  # some clients add it to the URL
        assert (await post(url, create, Authorization=genie))[0] == 202
        assert (await post(f"{base}/opsgenie/og/v2/alerts", create, Authorization="GenieKey wrong-key"))[0] == 401
        note = {"note": "looking", "user": "alice"}
        url = f"{base}/opsgenie/og/v2/alerts/db-1-disk/notes?identifierType=alias"
        assert (await post(url, note, Authorization=genie))[0] == 202
        script = orjson.loads((FIXTURES / "nagios_service_problem.json").read_bytes())
        status, _ = await post(f"{base}/opsgenie/nag/v1/json/nagios", {**script, "apiKey": DOOR_SECRETS["NAG_KEY"]})
        assert status == 200
        url = f"{base}/heartbeat/beat?cluster=eu&token={DOOR_SECRETS['BEAT_TOKEN']}"
        status, answer, _ = await call("GET", url, token=DOOR_SECRETS["BEAT_TOKEN"])
        assert (status, answer["key"]) == (202, {"cluster": "eu"}), answer
        assert (await post(f"{base}/heartbeat/beat?cluster=us", {}, Authorization="Bearer wrong"))[0] == 401
        status, _, _ = await call("GET", f"{base}/opsgenie/og/v2/heartbeats/beat/ping?cluster=us", token=None)
        assert status == 401  # no key
        async with aiohttp.ClientSession() as session:
            ping = f"{base}/opsgenie/og/v2/heartbeats/beat/ping?cluster=us"
            async with session.get(ping, headers={"Authorization": genie}) as resp:
                assert resp.status == 202, await resp.text()

        async def letters() -> list[dict[str, Any]] | None:
            found = [e for e in (await call("GET", api + "/dlq"))[1] if e["kind"] == "desk_rejected"]
            # the Opsgenie alert, the nagios one, and both heartbeats' "no heartbeat" tickets: four incidents (a
            # note on the Opsgenie alert's incident is a letter too, so four letters alone are not all of them)
            opened = (await call("GET", api + "/incidents"))[1]
            return found if len(found) >= 4 and len(opened) >= 4 else None

        await eventually(letters, within=30)
        incidents = (await call("GET", api + "/incidents"))[1]
        shown = [(await call("GET", api + f"/incidents/{i['id']}"))[1] for i in incidents]
        listed = (await call("GET", api + "/dlq"))[1]
        printed = (await cli("dlq", "list", BRIDGE_REDIS_URL=redis_server.url)).stdout
        beats = (await cli("heartbeats", "list", BRIDGE_REDIS_URL=redis_server.url)).stdout
        stored = await everything_in(redis)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        tail.join()
        await runner.cleanup()

    assert len(incidents) >= 4 and all(i["audit"] for i in shown), incidents
    assert b"eu" in beats and b"us" in beats, beats
    assert b"db-1-disk" in stored and b"web-01" in stored  # what was sent is there, without the keys
    assert_no_door_secret("Redis", stored)
    assert_no_door_secret("the log", tail.text())
    assert_no_door_secret("GET /api/v1/dlq", orjson.dumps(listed))
    assert_no_door_secret("GET /api/v1/incidents/{id}", orjson.dumps(shown))
    assert_no_door_secret("bridge dlq list", printed)
    assert_no_door_secret("bridge heartbeats list", beats)
