"""`bridge replay FILE`: what a mapping would have done with a recorded stream of webhooks.

Each webhook is parsed by its source's adapter, decided by the real engine and Lua steps, and
delivered by the real delivery code to recording desks that make no call. Time is virtual: the
clock stands at each webhook's `at`, and the timers (hold-down, auto-resolve, flap quiet period)
fire at their due times in between, so a day of alerts replays in seconds. State lives in a
private `redis-server` started for the run (or an empty scratch Redis given by URL), never in the
bridge's own. The report counts alerts, incidents, desk calls and the noise reduction:
1 - tickets opened / alerts received.

The file is JSON Lines; each line is `{"source": NAME, "at": ISO-8601 or ms, "body": {...} or
"text", "content_type": ..., "headers": {...}}`, or a bare payload (then the source is the
mapping's first, and webhooks are one second apart).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge.admin.incidents import list_incidents
from bridge.core import config as config_mod
from bridge.core import keys, plugins
from bridge.core.config import MappingConfig, parse_duration
from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import BridgeError, ConfigError
from bridge.core.source import ParseContext
from bridge.core.tuning import Tuning
from bridge.delivery.worker import Delivery
from bridge.engine.consumer import Engine
from bridge.engine.timers import Ticker
from bridge.process.embedded import EmbeddedRedis
from bridge.runtime import dead_letters
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import Scripts

MAX_STEPS = 100_000  # guards the timer and delivery loops against a policy that never settles


@dataclass
class Webhook:
    source: str
    at_ms: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def read_stream(path: str | Path, default_source: str, start_ms: int) -> list[Webhook]:
    hooks: list[Webhook] = []
    last = start_ms
    for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"line {number} is not JSON: {exc}", file=str(path), line=number) from exc
        if not isinstance(item, dict):
            raise ConfigError("each line must be a JSON object", file=str(path), line=number)
        if "body" not in item:  # a bare payload
            item = {"body": item}
        at = _ms(item["at"]) if "at" in item else last + 1000
        body = item["body"]
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        hooks.append(
            Webhook(
                str(item.get("source", default_source)),
                at,
                raw,
                str(item.get("content_type", "application/json")),
                {str(k): str(v) for k, v in (item.get("headers") or {}).items()},
            )
        )
        last = at
    return hooks


def _ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value if value > 1e11 else value * 1000)  # seconds or ms since the epoch
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class RecordingDesk:
    """A desk that records the calls it is asked to make and makes none."""

    def __init__(self, name: str, calls: list[dict[str, Any]], clock: Clock) -> None:
        self.name, self.calls, self.clock = name, calls, clock
        self._by_correlation: dict[str, TicketRef] = {}

    def _record(self, action: str, ref: TicketRef | None, **extra: Any) -> None:
        self.calls.append({"at": self.clock(), "desk": self.name, "action": action,
                           "ticket": ref.display if ref else None, **extra})  # fmt: skip

    async def find(self, correlation_id: str) -> TicketRef | None:
        return self._by_correlation.get(correlation_id)

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        ref = TicketRef(f"replay-{len(self._by_correlation) + 1}", f"REPLAY{len(self._by_correlation) + 1:05d}")
        self._by_correlation[correlation_id] = ref
        self._record("open", ref, incident=correlation_id, fields=dict(fields))
        return ref

    async def note(self, ref: TicketRef, text: str) -> None:
        self._record("note", ref, text=text)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        self._record("update", ref, fields=dict(fields))

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        self._record("resolve", ref, text=note)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        self._record("reopen", ref, text=note)

    async def close_duplicate(self, ref: TicketRef, parent: TicketRef, note: str) -> None:
        self._record("close_duplicate", ref, parent=parent.display, text=note)

    async def state(self, ref: TicketRef) -> TicketState:
        return TicketState(TicketPhase.OPEN)

    async def aclose(self) -> None:
        return None


async def replay_file(
    path: str | Path,
    config_paths: Sequence[str | Path],
    *,
    redis_url: str | None = None,
    settle_s: str | float = 0.0,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    config = config_mod.load(config_paths)
    start = int(datetime.now(UTC).timestamp() * 1000)
    hooks = read_stream(path, next(iter(config.sources), ""), start)
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="bridge-replay-"))
            redis_url = stack.enter_context(EmbeddedRedis(Path(scratch), appendonly=False)).url
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await replay(client, config, hooks, settle_ms=int(parse_duration(settle_s) * 1000))
        finally:
            await client.aclose()


async def replay(
    client: aioredis.Redis, config: MappingConfig, hooks: Sequence[Webhook], *, settle_ms: int = 0
) -> dict[str, Any]:
    """Replay `hooks` on an empty Redis (refused otherwise: it would mix with real state)."""
    async for _ in client.scan_iter(match=keys.PREFIX + "*", count=100):
        raise BridgeError("the replay Redis already holds bridge keys: give it an empty one")
    scripts = Scripts(client)
    await scripts.load()
    clock = Clock(hooks[0].at_ms if hooks else 0)
    rt = Runtime(client, scripts, config, tuning=Tuning(), clock=clock, consumer="replay")
    calls: list[dict[str, Any]] = []
    rt.desks = {name: RecordingDesk(name, calls, clock) for name in config.desks}
    engine, delivery, ticker = Engine(rt), Delivery(rt), Ticker(rt)
    await engine.ensure_group()
    alerts = rejected = refused = 0
    for hook in hooks:
        await _advance(rt, clock, ticker, delivery, hook.at_ms)
        source = config.sources.get(hook.source)
        if source is None:
            refused += 1
            continue
        ctx = ParseContext(source=hook.source, received_at=datetime.fromtimestamp(hook.at_ms / 1000, UTC),
                           options=source.options)  # fmt: skip
        try:
            parsed = plugins.source(source.kind).parse(hook.body, hook.content_type, hook.headers, ctx)
        except BridgeError:
            refused += 1
            continue
        alerts += len(parsed.alerts)
        rejected += len(parsed.rejected)
        async with client.pipeline(transaction=False) as pipe:  # as the ingress writes them
            for item in parsed.alerts:
                pipe.xadd(rt.shards.intake_for(item.identity), {"a": item.model_dump_json()})
            letters = [{"kind": "bad_alert", "source": hook.source, "reason": bad.reason} for bad in parsed.rejected]
            dead_letters.add(pipe, rt.tuning, letters, clock())
            await pipe.execute()
        while await engine.step():
            pass
        await _deliver(rt, delivery)
    end = (hooks[-1].at_ms if hooks else clock()) + settle_ms
    await _advance(rt, clock, ticker, delivery, end)
    return await _report(rt, calls, len(hooks), alerts, rejected, refused)


async def _advance(rt: Runtime, clock: Clock, ticker: Ticker, delivery: Delivery, until_ms: int) -> None:
    """Move the clock to `until_ms`, firing each timer at its due time and delivering what it causes."""
    for _ in range(MAX_STEPS):
        firsts: list[Any] = [await rt.redis.zrange(timers, 0, 0, withscores=True) for timers in rt.shards.timers]
        due = min((int(first[0][1]) for first in firsts if first), default=None)
        if due is None or due > until_ms:
            break
        clock.now_ms = max(clock.now_ms, due)
        await ticker.tick()
        await _deliver(rt, delivery)
    clock.now_ms = max(clock.now_ms, until_ms)
    await _deliver(rt, delivery)


async def _deliver(rt: Runtime, delivery: Delivery) -> None:
    for _ in range(MAX_STEPS):
        ready: list[Any] = []
        for zset in rt.shards.readies:
            ready += await rt.redis.zrangebyscore(zset, "-inf", rt.clock(), start=0, num=100)
        if not ready:
            return
        for base in ready:
            await delivery.deliver(base.decode() if isinstance(base, bytes) else str(base))


async def _report(
    rt: Runtime, calls: list[dict[str, Any]], webhooks: int, alerts: int, rejected: int, refused: int
) -> dict[str, Any]:
    decisions: Counter[str] = Counter()
    for metric in rt.metrics.decisions.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                decisions[sample.labels["decision"]] += int(sample.value)
    by_action = Counter(call["action"] for call in calls)
    opened = by_action.get("open", 0)
    return {
        "webhooks": webhooks,
        "webhooks_refused": refused,
        "alerts": alerts,
        "alerts_rejected": rejected,
        "decisions": dict(sorted(decisions.items())),
        "incidents": await list_incidents(rt.redis, limit=10_000),
        "desk_calls": {"total": len(calls), **dict(sorted(by_action.items()))},
        "tickets_opened": opened,
        "noise_reduction": round(1 - opened / alerts, 4) if alerts else 0.0,
        "alerts_per_ticket": round(alerts / opened, 2) if opened else None,
        "dead_letters": await rt.redis.xlen(keys.DLQ),
        "calls": calls,
    }
