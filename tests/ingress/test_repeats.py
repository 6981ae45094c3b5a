"""The repeat window (bridge/ingress/repeats.py): an identical copy of an alert that this process wrote
moments ago is answered 202 and counted, not written again; anything else is written, whoever wrote last.

Against real Redis: ingress apps with no engine (so the intake stream shows every write) and their
subscriptions running as `bridge serve` runs them, then a whole bridge with its desk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from adapters.sources.alertmanager import ADAPTER as AM
from bridge.core import keys
from bridge.core.models import Alert
from bridge.core.source import ParseContext
from bridge.ingress.repeats import REPEATS, RepeatWindow, digest, keys_of, listen, written_form
from bridge.process.app import make_app
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime import shards as sharding
from bridge.runtime.connect import is_cluster
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import open_scripts
from tests.amp import alert, group
from tests.conftest import FAST, Snow, eventually, mapping, post, start_app
from tests.running import scrape, value

Intake = Callable[[], Awaitable[list[Alert]]]


@dataclasses.dataclass
class Replica:
    url: str
    window: RepeatWindow

    @property
    def webhook(self) -> str:
        return self.url + "/webhook/alertmanager"


@pytest.fixture
async def replicas(redis_server: EmbeddedRedis, snow: Snow) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    """Ingress apps (no engine) on one Redis, each with its window's subscription; live when returned."""
    stop = asyncio.Event()
    listening: list[asyncio.Task[None]] = []
    async with AsyncExitStack() as stack:

        async def start(window_ms: int = 5000, limit: int = 1000) -> Replica:
            scripts = open_scripts(redis_server.url, timeout=5)  # a cluster's too (BRIDGE_TEST_REDIS=cluster)
            client = scripts.redis
            stack.push_async_callback(client.aclose)
            stack.push_async_callback(scripts.aclose)
            await scripts.load()
            tuning = dataclasses.replace(FAST, repeat_window_ms=window_ms, repeat_window_max=limit)
            app = make_app(Runtime(client, scripts, mapping(snow.url), tuning=tuning))
            runner, url = await start_app(app)
            stack.push_async_callback(runner.cleanup)
            listening.append(asyncio.create_task(listen(client, app[REPEATS], stop)))
            await eventually(lambda: app[REPEATS].live)
            return Replica(url, app[REPEATS])

        yield start
        stop.set()
        await asyncio.wait_for(asyncio.gather(*listening), 5)


@pytest.fixture
def intake(redis: aioredis.Redis) -> Intake:
    """What was written, shard after shard (one identity's copies are in order: they share a shard)."""

    async def read() -> list[Alert]:
        shards = sharding.default(redis, 0)
        return [Alert.model_validate_json(f[b"a"]) for stream in shards.intakes for _, f in await redis.xrange(stream)]

    return read


FIRING = group(alert())
RESOLVED = group(alert("resolved"))


async def test_a_copy_within_the_window_is_answered_and_not_written(replicas: Any, intake: Intake) -> None:
    one = await replicas(window_ms=400)
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0, "repeated": 1})
    assert len(await intake()) == 1
    assert one.window.bodies == 1  # kept once it repeated something: the first copy's body was not
    _, samples = await scrape(one.url)
    assert value(samples, "bridge_alerts_repeated_total", source="alertmanager") == 1
    assert value(samples, "bridge_alerts_received_total", source="alertmanager", status="firing") == 2
    assert value(samples, "bridge_repeat_window_entries") == 1
    await asyncio.sleep(0.45)  # the window is over: the next copy is written, so the engine sees it again
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert len(await intake()) == 2


def test_the_written_form_is_the_alert() -> None:
    """The intake's JSON, made in one serialisation with the digest, reads back as the alert it came from."""
    for when in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 4, 21, 33, 8, 184701, tzinfo=UTC)):
        ctx = ParseContext(source="alertmanager", received_at=when, options={})
        parsed = AM.parse(orjson.dumps(FIRING), "application/json", {}, ctx).alerts[0]
        d, form = written_form(parsed)
        assert Alert.model_validate_json(form) == parsed and d == digest(parsed)
        assert d == digest(parsed.model_copy(update={"received_at": datetime(2030, 1, 1, tzinfo=UTC)}))


async def test_a_copy_that_differs_in_anything_is_written(replicas: Any, intake: Intake) -> None:
    one = await replicas()
    assert (await post(one.webhook, FIRING))[0] == 202
    changed = [
        RESOLVED,
        group(alert(severity="warning")),
        group(alert(starts="2024-05-14T09:30:00Z")),  # a new occurrence
        group({**alert(), "annotations": {"summary": "changed"}}),
        FIRING,  # back to the first: not what was written last
    ]
    for body in changed:
        assert await post(one.webhook, body) == (202, {"accepted": 1, "rejected": 0})
    assert sorted(a.status.value for a in await intake()) == [*["firing"] * 5, "resolved"]  # all six written


