"""Hostile input through a running bridge: every one a 4xx with a JSON body (or a dead letter), never
a 500, a halted engine or a plain-text line in the log; and a bad record already in Redis is skipped,
reported (log and `bridge_bad_records_total`) and halts nothing."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import capture_logs

from bridge.core import keys, logs
from bridge.process.embedded import EmbeddedRedis, free_port
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.running import (
    TOKEN,
    LogTail,
    base_url,
    call,
    scrape,
    spawn,
    stopped,
    value,
    wait_ready,
    webhook_url,
    write_mapping,
)

JSON = {"Content-Type": "application/json"}


def nested_batch(depth: int) -> bytes:
    """A valid batch of two alerts, the second with a label nested `depth` levels deep (orjson cannot
    write that: the body is built as text)."""
    text = orjson.dumps(group(alert(instance="fine"), alert(instance="deep"))).decode()
    deep = "[" * depth + '"x"' + "]" * depth
    return text.replace('"instance":"deep"', '"instance":"deep","deep":' + deep).encode()


async def raw_request(port: int, head: bytes, *, answer: bool) -> bytes:
    """Send bytes on a fresh connection; read the answer, or hang up at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(4096), 10) if answer else b""
    writer.close()
    return got


def assert_every_line_json(tail: LogTail) -> list[dict[str, Any]]:
    events = []
    for line in tail.text().splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:200]!r}")
    return events


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    tail: LogTail

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM; its log's events once it has exited 0, every line of it JSON."""
        assert await stopped(self.proc, self.tail) == 0, self.tail.text()[-3000:]
        return assert_every_line_json(self.tail)


@pytest.fixture
def served(snow: Snow, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Served]:
    """`bridge serve` as a process, with the admin API on; its log read as it comes."""
    port = free_port()
    proc = spawn(write_mapping(tmp_path / "mapping.yaml", snow), redis_server.url, port, BRIDGE_ADMIN_TOKEN=TOKEN)
    yield Served(port, proc, LogTail(proc))
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def test_hostile_webhooks_are_refused_or_dead_lettered_and_the_log_stays_json(
    snow: Snow, served: Served, redis: aioredis.Redis
) -> None:
    """Bad gzip, 300-deep nesting, a start in 9999, a hang-up mid-body, garbage bytes: 4xx or dead letter, all JSON."""
    port, tail = served.port, served.tail
    await wait_ready(port)
    url = f"http://127.0.0.1:{port}/webhook/alertmanager"
    async with aiohttp.ClientSession() as session:
        headers = {**JSON, "Content-Encoding": "gzip"}
        async with session.post(url, data=b"this is not gzip", headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad_payload"

    status, answer = await post(url, nested_batch(300))
    assert (status, answer["accepted"], answer["rejected"]) == (202, 1, 1), answer
    status, answer = await post(url, group(alert(instance="far", starts="9999-12-31T23:59:59Z")))
    assert (status, answer["rejected"]) == (202, 1), answer
    assert "out of range" in answer["errors"][0], answer
    # Hung up mid-body (a stated length, then chunked), and bytes that are no HTTP at all.
    head = b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    await raw_request(port, head + b'Content-Length: 1000\r\n\r\n{"version":', answer=False)
    await raw_request(port, head + b'Transfer-Encoding: chunked\r\n\r\n40\r\n{"version":', answer=False)
    assert b" 400 " in await raw_request(port, b"\x00\x01GARBAGE / HTTP/9\r\n\r\n", answer=True)

    letters = [(await redis.xrange(keys.DLQ))[i][1] for i in range(2)]
    assert {letter[b"kind"] for letter in letters} == {b"bad_alert"}
    assert b"cut: nested deeper" in letters[0][b"raw"], letters[0]
    assert (await post(url, group(alert(instance="after"))))[0] == 202  # a fresh alert still reaches the desk
    await eventually(lambda: {i["short_description"].rsplit(" ", 1)[-1] for i in snow.incidents()} >= {"fine", "after"})
    assert all("far" not in i["short_description"] for i in snow.incidents())
    await eventually(lambda: len(tail.events("request_aborted")) == 2, within=10)
    names = [e["event"] for e in await served.stop()]
    assert not {"request_failed", "engine_step_failed", "decision_failed"} & set(names), names


async def test_hostile_admin_calls_are_refused_and_store_nothing(
    snow: Snow, served: Served, redis: aioredis.Redis
) -> None:
    """`?limit=²`, a regex `a{99999999999}`, a silence of 10^14 hours or ending in 2^70 ms: 400 each, nothing stored."""
    await wait_ready(served.port)
    api = f"http://127.0.0.1:{served.port}/api/v1"
    for path in ("/incidents?limit=²", "/dlq?limit=²", "/incidents?limit=٣", "/dlq?limit=99999999999999999999"):
        status, body, _ = await call("GET", api + path)
        assert (status, body["error"]) == (400, "bad_payload"), (path, body)
    bodies: list[bytes] = [
        orjson.dumps({"matchers": ['alertname=~"a{99999999999}"'], "duration": "1h"}),
        orjson.dumps({"matchers": ['alertname="x"'], "duration": "99999999999999h"}),
        orjson.dumps({"matchers": ['alertname="x"'], "duration": "9" * 400}),
        b'{"matchers": ["alertname=\\"x\\""], "ends_at": ' + str(2**70).encode() + b"}",
        b'{"matchers": ["alertname=\\"x\\""], "starts_at": 1, "ends_at": 99999999999999999}',
    ]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}", **JSON}) as session:
        for body in bodies:
            async with session.post(api + "/silences", data=body) as resp:
                answer = await resp.json()
                assert (resp.status, answer["error"]) == (400, "bad_payload"), (body[:80], answer)
    assert await redis.hlen(keys.SILENCES) == 0
    status, listed, _ = await call("GET", api + "/silences")
    assert (status, listed) == (200, [])
    assert (await post(f"http://127.0.0.1:{served.port}/webhook/alertmanager", group(alert())))[0] == 202
    await eventually(lambda: snow.incidents())
    names = [e["event"] for e in await served.stop()]
    assert "request_failed" not in names and "engine_step_failed" not in names, names


