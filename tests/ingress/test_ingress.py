"""Ingress over HTTP against real Redis: what is accepted, what is refused and how, never a 500."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bridge.core import keys
from bridge.core.models import Alert
from bridge.process.app import make_app
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts
from tests.amp import GO_ZERO, alert, group
from tests.conftest import Snow, eventually, fixture_bytes, mapping, post, start_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024  # this test source's max_body
FIRING = fixture_bytes("alertmanager_firing.json")


@dataclass
class Ingress:
    """The ingress app alone (no engine consuming the stream) on a free port, and a Redis client."""

    url: str
    redis: aioredis.Redis

    @property
    def webhook(self) -> str:
        return self.url + "/webhook/alertmanager"

    async def intake(self) -> list[Alert]:
        return [Alert.model_validate_json(f[b"a"]) for _, f in await self.redis.xrange(keys.INTAKE)]

    async def dead(self) -> list[dict[str, str]]:
        letters = await self.redis.xrange(keys.DLQ)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in letters]


@pytest.fixture
async def ingress(redis_server: EmbeddedRedis, redis: aioredis.Redis, snow: Snow) -> AsyncIterator[Ingress]:
    config = mapping(snow.url, secret=TOKEN)
    source = config.sources["alertmanager"].model_copy(update={"max_body": LIMIT})
    config = config.model_copy(update={"sources": {"alertmanager": source}})
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
    scripts = Scripts(client)
    await scripts.load()
    runner, url = await start_app(make_app(Runtime(client, scripts, config)))
    yield Ingress(url, redis)
    await runner.cleanup()
    await client.aclose()


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def raw_request(url: str, head: bytes, body: bytes) -> int:
    """Send bytes aiohttp's client would not (a non-UTF-8 header); return the status code."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(answer.split(b" ", 2)[1])


async def test_a_recorded_group_is_accepted_and_enqueued(ingress: Ingress) -> None:
    """202 with the counts, and each alert of the group is one intake entry that decodes to it."""
    before = datetime.now(UTC)
    assert await post(ingress.webhook, FIRING, **AUTH) == (202, {"accepted": 2, "rejected": 0})
    queued = await ingress.intake()
    assert [(a.identity, a.source, a.status.value) for a in queued] == [
        ("6cba2cfc9fff8da5", "alertmanager", "firing"),
        ("658cbc17d4762484", "alertmanager", "firing"),
    ]
    assert queued[0].labels["mountpoint"] == "/var/lib/postgresql"
    assert queued[1].summary == "Filesystem has less than 5% space left."
    assert all(before <= a.received_at <= datetime.now(UTC) for a in queued)
    assert await ingress.dead() == []


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer {TOKEN} "])
async def test_the_right_token_is_accepted(ingress: Ingress, header: str) -> None:
    """The configured bearer token (scheme case-insensitive) gets a 202."""
    status, _ = await post(ingress.webhook, FIRING, Authorization=header)
    assert status == 202


async def test_a_charset_parameter_is_accepted(ingress: Ingress) -> None:
    """`application/json; charset=utf-8` is JSON."""
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    assert (await post(ingress.webhook, FIRING, **headers))[0] == 202


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"version": "4", alerts: []}', "not valid JSON"),
        (FIRING[:400], "not valid JSON"),
        (b'[{"version": "4", "alerts": []}]', "JSON object"),
        (b'{"version": "4", "alerts": "none"}', "alerts: Input should be a valid list"),
        (b'{"version": "1", "alerts": []}', "version: expected '4'"),
        (b"", "empty body"),
    ],
    ids=["malformed", "truncated", "array", "alerts-not-list", "wrong-version", "empty"],
)
async def test_an_unreadable_payload_is_a_400_naming_the_problem(ingress: Ingress, body: bytes, detail: str) -> None:
    """An envelope that cannot be read: 400 bad_payload saying what is wrong, and nothing enqueued."""
    status, answer = await post(ingress.webhook, body, **AUTH)
    assert (status, answer["error"]) == (400, "bad_payload")
    assert detail in answer["detail"]
    assert await ingress.intake() == []
    assert await ingress.dead() == []


def padded(size: int) -> bytes:
    """The recorded group, padded with JSON whitespace to exactly `size` bytes: valid all the same."""
    return FIRING + b" " * (size - len(FIRING))


async def test_a_body_at_the_limit_is_accepted(ingress: Ingress) -> None:
    """max_body is inclusive: a body of exactly that many bytes is read and accepted."""
    assert (await post(ingress.webhook, padded(LIMIT), **AUTH))[0] == 202


