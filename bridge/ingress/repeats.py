"""Identical copies within moments: answered as the copy already written, not written again.

An Alertmanager HA pair, a sender's retry, several Prometheus servers with the same rules, a group
re-sent while its alerts fire: the same alert comes again within moments. Once one copy is in the
intake stream (durable), the engine finds every further copy an identical repeat (apply_alert.lua,
step 0a) and changes nothing but a counter. So each process remembers, per alert identity, the digest
of the copy it wrote last (everything but the time it was received) and when; a copy with the same
digest within `repeat_window_ms` of that write is counted (`bridge_alerts_repeated_total`) and
answered 202 with nothing written. A copy that differs in anything (status, start, severity, a label,
a follow-up) is written, and so is the first one after the window: the engine still sees an alert
that keeps firing at least once a window, its `repeats:repeat` counter counts the copies it saw.

A request whose whole body this process took before (same source, content type and bytes) skips the
parse too, when every alert of it is still within its window; a body with pings, dead letters or an
echo of the bridge's own is always parsed.

An alert is remembered under its source identity and, where routes set `identity:` (alert fields
that make several source alerts one member of an incident), under each such identity too: a copy is
answered only if it is what was written last under every one of them, so that a member fed by two
source alerts (a severity label that changes the fingerprint) sees A, B, A written, not A, B.

What another replica writes must end this process's window for that identity, or a copy here could
hide a change there (firing, resolved there, firing again here within the window). Every write is
published on `keys.REPEATS_CHANNEL` with its digests once its round trip is back (one PUBLISH for
the writes of a few milliseconds: `Announcer`); every process drops what the others wrote unless it is the very copy it
remembers, whose window then starts again (so replicas taking the same copies write an alert about
once a window between them, and do not end each other's windows at every write). A write whose round
trip failed is announced too, as one that may or may not be in the intake: it ends windows that differ
and starts none. While the subscription is not up (starting, Redis lost) nothing is absorbed and,
when it comes back, nothing remembered is kept.

What it can cost, stated in docs/operations.md: a state change elsewhere (a ticket closed at the desk)
within the window after a written copy is seen by the engine at the next written one, not at a copy
absorbed in between; a copy written and then lost by a Redis failover takes the copies absorbed after
it within the window with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.exceptions
import structlog
from aiohttp import web

from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.core.models import Alert
from bridge.core.routing import field_identity
from bridge.runtime.context import wait_for_event

log = structlog.get_logger("bridge.ingress.repeats")

HEARD_LEAD = 0.1  # of a window: how much earlier a window started by another process's write ends
RESUBSCRIBE_S = 1.0  # a lost subscription is tried again this often (nothing absorbed meanwhile)
VOLATILE = {"received_at"}  # what differs between identical copies


def digest(alert: Alert) -> bytes:
    """What makes two copies of an alert the same: all of it but the time it was received."""
    return written_form(alert)[0]


def written_form(alert: Alert) -> tuple[bytes, str]:
    """The alert's digest and its JSON for the intake, from one serialisation: the time it was received
    is put in last (the engine reads the JSON by name; an `include` dump of it cost half a whole one)."""
    rest = alert.model_dump_json(exclude=VOLATILE)
    received = orjson.dumps(alert.received_at, option=orjson.OPT_UTC_Z).decode()
    return hashlib.blake2b(rest.encode(), digest_size=16).digest(), f'{rest[:-1]},"received_at":{received}}}'


def body_key(source: str, content_type: str, body: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{source}\0{content_type}\0".encode())
    h.update(body)
    return h.digest()


Keys = tuple[str, ...]  # what an alert is remembered under: its source identity, and its routes' identities
Mark = tuple[Keys, bytes]  # an alert's keys and digest


def schemes(config: MappingConfig) -> tuple[tuple[str, ...], ...]:
    """The distinct `identity:` field lists of the mapping's routes."""
    return tuple(dict.fromkeys(tuple(route.identity) for route in config.routes if route.identity))


def keys_of(alert: Alert, fields: tuple[tuple[str, ...], ...]) -> Keys:
    """The alert's source identity, then its identity under each route scheme (numbered: no two collide)."""
    if not fields:
        return (alert.identity,)
    return (alert.identity, *(f"{i}|{field_identity(alert, each)}" for i, each in enumerate(fields)))