async def test_a_group_is_written_but_for_its_copies(replicas: Any, intake: Intake) -> None:
    """A whole body taken before skips the parse; one alert of it changed: only that one is written."""
    one = await replicas()
    a, b = alert(instance="a"), alert(instance="b")
    assert await post(one.webhook, group(a, b)) == (202, {"accepted": 2, "rejected": 0})
    assert await post(one.webhook, group(a, b)) == (202, {"accepted": 2, "rejected": 0, "repeated": 2})
    assert await post(one.webhook, group(a, {**b, "status": "resolved"})) == (
        202,
        {"accepted": 2, "rejected": 0, "repeated": 1},
    )
    assert sorted((x.labels["instance"], x.status.value) for x in await intake()) == [
        ("a", "firing"),
        ("b", "firing"),
        ("b", "resolved"),
    ]


async def test_what_another_replica_writes_ends_the_window_here(replicas: Any, intake: Intake) -> None:
    """Firing here, resolved there, firing here again within the window: the last firing is written (a
    window that outlived the other replica's write would have hidden it, leaving the incident resolved)."""
    one, two = await replicas(), await replicas()
    assert (await post(one.webhook, FIRING))[0] == 202
    identity = (await intake())[0].identity
    assert (await post(two.webhook, RESOLVED))[0] == 202
    await eventually(lambda: identity not in one.window)  # two's announcement came
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert [a.status.value for a in await intake()] == ["firing", "resolved", "firing"]
    # Both replicas take the same copies: two writes its first (it remembered resolved), then none.
    assert await post(two.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert await post(two.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0, "repeated": 1})
    # two's write was the copy one remembers: one's window stays (else the replicas would write every copy).
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0, "repeated": 1})
    assert [a.status.value for a in await intake()] == ["firing", "resolved", "firing", "firing"]


async def test_replicas_taking_the_same_copies_write_it_once_a_window_between_them(
    replicas: Any, intake: Intake
) -> None:
    """A copy one replica writes after its window starts the other's window again: the intake holds that
    very copy, written moments ago. Each replica writing each alert once a window cost the engine a step
    per replica per alert per window."""
    one, two = await replicas(window_ms=400), await replicas(window_ms=400)
    assert (await post(one.webhook, FIRING))[0] == 202
    assert await post(two.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})  # two had none: written
    await asyncio.sleep(0.45)  # both windows are over
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    last = (await intake())[-1]
    mark = ((last.identity,), digest(last))
    await eventually(lambda: two.window.fresh(mark, time.monotonic()))  # one's write heard
    assert await post(two.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0, "repeated": 1})
    assert len(await intake()) == 3


def test_a_write_that_may_have_failed_ends_windows_and_starts_none() -> None:
    window = RepeatWindow(1.0, limit=10)
    window.up.set()
    window.wrote([(("same",), b"d"), (("other",), b"d")], 0.0)
    window.heard([], [("same", b"d".hex()), ("other", b"e".hex())], 0.9)
    assert "other" not in window  # it may be in the intake: a copy of the one remembered is written again
    assert window.fresh((("same",), b"d"), 0.5) and not window.fresh((("same",), b"d"), 1.2)  # not restarted
    window.heard([("same", b"d".hex())], [], 0.9)  # durable: restarted, ending a tenth of a window early
    assert window.fresh((("same",), b"d"), 1.2) and not window.fresh((("same",), b"d"), 1.8)
    window.heard([("same", b"d".hex())], [], 0.85)  # never shortened by news older than what it knows
    assert window.fresh((("same",), b"d"), 1.75)


async def test_a_lost_subscription_forgets_everything(replicas: Any, intake: Intake, redis: aioredis.Redis) -> None:
    """Messages missed while the subscription was down could have ended any window: none is kept."""
    one = await replicas()
    assert (await post(one.webhook, FIRING))[0] == 202
    assert len(one.window) == 1
    everywhere = {"target_nodes": "all"} if is_cluster(redis) else {}
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub", **everywhere)
    await eventually(lambda: len(one.window) == 0)
    await eventually(lambda: one.window.live)  # subscribed again
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert len(await intake()) == 2


