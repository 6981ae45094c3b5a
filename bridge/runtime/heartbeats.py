"""Heartbeats: things that must ping the bridge (Prometheus's `Watchdog` alert, a cron job, an Opsgenie
client), and the one ticket each opens when it falls silent.

A heartbeat (`heartbeats:` in the mapping, `bridge.core.config.Heartbeat`) is one name and, where it
has `key` labels, one of it per set of their values (each Prometheus cluster its own). Its state lives
in Redis (`keys.heartbeat(id)`, indexed in `keys.HEARTBEATS`), its expiry is a timer in the timers set
(`<id>|heartbeat|<due>`), so any replica takes its pings and any replica's ticker expires it:

- a ping (`heartbeat_ping.lua`) moves the timer to now + interval + grace; the first one starts the
  watch; one that comes after the heartbeat expired also adds, once, the alert that resolves its ticket;
- the timer, once due (`fire`, from bridge/engine/timers.py; `heartbeat_expire.lua`), marks it expired
  and adds the alert that opens its ticket ("No heartbeat from prod-eu since 10:42 UTC").

Those alerts (kind `heartbeat`) go through the intake stream like any other and take the heartbeat's
route (`MappingConfig.heartbeat_routes`): one incident per heartbeat. `bridge heartbeats list` reads
the states; `bridge_heartbeat_age_seconds` is each one's age at scrape time, from what this process
last read (`Watch`, every `gauges_every_s`) or saw itself.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.exceptions
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.core import keys
from bridge.core.config import Heartbeat, MappingConfig
from bridge.core.matchers import Matcher, matches_all
from bridge.core.models import Alert, Status, stable_hash
from bridge.core.routing import HEARTBEAT_KIND, match_labels
from bridge.core.source import Parsed
from bridge.runtime import heartbeats_cluster as on_cluster
from bridge.runtime.connect import is_cluster
from bridge.runtime.context import Runtime, wait_for_event
from bridge.runtime.metrics import Metrics

log = structlog.get_logger("bridge.runtime.heartbeats")
SOURCE = "heartbeats"  # the `source` of a heartbeat's alerts
TIMER_KIND = keys.HEARTBEAT_TIMER_KIND  # the kind of its timers: `<id>|heartbeat|<due>`


@dataclass(frozen=True, slots=True)
class Ping:
    name: str
    id: str
    labels: dict[str, str]
    outcome: str  # new, ok, recovered, or full (refused: more key label sets than max_keys)
    due_ms: int


@dataclass(slots=True)
class Beat:
    """One heartbeat as Redis holds it."""

    id: str
    name: str
    labels: dict[str, str]
    first_ms: int
    last_ms: int
    due_ms: int
    window_ms: int
    expired: bool
    expired_ms: int
    pings: int

    def view(self, now_ms: int) -> dict[str, Any]:
        """For `bridge heartbeats list`: its state (ok, late: due but not expired yet, expired) and times."""
        state = "expired" if self.expired else "late" if now_ms >= self.due_ms else "ok"
        return {
            "id": self.id,
            "heartbeat": self.name,
            "key": self.labels,
            "state": state,
            "last_ping": _iso(self.last_ms),
            "age_s": round(max(0, now_ms - self.last_ms) / 1000, 1),
            "expires_at": _iso(self.due_ms),
            "expired_at": _iso(self.expired_ms) if self.expired else None,
            "pings": self.pings,
            "watched_since": _iso(self.first_ms),
        }


def beat_id(name: str, labels: Mapping[str, str]) -> str:
    """`<name>`, or `<name>/<hash of its key labels>` for a heartbeat with `key` labels."""
    return f"{name}/{stable_hash(dict(labels), version='heartbeat', length=12)}" if labels else name


def key_labels(beat: Heartbeat, values: Mapping[str, str]) -> dict[str, str]:
    """The heartbeat's `key` labels, from an alert's labels or a ping's query ("" where absent)."""
    return {name: str(values.get(name, ""))[:256] for name in beat.key}


def who(name: str, labels: Mapping[str, str]) -> str:
    """What the ticket calls it: its key labels' values (`prod-eu`), else its name."""
    return ", ".join(v for v in labels.values() if v) or name


