"""Prometheus metrics of one bridge process, in a registry of its own (so tests can build many).

Counters and histograms are updated where things happen (ingress, engine, delivery, reload): an
in-memory increment, nothing more. Gauges that describe the shared state in Redis (intake lag and
pending entries, outbox, dead letters, incidents by state) are read by `refresh()` in the background,
every `gauges_every_s` (bridge.admin.upkeep), never on the webhook path nor on scrape: a scrape
renders what is in memory and costs the same with no incident and with 100,000. Every replica
reports the same shared gauges: aggregate them with `max`, not `sum` (the dashboard in
deploy/grafana/ does).

Names follow https://prometheus.io/docs/practices/naming/: `bridge_` prefix, base units (seconds),
`_total` on counters (added by prometheus-client), no label that repeats the metric name.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

import redis.exceptions
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.core import keys
from bridge.core.errors import DeskTransient
from bridge.core.source import Parsed

# Desk calls take tens of milliseconds when healthy and up to the desk timeout when not.
DESK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INCIDENT_SCAN_LIMIT = 10_000  # incidents (most recently changed) counted per refresh
INCIDENT_PAGE = 200  # of them read per round trip (~10 ms of the event loop), the loop free in between
STATES = ("pending", "open", "resolving", "resolved")
# The classic text format, which every Prometheus 2.x parses; generate_latest writes it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.sync_desks: tuple[str, ...] = ()  # desks whose ticket index `refresh` measures (every configured one)
        self._received: dict[tuple[str, str], Any] = {}  # (source, status) -> its child of alerts_received
        self.alerts_received = Counter(
            "bridge_alerts_received", "Alerts accepted from sources, by source and status.",
            ["source", "status"], registry=r,
        )  # fmt: skip
        self._repeated: dict[str, Any] = {}  # source -> its child of alerts_repeated
        self.alerts_repeated = Counter(
            "bridge_alerts_repeated",
            "Of the alerts received, identical copies of one this process wrote within the repeat window: "
            "answered, not written again (BRIDGE_REPEAT_WINDOW_MS).",
            ["source"], registry=r,
        )  # fmt: skip
        self.repeat_window_entries = Gauge(
            "bridge_repeat_window_entries",
            "Alert identities this process remembers for its repeat window (at most BRIDGE_REPEAT_WINDOW_MAX).",
            registry=r,
        )
        self.alerts_rejected = Counter(
            "bridge_alerts_rejected",
            "Alerts of a sound payload that could not be read (kept as dead letters).",
            ["source"], registry=r,
        )  # fmt: skip
        self.alerts_ours = Counter(
            "bridge_alerts_ours",
            "Notifications recognised as a tool's echo of the bridge's own acknowledgement upstream (dropped).",
            ["source"], registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            "bridge_decisions",
            "Decisions of the engine, by route and kind.",
            ["route", "decision"],
            registry=r,
        )
        self.engine_batch = Histogram(
            "bridge_engine_batch_alerts", "Intake entries per engine batch (BRIDGE_ENGINE_LINGER_MS gathers repeats).",
            buckets=(1, 2, 5, 10, 25, 50, 100, 256), registry=r,
        )  # fmt: skip
        self.desk_calls = Counter(
            "bridge_desk_calls",
            "Calls to service desks, by desk, action and outcome (ok, transient, rate_limited, rejected).",
            ["desk", "action", "outcome"], registry=r,
        )  # fmt: skip
        self.desk_latency = Histogram(
            "bridge_desk_call_duration_seconds", "Latency of service-desk calls.",
            ["desk", "action"], buckets=DESK_BUCKETS, registry=r,
        )  # fmt: skip
        self.change_checks = Counter(
            "bridge_change_checks",
            "Change lookups before an open (route `change:`), by desk and outcome: hit (the shared cache in "
            "Redis answered), miss (the desk was asked), failed (it could not be: the ticket opened anyway).",
            ["desk", "outcome"], registry=r,
        )  # fmt: skip
        self.problem_records = Counter(
            "bridge_problem_records",
            "Problem records (route `problem:`), by desk and outcome: opened, linked (a ticket linked to one), "
            "failed (a record or link the desk refused or did not answer).",
            ["desk", "outcome"], registry=r,
        )  # fmt: skip
        self.rate_limit_waits = Counter(
            "bridge_desk_rate_limit_waits",
            "Times delivery had to wait because a desk throttled it (429) or its rate limit was spent.",
            ["desk"], registry=r,
        )  # fmt: skip
        self.sync_received = Counter(
            "bridge_sync_events_received",
            "Desk-side changes taken in (the loop back), by desk, kind and how (push, poll).",
            ["desk", "kind", "via"], registry=r,
        )  # fmt: skip
        self.sync_events = Counter(
            "bridge_sync_events",
            "Desk-side changes applied or dropped, by desk, kind and outcome (MUTED, REOPEN, DUPLICATE, OURS, ...).",
            ["desk", "kind", "outcome"], registry=r,
        )  # fmt: skip
        self.sync_lag = Histogram(
            "bridge_sync_lag_seconds", "From a change at the desk (its own clock) to its being applied.",
            ["desk"], buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0), registry=r,
        )  # fmt: skip
        self.sync_cursor_age = Gauge(
            "bridge_sync_poll_cursor_age_seconds", "Age of a polled desk's cursor (its last change seen), per desk.",
            ["desk"], registry=r,
        )  # fmt: skip
        self.upstream_actions = Counter(
            "bridge_upstream_actions",
            "Actions on monitoring tools (acknowledge, extend, release, comment), by source, action and result.",
            ["source", "action", "result"], registry=r,
        )  # fmt: skip
        self.sync_keys = Gauge(
            "bridge_sync_keys",
            "Sizes of the loop back's key families: desk_events (stream), tickets (index entries, all desks),"
            " upstream_ready (incidents with upstream work).",
            ["family"], registry=r,
        )  # fmt: skip
        self.rate_limit_wait_seconds = Counter(
            "bridge_desk_rate_limit_wait_seconds",
            "Seconds of waiting announced by desks (Retry-After) or imposed by the shared rate limit.",
            ["desk"], registry=r,
        )  # fmt: skip
        self.reloads = Counter(
            "bridge_config_reloads",
            "Mapping reloads, by outcome (success, failure).",
            ["outcome"],
            registry=r,
        )
        self.reload_ok = Gauge(
            "bridge_config_last_reload_successful",
            "1 if the last mapping (re)load succeeded, 0 if it was rejected.", registry=r,
        )  # fmt: skip
        self.reload_time = Gauge(
            "bridge_config_last_reload_success_timestamp_seconds",
            "When the running mapping was loaded (Unix time).", registry=r,
        )  # fmt: skip
        for outcome in ("success", "failure"):  # known label values start at 0 (absent is not 0 in PromQL)
            self.reloads.labels(outcome)
        self.reload_ok.set(1)
        self.reload_time.set_to_current_time()
        self.dead_letters_dropped = Counter(
            "bridge_dead_letters_dropped",
            "Dead letters dropped by this process's trims of the stream, by reason (length, age).",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in ("length", "age"):
            self.dead_letters_dropped.labels(reason)
        self.retired_route_incidents = Gauge(
            "bridge_retired_route_incidents",
            "Live incidents of routes the mapping no longer has (by route id), as counted when the mapping "
            "was loaded (start-up, reload); they still resolve (bridge.runtime.routebook).",
            ["route"], registry=r,
        )  # fmt: skip
        self._retired: set[str] = set()
        self.bad_records = Counter(
            "bridge_bad_records",
            "Records in Redis that could not be read and were skipped, by kind (silence, incident, outbox_entry).",
            ["kind"], registry=r,
        )  # fmt: skip
        for kind in ("silence", "incident", "outbox_entry"):
            self.bad_records.labels(kind)
        # Shared state, read from Redis in the background (`refresh`).
        self.redis_up = Gauge(
            "bridge_redis_up", "1 if the last refresh of the shared gauges could read Redis.", registry=r
        )
        self.refreshed = Gauge(
            "bridge_shared_gauges_refresh_timestamp_seconds",
            "When the shared-state gauges were last read from Redis (Unix time).", registry=r,
        )  # fmt: skip
        self.intake_pending = Gauge(
            "bridge_intake_pending_entries",
            "Intake entries read by an engine but not yet decided and acknowledged.", registry=r,
        )  # fmt: skip
        self.intake_lag = Gauge(
            "bridge_intake_lag_seconds",
            "Age of the oldest intake entry not yet decided (0 when the engine is caught up).", registry=r,
        )  # fmt: skip
        self.outbox_incidents = Gauge(
            "bridge_outbox_incidents",
            f"Incidents with desk actions waiting for delivery (of the {INCIDENT_SCAN_LIMIT} most recent).",
            registry=r,
        )
        self.outbox_actions = Gauge(
            "bridge_outbox_actions",
            f"Desk actions waiting for delivery (of the {INCIDENT_SCAN_LIMIT} most recently changed incidents).",
            registry=r,
        )
        self.dead_letters = Gauge(
            "bridge_dead_letters", "Entries in the dead-letter stream (see `bridge dlq list`).", registry=r
        )
        self.noise_fields = Gauge(
            "bridge_noise_bucket_fields",
            "Fields of the noise counters' current ten-minute bucket (a few per route; buckets expire after a day).",
            registry=r,
        )
        self.incidents = Gauge(
            "bridge_incidents",
            f"Incidents by state (of the {INCIDENT_SCAN_LIMIT} most recently changed).",
            ["state"], registry=r,
        )  # fmt: skip

    # --- updated where things happen -------------------------------------------------------------

    def received(self, source: str, parsed: Parsed, *, repeated: int = 0) -> None:
        self.received_counts(source, Tally(alert.status.value for alert in parsed.alerts).items(), repeated=repeated)
        if parsed.rejected:
            self.alerts_rejected.labels(source).inc(len(parsed.rejected))
        if parsed.ours:
            self.alerts_ours.labels(source).inc(parsed.ours)

    def received_counts(self, source: str, counts: Iterable[tuple[str, int]], *, repeated: int = 0) -> None:
        """Alerts accepted, (status, count) pairs; of them, `repeated` identical copies not written again."""
        for status, count in counts:
            child = self._received.get((source, status))
            if child is None:  # labels() checks and locks on every call: once per pair is enough
                child = self._received[source, status] = self.alerts_received.labels(source, status)
            child.inc(count)
        if repeated:
            child = self._repeated.get(source)
            if child is None:
                child = self._repeated[source] = self.alerts_repeated.labels(source)
            child.inc(repeated)

    def transient(self, desk: str, exc: DeskTransient) -> str:
        """The outcome label of a transient failure; a throttled call also counts as a wait."""
        if exc.status == 429:
            self.rate_limit_waited(desk, exc.retry_after or 0.0)
            return "rate_limited"
        return "transient"

    def rate_limit_waited(self, desk: str, seconds: float) -> None:
        self.rate_limit_waits.labels(desk).inc()
        self.rate_limit_wait_seconds.labels(desk).inc(max(seconds, 0.0))

    def retired_routes(self, live: Mapping[str, Any]) -> None:
        """Route id -> its retired record (with `live`): the gauge's series, those no longer retired dropped."""
        for route in self._retired - set(live):
            self.retired_route_incidents.remove(route)
        for route, found in live.items():
            self.retired_route_incidents.labels(route).set(found.live)
        self._retired = set(live)

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set_to_current_time()

    # --- read in the background ------------------------------------------------------------------

    def collect(self) -> bytes:
        """The exposition format, from memory: a scrape sends Redis nothing."""
        return generate_latest(self.registry)

    async def refresh(self, client: Any, shards: keys.Shards | None = None) -> None:
        """Read the shared-state gauges from Redis (its intake in `shards`: one by default). If it cannot
        be read, `bridge_redis_up` is 0 and the shared gauges keep their last values."""
        try:
            await self._refresh(client, shards or keys.Shards())
        except (redis.exceptions.RedisError, OSError):
            self.redis_up.set(0)
        else:
            self.redis_up.set(1)
            self.refreshed.set_to_current_time()

    async def _refresh(self, client: Any, shards: keys.Shards) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for stream in shards.intakes:
                pipe.xpending(stream, keys.ENGINE_GROUP)
                pipe.xinfo_groups(stream)
            pipe.xlen(keys.DLQ)
            pipe.hlen(keys.noise(int(time.time() * 1000)))
            pipe.xlen(keys.DESK_EVENTS)
            pipe.zcard(keys.UPSTREAM_READY)
            for desk in self.sync_desks:
                pipe.hlen(keys.desk_tickets(desk))
            replies = await pipe.execute(raise_on_error=False)
        split = 2 * shards.count
        intake, (dlq, noise_fields, desk_events, upready, *tickets) = replies[:split], replies[split:]
        for family, size in (("desk_events", desk_events), ("upstream_ready", upready)):
            if isinstance(size, int):
                self.sync_keys.labels(family).set(size)
        self.sync_keys.labels("tickets").set(sum(n for n in tickets if isinstance(n, int)))
        if isinstance(dlq, Exception):
            raise dlq
        pending_total, lag = 0, 0.0
        for stream, pending, groups in zip(shards.intakes, intake[0::2], intake[1::2], strict=True):
            if isinstance(pending, redis.exceptions.ResponseError):
                pending, groups = {}, []  # no intake stream or group yet: nothing received
            pending_total += int(pending.get("pending", 0)) if pending else 0
            lag = max(lag, await _intake_lag(client, stream, pending, groups))
        self.intake_pending.set(pending_total)
        self.intake_lag.set(lag)
        self.dead_letters.set(int(dlq))
        if isinstance(noise_fields, int):
            self.noise_fields.set(noise_fields)
        counts = dict.fromkeys(STATES, 0)
        queued: list[int] = []
        for start in range(0, INCIDENT_SCAN_LIMIT, INCIDENT_PAGE):
            bases = await client.zrevrange(keys.INCIDENTS, start, start + INCIDENT_PAGE - 1)
            async with client.pipeline(transaction=False) as pipe:
                for base in bases:
                    ik = keys.IncidentKeys(_s(base))
                    pipe.hget(ik.state, "state")
                    pipe.llen(ik.outbox)
                replies = await pipe.execute()
            queued.extend(int(n or 0) for n in replies[1::2])
            for state in replies[0::2]:
                if state is not None and _s(state) in counts:
                    counts[_s(state)] += 1
            if len(bases) < INCIDENT_PAGE:
                break
        for state, count in counts.items():
            self.incidents.labels(state).set(count)
        self.outbox_incidents.set(sum(1 for n in queued if n))
        self.outbox_actions.set(sum(queued))


async def _intake_lag(client: Any, stream: str, pending: Any, groups: Any) -> float:
    """Seconds since the oldest undecided entry of an intake shard: the oldest pending one, else the
    first unread one."""
    oldest: str | None = None
    if pending and pending.get("pending"):
        oldest = _s(pending["min"])
    else:
        last = next((g["last-delivered-id"] for g in groups or [] if _s(g["name"]) == keys.ENGINE_GROUP), None)
        if last is not None:
            after: Any = await client.xrange(stream, "(" + _s(last), "+", count=1)
            oldest = _s(after[0][0]) if after else None
    if oldest is None:
        return 0.0
    return max(0.0, time.time() - int(oldest.split("-", 1)[0]) / 1000)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
