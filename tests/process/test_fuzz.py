"""Fuzzing a running bridge (`bridge serve`, the packaged example mapping: a source of every kind):
hypothesis over every webhook kind (recorded payloads spoiled at random places with hostile values,
random JSON, random bytes, odd content types and encodings), over the Opsgenie door (`/opsgenie/...`:
its Alert API, request status, heartbeat pings, the nagios2opsgenie integration) and the heartbeat
pings (`/heartbeat/{name}`), and schemathesis against the admin API's served OpenAPI document. No
answer is a 5xx, every 4xx is a JSON body with `error`, the log stays JSON without a failure event,
and afterwards a fresh valid alert still reaches the desk.

Seeded: the seed is printed (shown with a failure); `BRIDGE_FUZZ_SEED=<seed>` replays a run, and
`BRIDGE_FUZZ_EXAMPLES=<n>` makes it longer (CI runs the default)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import FIXTURES, Snow, eventually, post
from tests.running import TOKEN, LogTail, call, spawn, wait_ready

SEED = int(os.environ.get("BRIDGE_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES") or 300)
FAILURES = {"request_failed", "engine_step_failed", "decision_failed", "delivery_failed", "uncaught_exception"}

# The example mapping's sources, and recorded payloads of each (the fuzzing spoils them).
CORPUS: dict[str, list[tuple[str, bytes]]] = {}
for path in sorted(FIXTURES.iterdir()):
    kind = path.name.split("_")[0].split(".")[0]
    if path.suffix in (".json", ".form"):
        content_type = "application/x-www-form-urlencoded" if path.suffix == ".form" else "application/json"
        CORPUS.setdefault(kind, []).append((content_type, path.read_bytes()))
CORPUS["generic"] = [("application/json", orjson.dumps({"check": "disk", "id": "1", "host": "db", "state": "down"}))]
CORPUS["icinga2"] = CORPUS.get("icinga2", []) + CORPUS.get("nagios", [])[:1]
SOURCES = sorted(set(CORPUS) - {"opsgenie"})
# The Opsgenie door's calls as Alertmanager's opsgenie_configs made them (a create and a close).
DOOR_CALLS = [orjson.loads(line) for line in (FIXTURES / "opsgenie_alertmanager.jsonl").read_bytes().splitlines()]
GENIE_KEY = "fuzz-genie-key-51c3"  # the example's opsgenie source's API key (OPSGENIE_API_KEY)
BEAT_TOKEN = "fuzz-beat-token-8e2d"  # the example's heartbeat's token (HEARTBEAT_TOKEN)

HOSTILE: list[Any] = [
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1e400", "-1", "", "²", "٣", "NaN",
    "../../admin/users/1?delete=true#", "a{99999999999}", "(a+)+b", "{{ 7*7 }}", "{% raw %}", "${HOME}",
    "$HOSTNAME$", "\x00\x01", "é\u2028", "🙂" * 50, "x" * 70_000, "[" * 300, "{" * 300,
    2**70, -(2**63) - 1, 253402300799, 253402300799000, 1e308, -1e308, 0, True, None, [], {},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]  # fmt: skip
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # JSON has no lone surrogates
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4))


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*at, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*at, index))
    return found


def _put(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    head, rest = at[0], at[1:]
    if isinstance(value, dict):
        return {**value, head: _put(value[head], rest, new)}
    copy = list(value)
    copy[head] = _put(copy[head], rest, new)
    return copy


@st.composite
def spoiled(draw: st.DrawFn, body: bytes) -> bytes:
    """A recorded payload with one to three places replaced by a hostile value, or random JSON."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    places = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(places))
        doc = _put(doc, at, draw(st.sampled_from(HOSTILE) | _json))
        places = _paths(doc)
    try:
        return orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):  # a value JSON cannot hold (2**70): as text then
        return str(doc).encode()


@dataclass(frozen=True)
class Request:
    source: str
    body: bytes
    content_type: str
    encoding: str  # "" | "gzip" | "bad-gzip"


@st.composite
def requests(draw: st.DrawFn) -> Request:
    source = draw(st.sampled_from(SOURCES))
    content_type, recorded = draw(st.sampled_from(CORPUS[source]))
    body = draw(
        st.just(recorded)
        | spoiled(recorded)
        | _json.map(lambda value: orjson.dumps(value))
        | st.binary(max_size=400)
        | st.builds(lambda n: recorded[:n], st.integers(0, len(recorded)))
    )
    content_type = draw(
        st.just(content_type)
        | st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "text/html", ""])
    )
    encoding = draw(st.sampled_from(["", "", "", "gzip", "bad-gzip"]))
    return Request(source, body, content_type, encoding)