def expired_alert(name: str, beat: Heartbeat, labels: Mapping[str, str], last_ms: int, now_ms: int) -> Alert:
    """The alert that opens the ticket, naming the last ping; its problem starts now, when it expired."""
    last, now = _at(last_ms), _at(now_ms)
    since = last.strftime("%H:%M UTC") if last.date() == now.date() else last.strftime("%Y-%m-%d %H:%M UTC")
    each = _span(beat.interval) + (f" (grace {_span(beat.grace)})" if beat.grace else "")
    keyed = "".join(f", {k}={v}" for k, v in labels.items())
    return Alert(
        source=SOURCE,
        kind=HEARTBEAT_KIND,
        identity=beat_id(name, labels),
        name=f"heartbeat {name}",
        resource=who(name, labels),
        severity=beat.severity,
        status=Status.FIRING,
        summary=f"No heartbeat from {who(name, labels)} since {since}",
        description=(
            f"Heartbeat {name!r}{keyed} pings every {each}; its last ping came at {last:%Y-%m-%d %H:%M:%S} UTC. "
            "Whatever sends it (a monitoring pipeline, a job) may have stopped, and with it the alerts it "
            "would send. The ticket resolves when it pings again."
        ),
        labels={**labels, "heartbeat": name},
        starts_at=now,  # after the ping that resolved its last silence (that one's occurrence), if any
        received_at=now,
    )


def recovered_alert(name: str, beat: Heartbeat, labels: Mapping[str, str], now_ms: int) -> Alert:
    """The alert that resolves the ticket: the heartbeat pinged again."""
    now = _at(now_ms)
    return Alert(
        source=SOURCE,
        kind=HEARTBEAT_KIND,
        identity=beat_id(name, labels),
        name=f"heartbeat {name}",
        resource=who(name, labels),
        severity=beat.severity,
        status=Status.RESOLVED,
        summary=f"Heartbeat from {who(name, labels)} again at {now.strftime('%H:%M UTC')}",
        labels={**labels, "heartbeat": name},
        ends_at=now,
        received_at=now,
    )


async def ping(rt: Runtime, pings: Sequence[tuple[str, Mapping[str, str]]]) -> list[Ping]:
    """Record pings of (heartbeat name, key labels), each a configured heartbeat's, in one round trip."""
    now = rt.clock()
    pipe = rt.redis.pipeline(transaction=False)
    made: list[tuple[str, str, dict[str, str]]] = []
    for name, given in dict.fromkeys((n, tuple(sorted(v.items()))) for n, v in pings):  # once each per call
        beat = rt.config.heartbeats[name]
        labels = dict(given)
        bid = beat_id(name, labels)
        healed = recovered_alert(name, beat, labels, now)
        timers, intake = rt.shards.timers_for(bid), rt.shards.intake_for(healed.identity)
        rt.scripts.heartbeat_ping(
            [keys.heartbeat(bid), keys.HEARTBEATS, keys.heartbeat_ids(name), timers, intake],
            [bid, now, beat.window_ms(), name, orjson.dumps(labels), beat.max_keys, healed.model_dump_json()],
            pipe,
        )
        made.append((name, bid, labels))
    if is_cluster(rt.redis):
        replies = await on_cluster.ping(rt, now, pipe)
    else:
        replies = await rt.scripts.execute(pipe)
    out = [Ping(name, bid, labels, _s(r[0]), int(r[1])) for (name, bid, labels), r in zip(made, replies, strict=True)]
    shown = board(rt.metrics)
    for done in out:
        if done.outcome == "full":
            log.warning(
                "heartbeat_keys_full",
                heartbeat=done.name,
                key=done.labels,
                max_keys=rt.config.heartbeats[done.name].max_keys,
            )
            continue
        shown.pinged(done.id, done.name, done.labels, now)
        if done.outcome in ("new", "recovered"):
            log.info(f"heartbeat_{done.outcome}", heartbeat=done.name, key=done.labels)
    return out


@dataclass(frozen=True, slots=True)
class _Watcher:
    name: str
    beat: Heartbeat
    matchers: list[Matcher]
    sources: frozenset[str]


_WATCHERS: dict[int, tuple[MappingConfig, list[_Watcher]]] = {}


def _watchers(config: MappingConfig) -> list[_Watcher]:
    """The heartbeats that alerts ping, their matchers compiled once per mapping."""
    found = _WATCHERS.get(id(config))
    if found is None or found[0] is not config:
        made = [
            _Watcher(name, beat, beat.alerts.matchers(), frozenset(beat.alerts.sources))
            for name, beat in config.heartbeats.items()
            if beat.alerts is not None
        ]
        if len(_WATCHERS) > 8:
            _WATCHERS.clear()
        found = _WATCHERS[id(config)] = (config, made)
    return found[1]


