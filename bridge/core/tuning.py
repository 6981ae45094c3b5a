"""Engine and delivery knobs that are not mapping policy: batch sizes, leases, poll intervals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tuning:
    """Engine and delivery knobs that are not mapping policy (tests shrink them)."""

    batch: int = 256  # intake entries per XREADGROUP
    engine_readers: int = 3  # batches in flight per engine (with more than one shard: one per shard instead)
    block_ms: int = 1000  # XREADGROUP block
    # After a batch that was not full and held only repeats (decided DUPLICATE: nothing for a desk), the engine
    # waits this long before it reads again, so that such alerts arriving one by one are decided in batches
    # (a batch's round trips cost about as much for one alert as for a hundred). An alert that comes during
    # the wait waits at most this much longer; after a batch with desk work it reads again at once. 0: never.
    engine_linger_ms: int = 20
    claim_idle_ms: int = 30_000  # an intake entry unacked this long belongs to a dead consumer
    claim_every_s: float = 5.0
    timer_tick_s: float = 0.5
    timer_lease_ms: int = 30_000
    lease_ms: int = 30_000  # delivery lease per incident
    delivery_poll_s: float = 0.05
    delivery_concurrency: int = 64  # incidents in delivery at once per process
    attempts: int = 4  # desk call attempts within one delivery pass (tenacity)
    backoff_max_s: float = 60.0  # a desk that keeps failing is tried again at most this far apart
    retention_ms: int = 7 * 86_400_000  # keys of a resolved incident live this long (plus reopen window)
    dlq_max_len: int = 10_000  # dead letters kept at most (the oldest dropped first, counted and logged)
    dlq_max_age_ms: int = 7 * 86_400_000  # dead letters older than this are dropped (counted and logged)
    gauges_every_s: float = 15.0  # the shared-state gauges of /metrics are read from Redis this often
    upkeep_every_s: float = 60.0  # trims: the incidents index, expired silences, old dead letters
    desk_timeout_s: float = 10.0
    # What a 202 means (bridge.runtime.durability): "everysec", in Redis and on disk within a second (AOF
    # everysec: a crash of Redis's machine may lose up to that second); "fsync", on disk before the
    # answer (the embedded Redis runs `appendfsync always`; an external one is checked at start).
    durability: str = "everysec"
    wait_replicas: int = 0  # > 0: a webhook is answered 202 only once that many replicas have its alerts (WAIT)
    wait_timeout_ms: int = 1000  # how long WAIT waits for them; fewer in time is a 503 (the sender retries)
    # The intake stream, ready queue and timers are split into this many keys each (bridge.core.keys.Shards):
    # 0 is automatic, 1 on one Redis or Sentinel, 16 on Redis Cluster. Fixed for a Redis's life.
    shards: int = 0
    # An identical copy of an alert this process wrote less than this long ago is answered 202 and not
    # written again (bridge.ingress.repeats); 0 writes every copy. Identities and bodies remembered: at most.
    repeat_window_ms: int = 1000
    repeat_window_max: int = 100_000

    def __post_init__(self) -> None:
        if self.durability not in ("everysec", "fsync"):
            raise ValueError(f"BRIDGE_DURABILITY={self.durability!r}: use everysec (the default) or fsync")
        if self.wait_replicas < 0 or self.wait_timeout_ms < 1:
            raise ValueError("BRIDGE_WAIT_REPLICAS must be 0 or more and BRIDGE_WAIT_TIMEOUT_MS at least 1")
        if self.repeat_window_ms < 0 or self.repeat_window_max < 1:
            raise ValueError("BRIDGE_REPEAT_WINDOW_MS must be 0 or more and BRIDGE_REPEAT_WINDOW_MAX at least 1")
        if self.engine_linger_ms < 0:
            raise ValueError("BRIDGE_ENGINE_LINGER_MS must be 0 or more")
        if not 0 <= self.shards <= 256:
            raise ValueError(f"BRIDGE_SHARDS={self.shards}: use 1 to 256, or 0 for automatic")