@dataclass(frozen=True)
class Call:
    """One request to the Opsgenie door or a heartbeat ping."""

    what: str  # which route it aims at (create, action, status, ping, integration, heartbeat)
    method: str
    path: str  # with its query string
    body: bytes
    headers: dict[str, bytes]


_header_text = st.sampled_from(HOSTILE[:20]).map(str) | _text  # header values: whatever text, made sendable
# A path segment or query value: hostile text, kept short enough that the request line stays within
# aiohttp's 8,190 bytes (a longer one is refused by aiohttp's parser before any handler runs).
_segment = (st.sampled_from(HOSTILE[:21]).map(str) | _text).map(lambda text: text[:300])


def _header(value: str) -> bytes:
    """A header value as HTTP allows one (RFC 9110 field-value: visible bytes, space, tab, obs-text). A
    control byte is not HTTP: aiohttp's parser refuses it with its own plain-text 400 before any handler
    of the bridge runs, so it is not sent here."""
    raw = value.encode("utf-8", "surrogateescape")
    return bytes(b for b in raw if (b >= 0x20 and b != 0x7F) or b == 0x09)[:2000]


@st.composite
def auth(draw: st.DrawFn, right: str) -> dict[str, bytes]:
    """Mostly the right credential, sometimes a wrong one, none, or junk."""
    if draw(st.integers(0, 9)) < 7:
        value = right
    else:
        value = draw(st.sampled_from(["GenieKey nope", "", "Bearer"]) | _header_text.map(lambda t: "GenieKey " + t))
    return {"Authorization": _header(value)} if value else {}


@st.composite
def door_body(draw: st.DrawFn, recorded: bytes) -> bytes:
    return draw(
        st.just(recorded)
        | spoiled(recorded)
        | _json.map(lambda value: orjson.dumps(value))
        | st.binary(max_size=300)
        | st.just(b"")
    )


@st.composite
def request_ids(draw: st.DrawFn) -> str:
    """What a request status is asked of: a request id as the door makes them, with hostile parts, or junk."""
    record = [
        draw(st.sampled_from(["create", "close", "notes", "nope"]) | _text),
        draw(_segment),
        draw(st.booleans() | _scalars),
        draw(_segment),
        draw(st.sampled_from([0, -1, 2**70, 253402300799000, 10**20, "x", None]) | st.integers()),
    ]
    try:
        raw = orjson.dumps(record)
    except orjson.JSONEncodeError:  # an integer past 64 bits: as Python writes it
        raw = str(record).encode()
    made = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return draw(st.just(made) | _segment)


DOOR_ROUTES = ("create", "action", "status", "ping", "integration", "heartbeat")


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """Seven times in ten the usual kind of value, else the other (hostile) kind."""
    return draw(usual if draw(st.integers(0, 9)) < 7 else other)