async def take_pings(rt: Runtime, parsed: Parsed) -> Parsed:
    """The alerts of a request that are heartbeats' pings (their `alerts` matchers), taken out and
    recorded: a firing one pings, a resolved one (the pipeline said it stopped; silence says it better)
    is dropped. The rest, to be enqueued."""
    watchers = _watchers(rt.config)
    if not watchers or not parsed.alerts:
        return parsed
    rest: list[Alert] = []
    pings: list[tuple[str, Mapping[str, str]]] = []
    for alert in parsed.alerts:
        labels: dict[str, str] | None = None
        taken = False
        for watcher in watchers:
            if watcher.sources and alert.source not in watcher.sources:
                continue
            labels = match_labels(alert) if labels is None else labels
            if matches_all(watcher.matchers, labels):
                taken = True
                if alert.status is not Status.RESOLVED:
                    pings.append((watcher.name, key_labels(watcher.beat, alert.labels)))
        if not taken:
            rest.append(alert)
    if pings:
        await ping(rt, pings)
    if len(rest) == len(parsed.alerts):
        return parsed
    return Parsed(alerts=rest, rejected=parsed.rejected)


async def fire(rt: Runtime, due: Sequence[tuple[str, str, int]]) -> list[str]:
    """Expire the heartbeats whose timers (member, id, due) came due; the members to take out of the
    timers set (those applied, and those of heartbeats no longer in the mapping or pinged since)."""
    now = rt.clock()
    async with rt.redis.pipeline(transaction=False) as pipe:
        for _, bid, _ in due:
            pipe.hgetall(keys.heartbeat(bid))
        states = await pipe.execute()
    done: list[str] = []
    expiring: list[tuple[str, Beat]] = []
    pipe = rt.redis.pipeline(transaction=False)
    for (member, bid, due_ms), state in zip(due, states, strict=True):
        beat = _beat(bid, state)
        config = rt.config.heartbeats.get(beat.name) if beat else None
        owed = state.get(b"open_pending") == b"1"  # Redis Cluster: expired, its alert not added yet
        if beat is None or config is None or (beat.expired and not owed) or beat.due_ms != due_ms:
            done.append(member)  # gone, no longer in the mapping, already expired, or pinged since
            continue
        alert = expired_alert(beat.name, config, beat.labels, beat.last_ms, now)
        rt.scripts.heartbeat_expire(
            [keys.heartbeat(bid), rt.shards.intake_for(alert.identity)],
            [due_ms, now, beat.last_ms, alert.model_dump_json()],
            pipe,
        )
        expiring.append((member, beat))
    if not expiring:
        return done
    if is_cluster(rt.redis):
        replies = await on_cluster.expire(rt, pipe)
    else:
        replies = await rt.scripts.execute(pipe, raise_on_error=False)
    for (member, beat), reply in zip(expiring, replies, strict=True):
        if isinstance(reply, Exception):  # left claimed: it comes due again once the claim expires
            log.error("heartbeat_expiry_failed", heartbeat=beat.name, key=beat.labels, error=str(reply))
            continue
        done.append(member)
        if int(reply):
            board(rt.metrics).expired(beat.id)
            log.warning("heartbeat_expired", heartbeat=beat.name, key=beat.labels, last_ping=_iso(beat.last_ms))
    return done


async def read_all(client: Any, limit: int = 10_000) -> list[Beat]:
    """Every heartbeat Redis holds (the `limit` pinged most recently), most recently pinged first."""
    ids = [_s(i) for i in await client.zrevrange(keys.HEARTBEATS, 0, limit - 1)]
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for bid in ids:
            pipe.hgetall(keys.heartbeat(bid))
        states = await pipe.execute()
    return [beat for bid, state in zip(ids, states, strict=True) if (beat := _beat(bid, state)) is not None]


async def list_beats(client: Any, now_ms: int) -> list[dict[str, Any]]:
    """`bridge heartbeats list`."""
    return [beat.view(now_ms) for beat in await read_all(client)]


