"""The admin API: every endpoint, its auth, and the OpenAPI document checked against the running app."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from openapi_spec_validator import validate

from bridge.admin import api
from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.running import TOKEN, base_url, call, cli, webhook_url

API_ROUTES = [(m, p) for m, p, _ in api.ROUTES if p != "/openapi.json"]


def concrete(path: str) -> str:
    return api.PREFIX + path.replace("{id}", "1-0")


async def test_admin_api_is_off_without_a_token(snow: Snow, make_bridge: Any) -> None:
    """With no BRIDGE_ADMIN_TOKEN every admin endpoint answers 403 saying how to turn the API on."""
    bridge = await make_bridge(mapping(snow.url))
    for method, path in API_ROUTES:
        status, body, _ = await call(method, base_url(bridge) + concrete(path), token="anything")
        assert status == 403, (method, path, status)
        assert body["error"] == "admin_api_disabled" and "BRIDGE_ADMIN_TOKEN" in body["detail"]


async def test_every_admin_endpoint_requires_the_token(snow: Snow, make_bridge: Any) -> None:
    """Without the token, or with a wrong one, every admin endpoint answers 401 with WWW-Authenticate."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    for method, path in API_ROUTES:
        for token in (None, "wrong-token", TOKEN + "x"):
            status, body, headers = await call(method, base_url(bridge) + concrete(path), token=token)
            assert status == 401, (method, path, token, status)
            assert body["error"] == "unauthorized"
            assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await call("GET", base_url(bridge) + api.PREFIX + "/incidents")
    assert status == 200


async def test_incidents_list_show_and_resolve_by_hand(snow: Snow, make_bridge: Any) -> None:
    """List filters by state and route; show has members and audit; a hand resolve reaches the desk once."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    url = base_url(bridge) + api.PREFIX
    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sda1")))
    await eventually(lambda: snow.incidents())

    status, listed, _ = await call("GET", url + "/incidents?state=open")
    assert status == 200 and len(listed) == 1
    incident = listed[0]
    assert incident["ticket"]["display"] == snow.incidents()[0]["number"]
    assert (await call("GET", url + "/incidents?state=resolved"))[1] == []
    assert (await call("GET", url + "/incidents?route=other"))[1] == []
    assert (await call("GET", url + "/incidents?state=bogus"))[0] == 400
    assert (await call("GET", url + "/incidents?limit=0"))[0] == 400

    status, shown, _ = await call("GET", url + "/incidents/" + incident["id"])
    assert status == 200 and len(shown["members"]) == 2
    assert {m["status"] for m in shown["members"].values()} == {"firing"}
    assert any(entry["decision"] == "OPEN" for entry in shown["audit"])
    assert (await call("GET", url + "/incidents/prometheus:nothing:here"))[0] == 404

    body = {"note": "disk replaced", "by": "alice"}
    status, answer, _ = await call("POST", url + f"/incidents/{incident['id']}/resolve", body=body)
    assert (status, answer["outcome"]) == (202, "RESOLVE")
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=10)
    assert any("resolved by hand by alice: disk replaced" in n for n in snow.notes(snow.incidents()[0]))
    shown = (await call("GET", url + "/incidents/" + incident["id"]))[1]
    assert (shown["state"], shown["resolved_by"]) == ("resolved", "alice")

    # Alertmanager repeating the same firing does not undo the hand resolve; again is a conflict.
    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sda1")))
    await asyncio.sleep(0.5)
    assert snow.incidents()[0]["state"] == "6" and len(snow.incidents()) == 1
    assert (await call("POST", url + f"/incidents/{incident['id']}/resolve"))[0] == 409
    assert (await call("POST", url + "/incidents/prometheus:nothing:here/resolve"))[0] == 404
    assert (await call("POST", url + f"/incidents/{incident['id']}/resolve", body={"bogus": 1}))[0] == 400


async def test_silences_create_list_expire(snow: Snow, make_bridge: Any) -> None:
    """A silence made through the API suppresses matching alerts until it is expired through the API."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    url = base_url(bridge) + api.PREFIX
    body = {"matchers": ['instance="db-prod-01.example.com:9100"'], "duration": "1h", "comment": "disk swap"}
    status, silence, _ = await call("POST", url + "/silences", body=body)
    assert status == 201 and silence["status"] == "active"
    assert [s["id"] for s in (await call("GET", url + "/silences?status=active"))[1]] == [silence["id"]]
    assert (await call("GET", url + "/silences/" + silence["id"]))[1]["comment"] == "disk swap"

    await post(webhook_url(bridge), group(alert()))
    await asyncio.sleep(0.5)
    assert snow.incidents() == [], "a silenced alert opened a ticket"

    status, expired, _ = await call("DELETE", url + "/silences/" + silence["id"])
    assert (status, expired) == (200, {"id": silence["id"], "expired": True})
    assert (await call("GET", url + "/silences/" + silence["id"]))[1]["status"] == "expired"
    await post(webhook_url(bridge), group(alert(starts="2024-05-14T10:00:00Z")))
    await eventually(lambda: snow.incidents())

    assert (await call("POST", url + "/silences", body={"matchers": ['team=~"("'], "duration": "1h"}))[0] == 400
    assert (await call("POST", url + "/silences", body={"matchers": ['a="b"']}))[0] == 400  # no end
    assert (await call("POST", url + "/silences", body={"matchers": ['a="b"'], "duration": "soon"}))[0] == 400
    assert (await call("DELETE", url + "/silences/nope"))[0] == 404
    assert (await call("GET", url + "/silences/nope"))[0] == 404