@pytest.mark.parametrize("garbage", [b"not json", b'["x", [["k"]], []]', b'["x", 1, 2]', b"{}"])
async def test_an_unreadable_announcement_forgets_everything_and_the_window_goes_on(
    replicas: Any, intake: Intake, redis: aioredis.Redis, garbage: bytes
) -> None:
    """Anyone who can reach Redis may publish on the channel: a message not of the announcements' form is
    skipped, as one missed would be (nothing remembered is kept), and the subscription stays up."""
    one = await replicas()
    assert (await post(one.webhook, FIRING))[0] == 202
    assert len(one.window) == 1
    await redis.publish(keys.REPEATS_CHANNEL, garbage)
    await eventually(lambda: len(one.window) == 0)
    assert one.window.live
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0})  # written again
    assert await post(one.webhook, FIRING) == (202, {"accepted": 1, "rejected": 0, "repeated": 1})  # and absorbed
    assert len(await intake()) == 2


async def test_bodies_with_dead_letters_are_parsed_every_time(replicas: Any, redis: aioredis.Redis) -> None:
    one = await replicas()
    body = group(alert(), {**alert(instance="x"), "startsAt": "not a time"})
    for _ in range(2):
        status, answer = await post(one.webhook, body)
        assert (status, answer["rejected"]) == (202, 1)
    assert await redis.xlen(keys.DLQ) == 2


def test_the_window_is_bounded() -> None:
    window = RepeatWindow(1.0, limit=3)
    window.up.set()
    window.wrote([((f"id{i}",), b"d") for i in range(5)], 0.0)
    assert len(window) == 3
    assert not window.fresh((("id0",), b"d"), 0.1) and window.fresh((("id4",), b"d"), 0.1)
    window.wrote([(("id2",), b"d")], 0.5)  # written again: the newest, so id3 goes first
    window.wrote([(("id5",), b"d")], 0.5)
    assert [i for i in ("id2", "id3", "id4", "id5") if window.fresh(((i,), b"d"), 0.6)] == ["id2", "id4", "id5"]
    assert not window.fresh((("id5",), b"d"), 1.5)  # the window is over
    # Bodies: at most `limit` alerts held across them, the oldest body dropped first.
    marks = tuple(((f"b{i}",), b"d") for i in range(2))
    for body in (b"one", b"two", b"three"):
        window.keep_body(body, (marks, (("firing", 2),), b"{}"))
    window.wrote(list(marks), 2.0)
    assert [window.body(b, 2.1) is not None for b in (b"one", b"two", b"three")] == [False, False, True]


def test_a_route_identity_is_a_key_too() -> None:
    """A route with `identity: [name, resource]` makes a warning and a critical copy (two fingerprints:
    severity is a label) one member: warning, critical, warning is three writes, the last not absorbed."""
    config = mapping(
        "http://127.0.0.1:9", extra_routes=[{"name": "by-name", "desk": "snow", "identity": ["name", "resource"]}]
    )
    window = RepeatWindow(1.0, limit=100)
    window.up.set()
    fields = window.schemes(config)
    assert fields == (("name", "resource"),)
    warning, critical = (parse(alert(severity=s)) for s in ("warning", "critical"))
    assert warning.identity != critical.identity
    marks = [(keys_of(a, fields), digest(a)) for a in (warning, critical)]
    assert marks[0][0][1] == marks[1][0][1]  # the same member of the route
    window.wrote([marks[0]], 0.0)
    assert window.fresh(marks[0], 0.1)
    window.wrote([marks[1]], 0.2)
    assert not window.fresh(marks[0], 0.3)  # critical was written last for the member


def parse(body: dict[str, Any]) -> Alert:
    ctx = ParseContext(source="alertmanager", received_at=datetime.now(UTC), options=None)
    return AM.parse(orjson.dumps(group(body)), "application/json", {}, ctx).alerts[0]


async def test_through_a_bridge_one_ticket_and_the_engine_sees_a_copy_a_window(
    make_bridge: Any, snow: Snow, redis: aioredis.Redis
) -> None:
    bridge = await make_bridge(mapping(snow.url), tuning=dataclasses.replace(FAST, repeat_window_ms=1000))
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    await eventually(lambda: bridge.repeats.live)
    answers = [(await post(url, FIRING))[1] for _ in range(5)]
    assert [a.get("repeated", 0) for a in answers] == [0, 1, 1, 1, 1]
    await eventually(lambda: len(snow.incidents()) == 1)
    await asyncio.sleep(1.05)
    assert await post(url, FIRING) == (202, {"accepted": 1, "rejected": 0})
    assert await post(url, RESOLVED) == (202, {"accepted": 1, "rejected": 0})
    await eventually(lambda: snow.incidents()[0]["state"] == "6")  # resolved
    assert len(snow.incidents()) == 1