async def test_an_oversize_body_with_content_length_is_413(ingress: Ingress) -> None:
    """One byte over the limit, announced by Content-Length: 413 JSON, nothing enqueued."""
    status, answer = await post(ingress.webhook, padded(LIMIT + 1), **AUTH)
    assert (status, answer["error"]) == (413, "payload_too_large")
    assert str(LIMIT) in answer["detail"]
    assert await ingress.intake() == []


async def test_an_oversize_chunked_body_is_413(ingress: Ingress) -> None:
    """Without Content-Length (chunked), the limit still holds while reading: 413, nothing enqueued."""
    body = padded(LIMIT + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with (
        aiohttp.ClientSession() as session,
        session.post(ingress.webhook, data=chunks(), headers={**AUTH, "Content-Type": "application/json"}) as resp,
    ):
        assert "Content-Length" not in resp.request_info.headers
        assert resp.request_info.headers["Transfer-Encoding"] == "chunked"
        assert (resp.status, (await resp.json())["error"]) == (413, "payload_too_large")
    assert await ingress.intake() == []


async def test_a_chunked_body_within_the_limit_is_accepted(ingress: Ingress) -> None:
    """Chunked (no Content-Length) and under the limit: read to its end, 202, every alert enqueued;
    and an empty chunked body is refused as empty, as one with Content-Length: 0 is."""

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(ingress.webhook, data=chunks(FIRING), headers=headers) as resp:
            assert resp.request_info.headers["Transfer-Encoding"] == "chunked"
            assert resp.status == 202, await resp.text()
        async with session.post(ingress.webhook, data=chunks(b""), headers=headers) as resp:
            assert (resp.status, (await resp.json())["detail"]) == (400, "empty body")
    firing = orjson.loads(FIRING)["alerts"]
    assert [a.identity for a in await ingress.intake()] == [a["fingerprint"] for a in firing]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_wrong_content_type_is_415(ingress: Ingress, content_type: str) -> None:
    """A body that is not declared as JSON: 415, nothing enqueued."""
    status, answer = await post(ingress.webhook, FIRING, **AUTH, **{"Content-Type": content_type})
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    assert await ingress.intake() == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
     {"Authorization": "Bearer"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "longer", "no-token", "basic", "no-scheme"],
)  # fmt: skip
async def test_a_missing_or_wrong_token_is_401(ingress: Ingress, headers: dict[str, str]) -> None:
    """Without the source's bearer token: 401 JSON, and nothing enqueued."""
    status, answer = await post(ingress.webhook, FIRING, **headers)
    assert (status, answer["error"]) == (401, "unauthorized")
    assert await ingress.intake() == []


async def test_a_token_that_is_not_utf8_is_401_not_500(ingress: Ingress) -> None:
    """Header bytes that are not UTF-8 in the token are a wrong token (401), not a crash."""
    head = (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer \xff\xfe" + TOKEN.encode() + b"\r\n"
    )
    assert await raw_request(ingress.url, head, FIRING) == 401
    assert await ingress.intake() == []


async def test_an_unknown_source_is_a_json_404(ingress: Ingress) -> None:
    """POST to a source name that is not configured: 404 with a JSON error naming it."""
    status, answer = await post(ingress.url + "/webhook/nagios", FIRING, **AUTH)
    assert (status, answer["error"]) == (404, "unknown_source")
    assert "nagios" in answer["detail"]


async def test_one_bad_alert_is_dead_lettered_and_the_rest_accepted(ingress: Ingress) -> None:
    """A sound envelope with one bad alert: 202 counting both; the bad one in the DLQ with its reason."""
    bad = {**alert(device="/dev/bad"), "labels": "alertname=Disk"}
    payload = group(alert(device="/dev/sda1"), bad)
    status, answer = await post(ingress.webhook, payload, **AUTH)
    assert (status, answer["accepted"], answer["rejected"]) == (202, 1, 1)
    assert answer["errors"][0].startswith("alerts[1].labels:")
    assert [a.labels["device"] for a in await ingress.intake()] == ["/dev/sda1"]
    (letter,) = await ingress.dead()
    assert (letter["kind"], letter["source"]) == ("bad_alert", "alertmanager")
    assert letter["reason"].startswith("alerts[1].labels: Input should be a valid dictionary")
    assert orjson.loads(letter["raw"]) == bad


async def test_healthz_answers_200(ingress: Ingress) -> None:
    """GET /healthz: 200 while the process runs."""
    assert await get(ingress.url + "/healthz") == (200, {"status": "ok"})