async def forget(client: Any, bid: str, shards: keys.Shards) -> bool:
    """Stop watching one heartbeat (a cluster taken down for good): its state, its index entries and its
    timer go. Its ticket, if open, stays: resolve it by hand (`bridge incidents resolve`). False if unknown."""
    state = await client.hgetall(keys.heartbeat(bid))
    beat = _beat(bid, state)
    if beat is None:
        return False
    # One MULTI on one Redis; on Redis Cluster the four keys are in four slots, each removal on its own
    # (a crash between them leaves an index entry or a timer of a heartbeat that is gone, both ignored).
    async with client.pipeline(transaction=not is_cluster(client)) as pipe:
        pipe.delete(keys.heartbeat(bid))
        pipe.zrem(keys.HEARTBEATS, bid)
        pipe.srem(keys.heartbeat_ids(beat.name), bid)
        pipe.zrem(shards.timers_for(bid), keys.timer_member(bid, TIMER_KIND, beat.due_ms))
        await pipe.execute()
    return True


# --- the gauge ------------------------------------------------------------------------------------


class Board(Collector):
    """Each heartbeat's last ping as this process knows it, rendered at scrape time as
    `bridge_heartbeat_age_seconds` (now - last ping) and `bridge_heartbeat_expired`."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, str, int, bool]] = {}  # id -> (name, key labels, last ping ms, expired)

    def pinged(self, bid: str, name: str, labels: Mapping[str, str], at_ms: int) -> None:
        self.last[bid] = (name, _key_text(labels), at_ms, False)

    def expired(self, bid: str) -> None:
        if bid in self.last:
            name, key, at, _ = self.last[bid]
            self.last[bid] = (name, key, at, True)

    def replace(self, beats: Iterable[Beat]) -> None:
        self.last = {b.id: (b.name, _key_text(b.labels), b.last_ms, b.expired) for b in beats}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "bridge_heartbeat_age_seconds",
            "Seconds since each heartbeat's last ping (by heartbeat and key labels), as this process last read it.",
            labels=["heartbeat", "key"],
        )
        expired = GaugeMetricFamily(
            "bridge_heartbeat_expired",
            "1 while a heartbeat is expired (its ticket open), else 0.",
            labels=["heartbeat", "key"],
        )
        now = time.time()
        for name, key, at_ms, gone in list(self.last.values()):
            age.add_metric([name, key], max(0.0, now - at_ms / 1000))
            expired.add_metric([name, key], 1.0 if gone else 0.0)
        yield age
        yield expired


_BOARDS: weakref.WeakKeyDictionary[Metrics, Board] = weakref.WeakKeyDictionary()


def board(metrics: Metrics) -> Board:
    """The heartbeat gauges of a process's metrics (registered on first use)."""
    found = _BOARDS.get(metrics)
    if found is None:
        found = _BOARDS[metrics] = Board()
        metrics.registry.register(found)
    return found


class Watch:
    """Reads every heartbeat's state from Redis every `gauges_every_s`, for the gauges; warns once at start
    of heartbeats that anyone may ping (no secret)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.board = board(rt.metrics)

    async def refresh(self) -> None:
        self.board.replace(await read_all(self.rt.redis))

    async def run(self, stop: asyncio.Event) -> None:
        open_ = [name for name, beat in self.rt.config.heartbeats.items() if not beat.secret_value()]
        if open_:
            log.warning(
                "heartbeats_unauthenticated",
                heartbeats=open_,
                hint="anyone who can reach the bridge can ping these at /heartbeat/<name>; set each one's secret",
            )
        while not stop.is_set():
            try:
                await self.refresh()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("heartbeats_redis_unavailable", error=str(exc))
            except Exception:  # the gauge may lag; the loop must not die
                log.exception("heartbeats_refresh_failed")
            await wait_for_event(stop, self.rt.tuning.gauges_every_s)


def _beat(bid: str, state: Mapping[Any, Any]) -> Beat | None:
    if not state:
        return None
    got = {_s(k): _s(v) for k, v in state.items()}
    try:
        labels = orjson.loads(got.get("labels", "{}"))
        return Beat(
            id=bid,
            name=got["name"],
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            first_ms=int(got.get("first", 0)),
            last_ms=int(got.get("last", 0)),
            due_ms=int(got.get("due", 0)),
            window_ms=int(got.get("window", 0)),
            expired=got.get("expired") == "1",
            expired_ms=int(got.get("expired_at", 0) or 0),
            pings=int(got.get("pings", 0)),
        )
    except (KeyError, ValueError, orjson.JSONDecodeError):
        return None  # not a state this version wrote: skipped


def _key_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ms: int) -> str:
    return _at(ms).isoformat().replace("+00:00", "Z")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