@st.composite
def door_calls(draw: st.DrawFn, what: str) -> Call:
    """A call to the Opsgenie door (`/opsgenie/{source}/...`) or a heartbeat ping (`/heartbeat/{name}`)."""
    create, close = DOOR_CALLS[0], DOOR_CALLS[1]
    source = mostly(draw, st.just("opsgenie"), st.sampled_from(["alertmanager", "nagios"]) | _segment)
    base = f"/opsgenie/{quote(source, safe='')}"
    keys = st.sampled_from(["identifierType", "cluster", "x"]) | _text
    query: dict[str, str] = mostly(draw, st.just({}), st.dictionaries(keys, _segment, max_size=3))
    body = b""
    if what == "create":
        method, path = "POST", base + draw(st.sampled_from(["/v2/alerts", "/v2/alerts/"]))
        body = draw(door_body(orjson.dumps(create["body"])))
    elif what == "action":
        method = draw(st.sampled_from(["POST", "PUT"]))
        identifier = mostly(draw, st.sampled_from([create["body"]["alias"], "Zm9v"]), _segment) or "x"
        known = ["close", "acknowledge", "unacknowledge", "notes"] if method == "POST" else ["message", "description",
                                                                                         "priority"]  # fmt: skip
        name = mostly(draw, st.sampled_from(known), st.sampled_from(["delete", "close", "message"]) | _segment) or "x"
        path = f"{base}/v2/alerts/{quote(identifier, safe='')}/{quote(name, safe='')}"
        query.setdefault("identifierType", mostly(draw, st.sampled_from(["alias", "id"]), st.just("tiny") | _segment))
        body = draw(door_body(orjson.dumps(close["body"])))
    elif what == "status":
        method, path = "GET", f"{base}/v2/alerts/requests/{quote(draw(request_ids()), safe='') or 'x'}"
    elif what == "ping":
        method = draw(st.sampled_from(["GET", "POST", "PUT"]))
        name = mostly(draw, st.just("prometheus"), st.just("nope") | _segment) or "x"
        path = f"{base}/v2/heartbeats/{quote(name, safe='')}/ping"
    elif what == "integration":
        method = "POST"
        source = mostly(draw, st.sampled_from(["nagios", "icinga2"]), st.sampled_from(["opsgenie", "nope"]))
        path = f"/opsgenie/{source}/v1/json/{mostly(draw, st.sampled_from(['nagios', 'icinga2']), st.just('x'))}"
        recorded = orjson.loads(next(b for t, b in CORPUS["nagios"] if t == "application/json"))
        body = draw(door_body(orjson.dumps({**recorded, "apiKey": draw(st.sampled_from(["", "k"]) | _scalars)})))
    else:
        method = draw(st.sampled_from(["GET", "POST"]))
        name = mostly(draw, st.just("prometheus"), st.just("nope") | _segment) or "x"
        path = f"/heartbeat/{quote(name, safe='')}"
    if query:
        path += "?" + urlencode({k[:100]: v for k, v in query.items()})
    headers = draw(auth(f"Bearer {BEAT_TOKEN}" if what == "heartbeat" else f"GenieKey {GENIE_KEY}"))
    content_type = draw(st.sampled_from(["application/json", "application/json", "text/plain", ""]))
    if content_type:
        headers["Content-Type"] = content_type.encode()
    encoding = draw(st.sampled_from(["", "", "", "gzip", "bad-gzip"]))
    if encoding and body:
        headers["Content-Encoding"] = b"gzip"
        body = gzip.compress(body) if encoding == "gzip" else body
    return Call(what, method, path, body, headers)


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    tail: LogTail

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def served(snow: Snow, redis_server: EmbeddedRedis) -> Iterator[Served]:
    """`bridge serve` with the packaged example mapping, its desk the ServiceNow simulator."""
    port = free_port()
    env = {"SERVICENOW_URL": snow.url, "SERVICENOW_USER": "bridge", "SERVICENOW_PASSWORD": "s3cret",
           "OPSGENIE_API_KEY": GENIE_KEY, "HEARTBEAT_TOKEN": BEAT_TOKEN}  # fmt: skip
    proc = spawn(Path("bridge/samples/example.yaml"), redis_server.url, port, BRIDGE_ADMIN_TOKEN=TOKEN, **env)
    yield Served(port, proc, LogTail(proc))
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def stop_and_check_the_log(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.proc.wait, 30) == 0, served.tail.text()[-3000:]
    served.tail.join()
    events = []
    for line in served.tail.text().splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:300]!r}")
    failures = [e for e in events if e.get("event") in FAILURES]
    assert not failures, failures[:3]


async def a_fresh_alert_reaches_the_desk(served: Served, snow: Snow) -> None:
    """A new alert (its own incident) opens a ticket; silences the fuzzing made are expired first, as an
    operator would (one matching everything is a silence doing its job)."""
    _, silences, _ = await call("GET", served.url + "/api/v1/silences")
    for silence in silences:
        await call("DELETE", served.url + f"/api/v1/silences/{silence['id']}")
    before = len(snow.incidents())
    body = group(alert(alertname="AfterTheFuzz", instance=f"fresh-{SEED}-{before}"))
    assert (await post(served.url + "/webhook/alertmanager", body))[0] == 202
    await eventually(lambda: len(snow.incidents()) > before, within=20)


async def test_fuzzing_every_webhook_kind_gets_no_5xx_and_json_errors(served: Served, snow: Snow) -> None:
    """Every source kind of the example, spoiled payloads: no 5xx, each 4xx JSON with `error`; then an alert flows."""
    print(f"fuzz seed {SEED}: replay with BRIDGE_FUZZ_SEED={SEED}")
    await wait_ready(served.port)
    statuses: dict[int, int] = {}

    # Synchronous, on a thread: the desk simulator runs on this test's event loop, which must go on.
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(request=requests())
    def one(request: Request) -> None:
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        body = request.body
        if request.encoding:
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body) if request.encoding == "gzip" else body
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        try:
            connection.request("POST", f"/webhook/{request.source}", body=body, headers=headers)
            resp = connection.getresponse()
            raw = resp.read()
        finally:
            connection.close()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        where = f"seed {SEED}: {request.source} {request.content_type!r} {request.encoding!r} {body[:200]!r}"
        assert resp.status < 500, f"{resp.status} {raw[:300]!r} for {where}"
        if resp.status >= 400:
            assert resp.getheader("Content-Type", "").startswith("application/json"), where
            answer = orjson.loads(raw)
            assert isinstance(answer.get("error"), str) and "detail" in answer, (answer, where)

    await asyncio.to_thread(one)
    print(f"answers by status: {dict(sorted(statuses.items()))}")
    assert statuses.get(202, 0) > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0, statuses
    await a_fresh_alert_reaches_the_desk(served, snow)
    await stop_and_check_the_log(served)