async def test_dead_letters_list_retry_drop(snow: Snow, make_bridge: Any, redis: aioredis.Redis) -> None:
    """A rejected open is listed, retried after the fix (and delivered), a bad alert can only be dropped."""
    config = mapping(snow.url)
    broken = config.model_copy(
        update={"desks": {"snow": config.desks["snow"].model_copy(update={"table": "no_such_table"})}}
    )
    bridge = await make_bridge(broken, admin_token=TOKEN)
    url = base_url(bridge) + api.PREFIX
    await post(webhook_url(bridge), group(alert()))
    letters = await eventually(lambda: redis.xrange(keys.DLQ), within=10)
    letter_id = letters[0][0].decode()

    status, listed, _ = await call("GET", url + "/dlq")
    assert status == 200 and [x["id"] for x in listed] == [letter_id]
    assert listed[0]["kind"] == "desk_rejected" and listed[0]["error"]["status"] == 400
    assert (await call("GET", url + "/dlq?kind=unrouted"))[1] == []
    assert (await call("GET", url + f"/dlq?after={letter_id}"))[1] == []
    assert (await call("GET", url + "/dlq/" + letter_id))[1]["id"] == letter_id

    bridge.runtime.use_config(config)  # the ops team fixes the mapping
    await bridge.runtime.open_desks()
    status, retried, _ = await call("POST", url + f"/dlq/{letter_id}/retry")
    assert (status, retried) == (202, {"id": letter_id, "outcome": "retried"})
    await eventually(lambda: snow.incidents(), within=10)
    assert (await call("POST", url + f"/dlq/{letter_id}/retry"))[0] == 404

    bad = group(alert())
    bad["alerts"].append({"status": "firing", "labels": "not-a-mapping"})
    await post(webhook_url(bridge), bad)
    bad_letter = (await eventually(lambda: call("GET", url + "/dlq?kind=bad_alert")))[1][0]["id"]
    assert (await call("POST", url + f"/dlq/{bad_letter}/retry"))[0] == 409
    assert (await call("DELETE", url + "/dlq/" + bad_letter))[:2] == (200, {"id": bad_letter, "dropped": True})
    assert (await call("DELETE", url + "/dlq/" + bad_letter))[0] == 404
    assert (await call("GET", url + "/dlq/not-an-id"))[0] == 404


async def test_cli_and_api_answer_alike(snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis) -> None:
    """`bridge incidents list` and GET /api/v1/incidents print the same incidents, field for field."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    await post(webhook_url(bridge), group(alert(instance="a:1"), alert(instance="b:1")))
    await eventually(lambda: len(snow.incidents()) == 2)
    await asyncio.sleep(0.3)
    from_api = (await call("GET", base_url(bridge) + api.PREFIX + "/incidents"))[1]
    from_cli = orjson.loads((await cli("incidents", "list", "--redis-url", redis_server.url)).stdout)
    assert from_cli == from_api and len(from_api) == 2
    incident = from_api[0]["id"]
    resolved = await cli(
        "incidents", "resolve", incident, "--note", "done", "--by", "bob", "--redis-url", redis_server.url
    )
    assert orjson.loads(resolved.stdout)["outcome"] == "RESOLVE"
    shown = (await call("GET", base_url(bridge) + api.PREFIX + "/incidents/" + incident))[1]
    assert shown["resolved_by"] == "bob"
    again = await cli("incidents", "resolve", incident, "--redis-url", redis_server.url, check=False)
    assert again.returncode == 1 and b"already resolved" in again.stderr


async def test_openapi_document_is_valid_and_matches_the_routes(snow: Snow, make_bridge: Any) -> None:
    """The served document is valid OpenAPI 3.1 and lists exactly the app's /api/v1 routes."""
    bridge = await make_bridge(mapping(snow.url))  # served without auth, even with the API off
    status, document, _ = await call("GET", base_url(bridge) + api.PREFIX + "/openapi.json", token=None)
    assert status == 200
    validate(document)
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    app = bridge._runner.app
    served = {
        (route.method, route.resource.canonical.removeprefix(api.PREFIX))
        for sub in app._subapps
        for route in sub.router.routes()
        if route.method != "HEAD" and route.resource.canonical.startswith(api.PREFIX + "/")  # not the status page's
    }
    assert documented == served


async def test_schemathesis_finds_no_mismatch_in_the_running_app(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Schemathesis-generated requests to every operation get no 5xx and only answers the document declares."""
    st = shutil.which("st")
    if st is None:
        if os.environ.get("CI"):
            pytest.fail("schemathesis is not installed (the test extra installs it)")
        pytest.skip("schemathesis is not installed")
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    await post(webhook_url(bridge), group(alert()))
    await eventually(lambda: snow.incidents())
    command = [
        st, "run", base_url(bridge) + api.PREFIX + "/openapi.json",
        "-H", f"Authorization: Bearer {TOKEN}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance,ignored_auth",
        "--max-examples", "25", "--seed", "7", "--generation-database", "none", "--workers", "1",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0, output.decode()[-6000:]
