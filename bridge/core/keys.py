"""The whole Redis key schema, in one place, behind a version prefix.

Keys of one incident share the hash tag `{<route>:<key hash>}` so that the scripts which touch them
run unchanged on Redis Cluster. The intake stream, the ready queue and the timers are split into
shards (`Shards`): one each on one Redis, by default, and sixteen each on a cluster, so that no one
slot carries all of ingest or all of the scheduling. Other global keys (the incidents index, the
silences, the dead letters) are one key each.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from dataclasses import dataclass, field

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "bridge:v1:"

INTAKE = PREFIX + "intake"  # stream of accepted alerts; consumer group ENGINE_GROUP (one shard: Shards)
ENGINE_GROUP = "engine"
DLQ = PREFIX + "dlq"  # stream of dead letters: bad alerts, unrouted alerts, rejected desk calls
TIMERS = PREFIX + "timers"  # zset "<base>|<kind>|<due ms>" scored by due time (one shard: Shards)
READY = PREFIX + "ready"  # zset of incident bases whose outbox has work, scored by when to try (one shard)
SHARDS = PREFIX + "shards"  # how many shards this Redis's intake, ready queue and timers have (Shards)
CLUSTER_SHARDS = 16  # the shards on Redis Cluster unless BRIDGE_SHARDS says otherwise
INCIDENTS = PREFIX + "incidents"  # zset of incident bases by last change, for listing
SILENCES = PREFIX + "silences"  # hash silence id -> JSON
SCRIPTS_LOADED = PREFIX + "scripts"  # marker that readiness checks
REPEATS_CHANNEL = PREFIX + "written"  # pub/sub: identities a process wrote anew (bridge.ingress.repeats)
# hash of the routes every mapping loaded had: "<route id>" -> its latest settings' hash, and
# "<route id>@<hash>" -> those settings (JSON), so incidents outlive their route (bridge.runtime.routebook)
ROUTES = PREFIX + "routes"


NOISE_BUCKET_MS = 600_000  # the noise counters' buckets: ten minutes each
NOISE_KEEP_MS = 86_400_000 + 2 * NOISE_BUCKET_MS  # each bucket's expiry: a day, and the bucket in progress


def noise(at_ms: int) -> str:
    """The noise counters of the ten minutes holding `at_ms` (hash `<route id>|<what>` -> count: alerts in,
    new incidents, suppressed, desk calls, tickets opened; bridge.runtime.noise), expiring after a day."""
    return f"{PREFIX}noise:{at_ms // NOISE_BUCKET_MS}"


HEARTBEATS = PREFIX + "heartbeats"  # zset heartbeat id -> its last ping (ms), for listing


HEARTBEAT_TIMER_KIND = "heartbeat"  # a heartbeat's expiry timer: `<id>|heartbeat|<due>` in the timers


def heartbeat(beat_id: str) -> str:
    """One heartbeat's state (hash), by its id: `<name>`, or `<name>/<hash of its key labels>`."""
    return f"{PREFIX}heartbeat:{{{beat_id}}}"


def heartbeat_ids(name: str) -> str:
    """The ids a heartbeat name has (set: one per key label set), bounded by its `max_keys`."""
    return f"{PREFIX}heartbeats:{name}"


def opsgenie_alert(source: str, alias_hash: str) -> str:
    """The Opsgenie door's record of one alert of a source (hash: `a` its last create's Alert JSON, `s` its
    status), by a hash of its alias: Opsgenie's calls other than create name only the alias."""
    return f"{PREFIX}opsgenie:{source}:{alias_hash}"


def desk_breaker(desk: str) -> str:
    """Set while a desk is failing: when (ms) it may be tried again. Shared by every replica. Every desk's
    breaker has the hash tag `{desks}`, so that a drain reads them all with one MGET on Redis Cluster too."""
    return f"{PREFIX}breaker:{{desks}}:{desk}"


def desk_bucket(desk: str) -> str:
    """A desk's shared token bucket (mapping `limits:`)."""
    return f"{PREFIX}bucket:{desk}"


def change_cache(desk: str, ci: str) -> str:
    """A desk's answer to "which approved change covers this configuration item now" (string: the change
    as JSON, or "none"), kept for the route's `change.cache_ttl` (at most an hour) and shared by replicas;
    by a hash of the CI's name, so any name makes a bounded key."""
    return f"{PREFIX}change:{desk}:{hashlib.sha256(ci.encode()).hexdigest()[:24]}"