# --- one bad record already in Redis --------------------------------------------------------------


async def test_an_unreadable_stored_silence_is_skipped_reported_and_expirable(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Silences stored by an older version (garbage, an end past 2^64): alerts decided, list 200, one report each."""
    await redis.hset(keys.SILENCES, "garbage", b"{not json")
    await redis.hset(keys.SILENCES, "overflow", b'{"id":"overflow","matchers":["a=\\"b\\""],"starts_at":0,"ends_at":'
                     + str(2**70).encode() + b"}")  # fmt: skip
    with capture_logs() as logged:
        bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
        base = base_url(bridge)
        for n in range(3):  # several batches, each reads the silences
            assert (await post(webhook_url(bridge), group(alert(instance=f"host-{n}"))))[0] == 202
        await eventually(lambda: len(snow.incidents()) == 3, within=15)
        status, listed, _ = await call("GET", base + "/api/v1/silences")
        assert (status, listed) == (200, [])
        assert (await call("DELETE", base + "/api/v1/silences/overflow"))[0] == 200
        assert await redis.hkeys(keys.SILENCES) == [b"garbage"]
    reports = [e for e in logged if e["event"] == "bad_record"]
    assert sorted(r["key"] for r in reports) == ["garbage", "overflow"], reports
    assert all(r["kind"] == "silence" and r["hint"] for r in reports)
    _, samples = await scrape(base)
    assert value(samples, "bridge_bad_records_total", kind="silence") == 2
    assert not [e for e in logged if e["event"] in ("engine_step_failed", "request_failed")]


async def test_an_unreadable_outbox_entry_is_dead_lettered_and_the_rest_delivered(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Garbage at the head of an outbox: dead-lettered as bad_record; the resolve behind it reaches the desk."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="0s"), admin_token=TOKEN)
    assert (await post(webhook_url(bridge), group(alert())))[0] == 202
    await eventually(lambda: snow.incidents(), within=10)
    base = (await redis.zrange(keys.INCIDENTS, 0, -1))[0].decode()
    ik = keys.IncidentKeys(base)
    await redis.rpush(ik.outbox, b"\xff not json", b'{"kind": "NOTE"}')
    assert (await post(webhook_url(bridge), group(alert("resolved"))))[0] == 202
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=15)
    letters = [fields for _, fields in await redis.xrange(keys.DLQ)]
    assert [letter[b"kind"] for letter in letters] == [b"bad_record", b"bad_record"], letters
    assert letters[0][b"raw"] == b"\xff not json" and letters[0][b"incident"] == base.encode()
    assert await redis.llen(ik.outbox) == 0
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_bad_records_total", kind="outbox_entry") == 2


async def test_an_unreadable_incident_is_skipped_and_its_members_overwritten(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A garbage state hash: left out of the list, shown as unreadable; a member stored as 2.5e+14: replaced."""
    bridge = await make_bridge(mapping(snow.url, resolve_after="0s"), admin_token=TOKEN)
    api = base_url(bridge) + "/api/v1"
    assert (await post(webhook_url(bridge), group(alert())))[0] == 202
    await eventually(lambda: snow.incidents(), within=10)
    good = (await redis.zrange(keys.INCIDENTS, 0, -1))[0].decode()
    bad = keys.IncidentKeys("prometheus:badbadbadbad")
    await redis.hset(bad.state, mapping={"state": "open", "epoch": "x", "opened_at": "soon", "ticket:x": "[1"})
    await redis.rpush(bad.outbox, b"{half")
    await redis.zadd(keys.INCIDENTS, {bad.base: 1})
    # What apply_alert.lua wrote for a start in the year 9999 before the range check: it could not read it back.
    identity = next(iter(await redis.hkeys(keys.IncidentKeys(good).members)))
    await redis.hset(keys.IncidentKeys(good).members, identity, "2.53402300799e+14|firing|critical|1|db-prod-01")

    status, listed, _ = await call("GET", api + "/incidents")
    assert status == 200 and [i["id"].rsplit(":", 1)[0] for i in listed] == [good], listed
    status, shown, _ = await call("GET", api + f"/incidents/{bad.base}")
    assert status == 200 and shown["unreadable"]["opened_at"] == "soon" and shown["outbox"] == [{"unreadable": "{half"}]
    assert (await post(webhook_url(bridge), group(alert("resolved"))))[0] == 202  # the member is read again
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=15)
    _, samples = await scrape(base_url(bridge))
    assert value(samples, "bridge_bad_records_total", kind="incident") == 1
    assert value(samples, "bridge_bad_records_total", kind="outbox_entry") == 1
    assert await redis.xlen(keys.DLQ) == 0  # no decision failed


# --- the log: JSON, one event a line, whoever writes it ------------------------------------------


def test_library_log_lines_and_uncaught_errors_are_json_events_with_their_traceback() -> None:
    """aiohttp's and asyncio's `logging` lines and an uncaught exception each become one JSON line, traceback inside."""
    out = io.StringIO()
    hooks = sys.excepthook, threading.excepthook
    try:
        logs.configure(json=True, file=out)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("aiohttp.server").exception("Unhandled exception")
        logging.getLogger("asyncio").warning("slow callback password=hunter2")
        try:
            raise ValueError("uncaught")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
        logging.getLogger("aiohttp.access").info("below warning: not written")
    finally:
        sys.excepthook, threading.excepthook = hooks
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_bridge", False):
                logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line is JSON
    assert [e["event"] for e in events] == ["Unhandled exception", "slow callback password=***", "uncaught_exception"]
    assert events[0]["logger"] == "aiohttp.server" and "RuntimeError: boom" in events[0]["exception"]
    assert events[0]["level"] == "error" and "Traceback" in events[0]["exception"]
    assert "ValueError: uncaught" in events[2]["exception"]