async def test_fuzzing_the_opsgenie_door_and_heartbeat_pings_gets_no_5xx_and_json_errors(
    served: Served, snow: Snow
) -> None:
    """The Opsgenie door's every route and /heartbeat/{name}, hostile paths, queries, keys and bodies: no 5xx,
    each 4xx JSON with `error`; then an Opsgenie create opens a ticket, a ping is taken, an alert flows."""
    print(f"fuzz seed {SEED}: replay with BRIDGE_FUZZ_SEED={SEED}")
    await wait_ready(served.port)
    statuses: dict[int, int] = {}
    by_route: dict[str, dict[int, int]] = {}

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(data=st.data())
    def one(route: str, data: st.DataObject) -> None:
        request = data.draw(door_calls(route))
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        try:
            connection.putrequest(request.method, request.path, skip_accept_encoding=True)
            for name, value in request.headers.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(request.body)))
            connection.endheaders(request.body)
            resp = connection.getresponse()
            raw = resp.read()
        finally:
            connection.close()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        by_route.setdefault(request.what, {}).setdefault(resp.status, 0)
        by_route[request.what][resp.status] += 1
        where = f"seed {SEED}: {request.method} {request.path[:300]} {request.headers} {request.body[:200]!r}"
        assert resp.status < 500, f"{resp.status} {raw[:300]!r} for {where}"
        if resp.status >= 400:
            assert resp.getheader("Content-Type", "").startswith("application/json"), (raw[:300], where)
            answer = orjson.loads(raw)
            said = answer.get("detail", answer.get("message"))  # the door answers in Opsgenie's words
            assert isinstance(answer.get("error"), str) and isinstance(said, str), (answer, where)

    for route in DOOR_ROUTES:  # each route its own pass, so that each gets its share
        await asyncio.to_thread(one, route)
    print(f"answers by status: {dict(sorted(statuses.items()))}; by route: {by_route}")
    assert statuses.get(202, 0) > 0 and {401, 404} <= statuses.keys(), statuses

    before = len(snow.incidents())
    create = {"message": "AfterTheDoorFuzz", "alias": f"door-{SEED}-{before}", "priority": "P1"}
    url, key = served.url + "/opsgenie/opsgenie/v2/alerts", f"GenieKey {GENIE_KEY}"
    status, answer = await post(url, create, Authorization=key)
    assert status == 202 and answer["result"] == "Request will be processed", answer
    await eventually(lambda: len(snow.incidents()) > before, within=20)
    status, answer, _ = await call("GET", served.url + f"/heartbeat/prometheus?cluster=after-{SEED}", token=BEAT_TOKEN)
    assert status == 202 and answer["outcome"] == "new", answer
    await a_fresh_alert_reaches_the_desk(served, snow)
    await stop_and_check_the_log(served)


async def test_schemathesis_against_the_served_openapi_gets_no_5xx(served: Served, snow: Snow) -> None:
    """Every admin operation, fuzzed from the served document: no 5xx, answers as declared; a fresh alert then flows."""
    st_cli = shutil.which("st")
    if st_cli is None:
        if os.environ.get("CI"):
            pytest.fail("schemathesis is not installed (the test extra installs it)")
        pytest.skip("schemathesis is not installed")
    print(f"fuzz seed {SEED}: replay with BRIDGE_FUZZ_SEED={SEED}")
    await wait_ready(served.port)
    await a_fresh_alert_reaches_the_desk(served, snow)  # something to read, resolve and dead-letter
    command = [
        st_cli, "run", f"{served.url}/api/v1/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--max-examples", str(max(20, EXAMPLES // 6)), "--seed", str(SEED), "--generation-database", "none",
        "--workers", "1",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode == 0, f"seed {SEED}\n" + output.decode()[-6000:]
    await a_fresh_alert_reaches_the_desk(served, snow)
    await stop_and_check_the_log(served)