def automation_bucket(runner: str) -> str:
    """An automation runner's shared token bucket (its `per_second`, `burst`): runs started."""
    return f"{PREFIX}bucket:automation:{runner}"


def login_failures(remote: str) -> str:
    """The status page's refused logins from one address (a token bucket: `LOGIN_BURST`, one more every
    `LOGIN_REFILL_S`), by a hash of the address; expires once full again."""
    return f"{PREFIX}bucket:ui-login:{hashlib.sha256(remote.encode()).hexdigest()[:24]}"


def login_blocked(remote: str) -> str:
    """Set (with expiry) while an address may not log in: it ran out of refused logins."""
    return f"{PREFIX}ui-login-blocked:{hashlib.sha256(remote.encode()).hexdigest()[:24]}"


def storm_count(route: str, group: str = "") -> str:
    """The new incidents a route's storm guard admitted within its window (zset base -> when), of one
    `storm.group_by` group (`group` its hash); with its flag, one hash tag."""
    return f"{PREFIX}storm:{{{route}:{group}}}:opened"


def replay(source: str, nonce: str) -> str:
    """A signed request's nonce seen on a source, kept for its replay window (bridge.ingress.webhook)."""
    return PREFIX + "seen:" + source + ":" + nonce


DESK_EVENTS = PREFIX + "deskevents"  # stream of desk-side changes (pushed or polled); group SYNC_GROUP
SYNC_GROUP = "sync"
UPSTREAM_READY = PREFIX + "upready"  # zset of incident bases whose upstream list has work, by when to try


def desk_tickets(desk: str) -> str:
    """A desk's ticket index (hash ticket id -> incident id `<base>:<epoch>`), written by delivery when a
    ticket opens, trimmed by upkeep once the incident is forgotten (bridge.sync)."""
    return f"{PREFIX}tickets:{desk}"


def sync_cursor(desk: str) -> str:
    """A polled desk's cursor (hash: `at` the last change's ms, `ids` the event ids seen at that ms)."""
    return f"{PREFIX}sync:{desk}:cursor"


def sync_lease(desk: str) -> str:
    """Which replica polls the desk now (string with expiry)."""
    return f"{PREFIX}sync:{desk}:lease"


def upstream_breaker(source: str) -> str:
    """Set while a source's upstream (its acknowledgement API) is failing: until when (ms)."""
    return f"{PREFIX}upbreaker:{source}"


def storm_flag(route: str, group: str = "") -> str:
    """While the route (its group) is in a storm: the time (ms) until which it lasts. New alerts join the
    major incident meanwhile."""
    return f"{PREFIX}storm:{{{route}:{group}}}"


@dataclass(frozen=True, slots=True)
class IncidentKeys:
    """The keys of one incident, addressed by its base `<route id>:<key hash>` (no epoch)."""

    base: str

    @property
    def tag(self) -> str:
        return PREFIX + "inc:{" + self.base + "}"

    @property
    def state(self) -> str:  # hash: state, epoch, counters, ticket:<epoch>, opening:<epoch>, repeats:<why>
        return self.tag

    @property
    def members(self) -> str:  # hash: alert identity -> "occurrence|status|severity"
        return self.tag + ":members"

    @property
    def outbox(self) -> str:  # list of pending desk actions (JSON), oldest first
        return self.tag + ":outbox"

    @property
    def audit(self) -> str:  # capped list of the milestones (opens, resolves, desk actions...), newest first
        return self.tag + ":audit"

    @property
    def changes(self) -> str:  # capped list of the other decisions (notes, pending, ...), newest first
        return self.tag + ":changes"

    @property
    def lease(self) -> str:  # delivery lease: one replica applies this incident's actions
        return self.tag + ":lease"

    @property
    def details(self) -> str:  # hash: "f:<identity>" its flap record, "n:<identity>" its alert's name
        return self.tag + ":details"

    @property
    def children(self) -> str:  # zset: a topology parent's child incidents (bases) by when they went live
        return self.tag + ":children"

    @property
    def units(self) -> str:  # zset, while pending: each counting unit -> the newest `seen` of its firing members
        return self.tag + ":units"

    @property
    def held(self) -> str:  # zset, while pending: the members it holds, by unit and seen (apply_alert.lua)
        return self.tag + ":held"

    @property
    def upstream(self) -> str:  # list of upstream actions (acknowledge, extend, release, comment), oldest first
        return self.tag + ":upstream"

    @property
    def opened(self) -> str:  # zset: the tickets the key opened (any epoch) within its `problem.within`, by when
        return self.tag + ":opened"

    @property
    def problem(self) -> str:  # hash: the key's live problem record (`ref`, `until`), or the claim to open one
        return self.tag + ":problem"

    def script_keys(self) -> list[str]:
        """KEYS[1..8] of apply_alert.lua, fire_timer.lua and resolve_incident.lua."""
        return [self.state, self.members, self.outbox, self.audit, self.changes, self.details, self.units, self.held]