# A request body taken before: its alerts' marks, their count by status ((status, count) pairs), the
# answer to a copy. Plain tuples of strings and bytes, as the keys' entries are: the collector stops
# tracking those, where a hundred thousand objects of a class would be walked by every full collection.
Body = tuple[tuple[Mark, ...], tuple[tuple[str, int], ...], bytes]


class RepeatWindow:
    """Per process: key -> (digest written last, when), and request bodies taken, both bounded.

    `window_s` 0 turns it off. Both maps drop their oldest entries past `limit` (a key written again
    moves to the end), so memory stays flat whatever the number of alerts.
    """

    def __init__(self, window_s: float, limit: int) -> None:
        self.window_s, self.limit = window_s, limit
        self.up = asyncio.Event()  # set while the subscription that ends windows is up (`listen`)
        self.sender = os.urandom(8).hex()  # this process's name on the channel
        # Oldest first (OrderedDict: dropping the oldest is O(1), a plain dict's grows with the holes).
        self._written: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bodies: OrderedDict[bytes, Body] = OrderedDict()
        self._held = 0  # alerts of the bodies kept: bounded by `limit`, as the keys are
        self.announcer: Announcer | None = None  # set by `listen`: how this process's writes are announced
        self._schemes: tuple[MappingConfig | None, tuple[tuple[str, ...], ...]] = (None, ())

    @property
    def live(self) -> bool:
        return self.up.is_set()

    def __len__(self) -> int:
        return len(self._written)

    @property
    def bodies(self) -> int:
        """Request bodies kept."""
        return len(self._bodies)

    def __contains__(self, name: str) -> bool:
        return name in self._written

    def schemes(self, config: MappingConfig) -> tuple[tuple[str, ...], ...]:
        """`schemes(config)`, worked out once per mapping (a reload brings a new one)."""
        if self._schemes[0] is not config:
            self._schemes = (config, schemes(config))
        return self._schemes[1]

    def knows(self, mark: Mark) -> bool:
        """A copy of this alert was written (by this process, or heard of) and is still remembered."""
        return mark[0][0] in self._written

    def fresh(self, mark: Mark, now: float) -> bool:
        """This copy is the one written last under each of its keys, within the window."""
        names, alert_digest = mark
        for name in names:
            seen = self._written.get(name)
            if seen is None or seen[0] != alert_digest or now - seen[1] >= self.window_s:
                return False
        return True

    def body(self, key: bytes, now: float) -> Body | None:
        """A body taken before whose every alert is still fresh: answer it as it was."""
        if not self.live:
            return None
        found = self._bodies.get(key)
        if found is None or not all(self.fresh(mark, now) for mark in found[0]):
            return None
        return found

    def keep_body(self, key: bytes, body: Body) -> None:
        if self.live:
            old = self._bodies.pop(key, None)
            self._held += len(body[0]) - (len(old[0]) if old else 0)
            self._bodies[key] = body
            while self._held > self.limit and self._bodies:
                self._held -= len(self._bodies.popitem(last=False)[1][0])

    def wrote(self, written: Iterable[Mark], now: float) -> None:
        """These copies are durable: their windows start now."""
        if not self.live:
            return
        for names, d in written:
            for name in names:
                self._written[name] = (d, now)
                self._written.move_to_end(name)  # the oldest are dropped first
        while len(self._written) > self.limit:
            self._written.popitem(last=False)

    def heard(self, durable: Iterable[tuple[str, str]], unsure: Iterable[tuple[str, str]], now: float) -> None:
        """Another process wrote these (key, digest in hex): where that is not the copy this one wrote last,
        a copy here is written again (bodies holding it no longer match). Where it is and the write is
        `durable`, the window starts again, `HEARD_LEAD` of it before now: the intake's last copy under
        that key is the one remembered, written moments ago. So replicas taking the same copies write each
        alert about once a window between them, not once each: the ones that heard of a write see their
        windows end a little before the writer's, the first of them to take a copy then writes it, and the
        others hear of that before their windows end (ending at once, they all wrote, the news of each
        write still on its way). `unsure` writes are those whose round trip failed: they may or may not be
        in the intake, so they end a window that differs and start none."""
        start = now - self.window_s * HEARD_LEAD
        for name, hexed in durable:
            seen = self._written.get(name)
            if seen is None:
                continue
            if seen[0].hex() == hexed:
                self._written[name] = (seen[0], max(seen[1], start))
                self._written.move_to_end(name)
            else:
                del self._written[name]
        for name, hexed in unsure:
            seen = self._written.get(name)
            if seen is not None and seen[0].hex() != hexed:
                del self._written[name]

    def stop(self) -> None:
        """The subscription is down: absorb nothing, and keep nothing that a missed message could have ended."""
        self.up.clear()
        self.forget()

    def forget(self) -> None:
        """Keep nothing remembered: what another process wrote meanwhile is not known here."""
        self._written.clear()
        self._bodies.clear()
        self._held = 0