async def test_readyz_reloads_scripts_that_redis_lost(ingress: Ingress) -> None:
    """/readyz with Redis up but its script cache empty (a Redis 7 restart) loads them and is ready."""
    assert (await get(ingress.url + "/readyz"))[0] == 200
    await ingress.redis.script_flush()
    assert await get(ingress.url + "/readyz") == (200, {"status": "ready"})
    assert (await get(ingress.url + "/readyz"))[0] == 200


async def test_redis_down_is_503_and_up_again_is_202(
    snow: Snow, make_bridge: Callable[..., Awaitable[Any]], redis_server: EmbeddedRedis
) -> None:
    """A whole bridge: Redis stopped -> webhook 503 JSON and unready; started again -> 202 and ready."""
    bridge = await make_bridge(mapping(snow.url, secret=TOKEN))
    url = f"http://127.0.0.1:{bridge.port}"
    assert await get(url + "/readyz") == (200, {"status": "ready"})
    assert (await post(url + "/webhook/alertmanager", FIRING, **AUTH))[0] == 202

    redis_server.stop()
    for _ in range(3):  # not only the first request on a dead connection: every one
        status, answer = await post(url + "/webhook/alertmanager", FIRING, **AUTH)
        assert (status, answer["error"]) == (503, "unavailable")
    status, answer = await get(url + "/readyz")
    assert (status, answer["status"]) == (503, "unready")
    assert (await get(url + "/healthz"))[0] == 200

    redis_server.start()
    assert await post(url + "/webhook/alertmanager", FIRING, **AUTH) == (202, {"accepted": 2, "rejected": 0})
    assert await get(url + "/readyz") == (200, {"status": "ready"})


async def test_redis_hung_is_503_within_the_socket_timeout_and_resumed_is_202(
    snow: Snow, make_bridge: Callable[..., Awaitable[Any]], redis_server: EmbeddedRedis
) -> None:
    """Redis alive but not answering (stopped with SIGSTOP: no connection refused, no reset): a webhook
    waits at most the client's socket timeout (5 s) and answers 503, so the sender retries; the
    requests that share its round trip get the same. Once Redis answers again, so does the bridge."""
    bridge = await make_bridge(mapping(snow.url, secret=TOKEN))
    url = f"http://127.0.0.1:{bridge.port}"
    assert (await post(url + "/webhook/alertmanager", FIRING, **AUTH))[0] == 202
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # New alerts: a copy of FIRING would be answered by the repeat window (its first copy is in Redis).
        hung = [orjson.dumps(group(alert(instance=f"hung-{i}"))) for i in range(3)]
        answers = await asyncio.gather(*(post(url + "/webhook/alertmanager", body, **AUTH) for body in hung))
        waited = loop.time() - started
        assert [(status, body["error"]) for status, body in answers] == [(503, "unavailable")] * 3
        assert waited < 15, waited  # bounded by the socket timeout, not TCP's minutes
        assert (await get(url + "/healthz"))[0] == 200  # liveness does not depend on Redis
    finally:
        redis_server.process.send_signal(signal.SIGCONT)

    async def accepted() -> bool:
        return (await post(url + "/webhook/alertmanager", FIRING, **AUTH))[0] == 202

    await eventually(accepted, within=10, interval=0.2)
    assert await get(url + "/readyz") == (200, {"status": "ready"})


# --- never a 500 ------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_times = st.sampled_from(["2024-05-14T09:12:45.123Z", GO_ZERO, "2024-05-14", "yesterday", ""]) | _json
_alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved", "weird"]) | _json,
        "labels": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4) | _json,
        "startsAt": _times,
    },
    optional={"endsAt": _times, "annotations": _json, "fingerprint": _json, "generatorURL": _json},
)
_envelope = st.fixed_dictionaries(
    {"version": st.sampled_from(["4", "3", 4]), "alerts": st.lists(_alert | _json, max_size=4)},
    optional={"receiver": _json, "groupKey": _json, "truncatedAlerts": _json, "status": _json},
)
_bodies = st.binary(max_size=300) | _json.map(orjson.dumps) | _envelope.map(orjson.dumps)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
async def test_no_input_gets_a_500(ingress: Ingress, body: bytes) -> None:
    """Random bytes, random JSON and spoiled envelopes get 202 or 400 with a JSON body, never a 500."""
    status, answer = await post(ingress.webhook, body, **AUTH)
    event(f"status {status}")
    assert status in (202, 400), (status, answer, body)
    if status == 400:
        assert answer["error"] == "bad_payload" and answer["detail"]
    else:
        sent = orjson.loads(body)["alerts"]
        assert answer["accepted"] + answer["rejected"] == len(sent)
