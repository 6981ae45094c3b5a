"""Ingress: POST /webhook/{source} -> auth -> size -> content type -> parse -> XADD -> 202.

The request path does only that: no template rendering, no desk call, no lock. An alert is
acknowledged only once it is durable in Redis; Redis unreachable is a 503 so the sender retries.
An identical copy of one this process made durable moments ago is acknowledged as that one
(bridge/ingress/repeats.py).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.core import keys
from bridge.core.errors import AuthError, PayloadError, TooLarge, UnsupportedMedia
from bridge.core.secrets import Masker
from bridge.core.source import ParseContext, Parsed
from bridge.ingress.repeats import REPEATS, Mark, RepeatWindow, body_key, keys_of, written_form
from bridge.runtime import dead_letters, durability
from bridge.runtime.context import RUNTIME, Runtime
from bridge.runtime.heartbeats import take_pings
from bridge.runtime.http import json_response

log = structlog.get_logger("bridge.ingress.webhook")


async def webhook(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = request.match_info["source"]
    source = runtime.config.sources.get(name)
    if source is None:
        return json_response({"error": "unknown_source", "detail": f"no source named {name!r} is configured"}, 404)
    adapter = runtime.sources[name]
    secret = source.secret_value()

    if secret and adapter.verify is None:
        check_bearer(request.headers.get("Authorization", ""), secret)
    length = request.content_length
    if length is not None and length > source.max_body:
        raise TooLarge(f"body of {length} bytes exceeds this source's limit of {source.max_body}")
    if request.content_type not in adapter.content_types:
        accepted = " or ".join(sorted(adapter.content_types))
        raise UnsupportedMedia(f"Content-Type {request.content_type!r} not accepted; use {accepted}")
    body = await request.read() if length is not None else await read_bounded(request, source.max_body)
    if not body:
        raise PayloadError("empty body")
    now = datetime.now(UTC)
    if secret and adapter.verify is not None:
        adapter.verify(body, request.headers, request.query, secret, now)
        if adapter.replay is not None:
            await refuse_replay(runtime, name, adapter.replay(request.headers))

    window = request.app[REPEATS]
    key = body_key(name, request.content_type, body) if window.live and window.bodies else b""
    if key and (taken := window.body(key, time.monotonic())) is not None:  # a body taken moments ago
        alerts_taken, statuses, copy = taken
        runtime.metrics.received_counts(name, statuses, repeated=len(alerts_taken))
        return web.Response(body=copy, status=202, content_type="application/json")

    ctx = ParseContext(source=name, received_at=now, options=source.options)
    try:
        parsed = adapter.parse(body, request.content_type, request.headers, ctx)
    except ValidationError as exc:  # what the Alert model refuses (a time out of range), from any parser
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise PayloadError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    alerts = await take_pings(runtime, parsed)  # a Watchdog pings, not alerts
    marks = await enqueue(runtime, name, alerts, window)
    runtime.metrics.received(name, parsed, repeated=marks.repeated)
    # A body is kept once it repeats something remembered: a body of alerts never seen (most bodies where
    # nothing repeats) is not kept, at one body per request that was a few µs and its memory each.
    if marks.known and window.live and alerts is parsed and not parsed.rejected and not parsed.ours:
        key = key or body_key(name, request.content_type, body)
        copy = orjson.dumps({"accepted": len(marks.alerts), "rejected": 0, "repeated": len(marks.alerts)})
        statuses = tuple(Tally(alert.status.value for alert in parsed.alerts).items())
        window.keep_body(key, (marks.alerts, statuses, copy))
    # Debug, not info: at storm rates a line per request costs much of the request path's CPU;
    # bridge_alerts_received_total counts them instead.
    log.debug("alerts_accepted", accepted=len(parsed.alerts), rejected=len(parsed.rejected))
    answer: dict[str, Any] = {"accepted": len(parsed.alerts), "rejected": len(parsed.rejected)}
    if marks.repeated:
        answer["repeated"] = marks.repeated  # identical copies of alerts written moments ago: not written again
    if parsed.rejected:
        answer["errors"] = [r.reason for r in parsed.rejected]
    if parsed.ours:
        answer["ours"] = parsed.ours  # the tool's echo of the bridge's own acknowledgement: dropped
    return json_response(answer, 202)


def check_bearer(header: str, secret: str) -> None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing 'Authorization: Bearer <token>' header")
    # aiohttp hands over header bytes that are not UTF-8 as surrogate escapes; encode them back
    # to those bytes so a garbled token is a 401 and not a UnicodeEncodeError (a 500).
    if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), secret.encode()):
        raise AuthError("bearer token does not match this source's secret")


async def refuse_replay(runtime: Runtime, source: str, seen: tuple[str, float] | None) -> None:
    """A signed request seen before within its replay window (by any replica) is refused: 401."""
    if seen is None:
        return
    nonce, seconds = seen
    key = keys.replay(source, hashlib.sha256(nonce.encode("utf-8", "surrogateescape")).hexdigest()[:32])
    if not await runtime.redis.set(key, 1, nx=True, px=max(1, int(seconds * 1000))):
        raise AuthError("this signed request was already received (a replay): each signature is accepted once")


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """Read a body of no stated length (chunked), refusing (413) as soon as it passes `limit`; one
    with a Content-Length was refused above if too long, and is read at once."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds this source's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def enqueue(runtime: Runtime, source: str, parsed: Parsed, window: RepeatWindow | None = None) -> Marks:
    """One round trip: every alert to the intake stream, every unreadable one to the dead letters; but
    an identical copy of an alert this process wrote within the repeat window, which is only counted.
    Returns each alert's mark (bridge/ingress/repeats.py), and how many were such copies.

    The round trip is shared with the other requests (and the engine's and delivery's commands) of
    the same event-loop turn (bridge/runtime/batch.py); it raises what Redis raised for any of this request's.
    """
    alerts, marks, written = parsed.alerts, Marks(), []
    if window is not None and window.window_s > 0 and alerts:  # live or not: the others must hear
        now, schemes = time.monotonic(), window.schemes(runtime.config)
        forms = [written_form(alert) for alert in alerts]
        marks.alerts = tuple((keys_of(alert, schemes), d) for alert, (d, _) in zip(alerts, forms, strict=True))
        fresh = [window.fresh(mark, now) for mark in marks.alerts]
        marks.known = any(window.knows(mark) for mark in marks.alerts)
        taken = [(alert, form[1]) for alert, form, seen in zip(parsed.alerts, forms, fresh, strict=True) if not seen]
        written = [mark for mark, seen in zip(marks.alerts, fresh, strict=True) if not seen]
        marks.repeated = len(parsed.alerts) - len(taken)
        if not taken and not parsed.rejected:
            return marks
    else:
        taken = [(alert, alert.model_dump_json()) for alert in alerts]
    pipe = runtime.redis.pipeline(transaction=False)
    shards = runtime.shards
    streams = [shards.intake_for(alert.identity) for alert, _ in taken]  # an alert's shard: its identity's
    for (_, payload), stream in zip(taken, streams, strict=True):
        pipe.xadd(stream, {"a": payload})
    mask = runtime.masker  # what the sender sent, without the mapping's secrets
    letters = [
        {"kind": "bad_alert", "source": source, "reason": mask.text(bad.reason), "raw": letter_json(bad.raw, mask)}
        for bad in parsed.rejected
    ]
    queued = dead_letters.add(pipe, runtime.tuning, letters, runtime.clock())
    waits = durability.queue_wait(pipe, runtime.tuning, streams)  # last: it covers every write before it
    announcer = window.announcer if window is not None else None
    try:
        replies = await runtime.scripts.execute(pipe)
        if queued:
            dead_letters.dropped(runtime.metrics, replies[: len(replies) - waits])
        if waits:
            durability.replicated(replies[-waits:], runtime.tuning)
    except BaseException:  # written or not, the others' windows that differ end (the sender retries)
        if announcer is not None:
            announcer.add(written, durable=False)
        raise
    if window is not None:
        window.wrote(written, time.monotonic())
        if announcer is not None:
            announcer.add(written)  # in the next round trip: the others' windows for these end, or start again
    return marks


@dataclass(slots=True)
class Marks:
    """What `enqueue` found: each alert's mark (its keys and digest) when the repeat window is on, how
    many were identical copies of ones written within it, and whether any was remembered at all."""

    alerts: tuple[Mark, ...] = ()
    repeated: int = 0
    known: bool = False  # some alert of them was remembered before (bodies are kept only then)


LETTER_DEPTH = 32  # levels of a rejected alert kept in its dead letter; deeper ones are cut


def letter_json(raw: Any, mask: Masker) -> bytes:
    """A rejected alert as JSON for its dead letter, whatever it is, without the mapping's secrets: one
    nested deeper than JSON can be written (orjson stops at 255 levels) is kept down to LETTER_DEPTH
    levels, the rest cut."""
    return orjson.dumps(mask.value(_cut(raw, LETTER_DEPTH)), default=str)


def _cut(value: Any, depth: int) -> Any:
    if not isinstance(value, dict | list):
        return value
    if depth <= 0:
        return f"(cut: nested deeper than {LETTER_DEPTH} levels)"
    if isinstance(value, dict):
        return {str(k): _cut(v, depth - 1) for k, v in value.items()}
    return [_cut(v, depth - 1) for v in value]