REPEATS = web.AppKey("repeats", RepeatWindow)  # the app's window (bridge.process.app makes it)


def announcement(window: RepeatWindow, durable: list[tuple[str, str]], unsure: list[tuple[str, str]]) -> bytes:
    """The PUBLISH payload: a JSON array of the sender, then the [key, digest in hex] pairs written, then
    those whose round trip failed (`RepeatWindow.heard`)."""
    return orjson.dumps([window.sender, durable, unsure])


ANNOUNCE_EVERY_S = 0.005  # the writes of this long go out in one PUBLISH


class Announcer:
    """The writes of a few milliseconds (ANNOUNCE_EVERY_S), announced in one PUBLISH: every process reads
    every message, its own included (a message per request cost each process about 30 µs an alert at
    one alert per request; one per event-loop turn, still several per millisecond under load)."""

    def __init__(self, window: RepeatWindow, publish: Callable[[bytes], Awaitable[Any]]) -> None:
        self.window, self.publish = window, publish
        self._durable: list[tuple[str, str]] = []
        self._unsure: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, written: list[Mark], *, durable: bool = True) -> None:
        """These copies were written (`durable`) or their round trip failed: each key with its digest in hex."""
        if not written:
            return
        if not self._durable and not self._unsure:
            asyncio.get_running_loop().call_later(ANNOUNCE_EVERY_S, self._send)
        (self._durable if durable else self._unsure).extend((name, d.hex()) for names, d in written for name in names)

    def _send(self) -> None:
        payload = announcement(self.window, self._durable, self._unsure)
        self._durable, self._unsure = [], []
        task = asyncio.create_task(self._publish(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, payload: bytes) -> None:
        try:
            await self.publish(payload)
        except (redis.exceptions.RedisError, OSError) as exc:  # the others' windows end within one anyway
            log.warning("repeat_window_unannounced", error=str(exc))


async def until_live(window: RepeatWindow, seconds: float) -> bool:
    """Wait (at most `seconds`) for the subscription, so that a process absorbs copies from its first
    requests on; False if it is not up by then (it comes up later, meanwhile every copy is written)."""
    if window.window_s <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(window.up.wait(), seconds)
    return window.live


async def listen(
    client: Any, window: RepeatWindow, stop: asyncio.Event, publish: Callable[[bytes], Awaitable[Any]] | None = None
) -> None:
    """Keep the subscription up and apply what other processes announce, until `stop`; `window.live`
    only while subscribed. `client` is a redis.asyncio client (one node of a cluster will do: a PUBLISH
    reaches every node's subscribers); `publish` sends an announcement (default: `client`'s PUBLISH)."""
    if window.window_s <= 0:
        return
    own = orjson.dumps([window.sender])[:-1]  # `["<sender>"`: this process's own messages, skipped unread
    window.announcer = Announcer(window, publish or (lambda payload: client.publish(keys.REPEATS_CHANNEL, payload)))
    while not stop.is_set():
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(keys.REPEATS_CHANNEL)
            while not stop.is_set():
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # also after redis-py subscribed again on its own:
                    window.forget()  # what came meanwhile was missed, so nothing remembered is kept
                    window.up.set()
                elif message["type"] == "message" and not message["data"].startswith(own):
                    heard(window, message["data"])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if window.live:
                log.warning("repeat_window_paused", error=str(exc), retry_s=RESUBSCRIBE_S)
        finally:
            window.stop()
            with contextlib.suppress(Exception):  # a connection already gone
                await pubsub.aclose()
        await wait_for_event(stop, RESUBSCRIBE_S)


def heard(window: RepeatWindow, data: bytes) -> None:
    """Apply another process's announcement; one not of this form (anyone may publish on the channel)
    is logged and skipped, and ends every window, as a missed one would."""
    try:
        _, durable, unsure = orjson.loads(data)
        window.heard(durable, unsure, time.monotonic())
    except (ValueError, TypeError) as exc:
        log.warning("repeat_announcement_unreadable", error=str(exc)[:200], size=len(data))
        window.forget()
