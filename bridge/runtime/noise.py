"""Noise per route: how many alerts came in, how many incidents and tickets they made, how many desk calls.

Counted where it happens, in the round trip that records it anyway: the engine adds its batch's counts
to the pipeline that marks, indexes and acknowledges it; delivery adds a desk call (and an opened
ticket) to the pipeline that records the call. One HINCRBY per route and figure, and one EXPIRE, into
the hash of the current ten minutes (`keys.noise`), which expires a day after it ends: at most 146
buckets, each with at most a few fields per route of the mapping (`bridge_noise_bucket_fields`).

The status page (`bridge.admin.ui`) sums the buckets of the last hour and of the last day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core import keys

ALERTS, INCIDENTS, SUPPRESSED, DESK_CALLS, TICKETS = "alerts", "incidents", "suppressed", "desk_calls", "tickets"
FIGURES = (ALERTS, INCIDENTS, SUPPRESSED, DESK_CALLS, TICKETS)
HOUR_BUCKETS = 3_600_000 // keys.NOISE_BUCKET_MS
DAY_BUCKETS = 86_400_000 // keys.NOISE_BUCKET_MS


def count(pipe: Any, now_ms: int, counts: Mapping[tuple[str, str], int]) -> int:
    """Queue the increments `(route id, figure) -> n` on `pipe`; how many commands were queued."""
    key = keys.noise(now_ms)
    queued = 0
    for (route, figure), n in counts.items():
        if n:
            pipe.hincrby(key, f"{route}|{figure}", n)
            queued += 1
    if queued:
        pipe.pexpire(key, keys.NOISE_KEEP_MS)
        queued += 1
    return queued


def from_decisions(decisions: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """The engine's batch, `(route id, decision) -> count`, as noise figures: every decision is an alert in,
    an OPEN a new incident, a SUPPRESSED one a silenced alert."""
    out: dict[tuple[str, str], int] = {}
    for (route, decision), n in decisions.items():
        out[route, ALERTS] = out.get((route, ALERTS), 0) + n
        if decision == "OPEN":
            out[route, INCIDENTS] = out.get((route, INCIDENTS), 0) + n
        elif decision == "SUPPRESSED":
            out[route, SUPPRESSED] = out.get((route, SUPPRESSED), 0) + n
    return out


async def read(redis: Any, now_ms: int) -> dict[str, dict[str, dict[str, int]]]:
    """Route id -> {"hour": figures, "day": figures} over the last 6 and 144 buckets (the current one
    included), in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for back in range(DAY_BUCKETS):
            pipe.hgetall(keys.noise(now_ms - back * keys.NOISE_BUCKET_MS))
        buckets = await pipe.execute()
    out: dict[str, dict[str, dict[str, int]]] = {}
    for back, bucket in enumerate(buckets):
        for field, raw in bucket.items():
            route, _, figure = _s(field).rpartition("|")
            if figure not in FIGURES or not route:
                continue
            try:
                n = int(raw)
            except ValueError:
                continue
            windows = out.setdefault(route, {"hour": dict.fromkeys(FIGURES, 0), "day": dict.fromkeys(FIGURES, 0)})
            windows["day"][figure] += n
            if back < HOUR_BUCKETS:
                windows["hour"][figure] += n
    return out


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