@dataclass(frozen=True, slots=True)
class Shards:
    """The intake stream, the ready queue and the timers, each split into `count` keys.

    One shard is the keys as they always were (`INTAKE`, `READY`, `TIMERS`). With more, shard i's
    three keys share a hash tag chosen so that its slot lies in the middle of the i-th `count`th of the slot space:
    a cluster whose masters hold even ranges of slots (as `redis-cli --cluster create` makes them)
    gets an even share of the shards on each. An alert goes to the intake shard of its identity, an
    incident's ready marker and timers to the shards of its base, so each is always in one place.
    The count is fixed for a Redis's life: the first replica to start records it (`SHARDS`), and one
    started with another count refuses to start (bridge.runtime.shards).
    """

    count: int = 1
    intakes: tuple[str, ...] = field(init=False)
    readies: tuple[str, ...] = field(init=False)
    timers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 256:
            raise ValueError(f"BRIDGE_SHARDS={self.count}: use 1 to 256 (0: automatic)")
        if self.count == 1:
            tags = [""]
        else:
            tags = [":{" + _tag_in(i * REDIS_CLUSTER_HASH_SLOTS // self.count, self.count) + "}"
                    for i in range(self.count)]  # fmt: skip
        object.__setattr__(self, "intakes", tuple(INTAKE + t for t in tags))
        object.__setattr__(self, "readies", tuple(READY + t for t in tags))
        object.__setattr__(self, "timers", tuple(TIMERS + t for t in tags))

    def of(self, name: str) -> int:
        """The shard of an alert identity or an incident base (CRC-32: fast and stable)."""
        return zlib.crc32(name.encode()) % self.count if self.count > 1 else 0

    def intake_for(self, identity: str) -> str:
        return self.intakes[self.of(identity)]

    def ready_for(self, base: str) -> str:
        return self.readies[self.of(base)]

    def timers_for(self, member: str) -> str:
        """The timers shard of a timer member (`<base>|<kind>|<due>`) or of a base."""
        return self.timers[self.of(member.split("|", 1)[0])]

    def by_ready(self, ready: dict[str, int]) -> dict[str, dict[str, int]]:
        """`ready` (base -> score) split by ready shard."""
        return _split(ready, self.ready_for)

    def by_timers(self, members: dict[str, int]) -> dict[str, dict[str, int]]:
        """Timer members (member -> due) split by timers shard."""
        return _split(members, self.timers_for)


def _tag_in(first_slot: int, count: int) -> str:
    """The first tag `s<n>` whose slot lies near the middle of [first_slot, first_slot + the slots of one
    shard): within a sixteenth of the range (or 8 slots) on either side, so that no master boundary of
    an even split falls between a shard's range and its slot."""
    width = max(1, REDIS_CLUSTER_HASH_SLOTS // count)
    middle, near = first_slot + width // 2, max(8, width // 16)
    n = 0
    while abs(key_slot(f"s{n}".encode()) - middle) > near:
        n += 1
    return f"s{n}"


def _split(items: dict[str, int], key_of: object) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, score in items.items():
        out.setdefault(key_of(name), {})[name] = score  # type: ignore[operator]
    return out


@functools.lru_cache(maxsize=4096)
def script_keys(base: str) -> tuple[str, ...]:
    """`IncidentKeys(base).script_keys()`, made once per incident while it is in use: the engine needs
    them for every alert (eight strings of about 60 characters; 4,096 incidents' take about 2 MB)."""
    return tuple(IncidentKeys(base).script_keys())


def timer_member(base: str, kind: str, due_ms: int) -> str:
    return f"{base}|{kind}|{due_ms}"


def parse_timer_member(member: str) -> tuple[str, str, int]:
    base, rest = member.split("|", 1)  # a base never holds "|"; a kind may (auto:<identity>)
    kind, due = rest.rsplit("|", 1)
    return base, kind, int(due)


def base_of(incident_id: str) -> str:
    """`route:hash:epoch` -> `route:hash`."""
    return incident_id.rsplit(":", 1)[0]
