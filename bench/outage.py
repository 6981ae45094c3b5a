"""The noise bench (issue 30): a seeded synthetic outage, and what the bridge makes of it.

The outage: 500 hosts behind 5 switches, watched by Nagios (host and service checks), an Alertmanager HA
pair (Prometheus node and database alerts; both replicas send every notification) and Splunk (searches,
which never send a clear). In it, one switch dies (its 100 hosts go down with it, and come back with it),
a database fails (seen by Prometheus and by a Splunk search on the application hosts), a storage array
degrades slowly (disk latency, host after host, for three hours), 5 services flap, and 20 unrelated
problems come and go. Its root causes, the ideal ticket count, are 1 + 1 + 1 + 5 + 20 = 28.

Alertmanager is simulated as it sends: groups (`group_by`), `group_wait` 30 s, `group_interval` 5 m
(each notification carries every alert of the group), `repeat_interval` (4 h by default), resolved
alerts sent once. Nagios sends one notification per state change, Splunk one webhook per result of each
run of a search (every 5 minutes while the condition holds).

Shapes (`SHAPES`): the switch's alert before its hosts' alerts or after them (host checks often fire
first), Alertmanager's repeat interval, one Alertmanager or an HA pair, and the mapping with or without
`topology.hold` (without it, the hosts' tickets open, and are closed as duplicates when the switch
comes). Each is replayed through the real engine, Lua steps and delivery (`bridge.tools.replay`,
virtual time: 4 hours in seconds) with the mapping an ops team would write from the README
(`mapping()`): tickets against the ideal, the tickets still standing for a root cause (the others
closed as duplicates of their topology parent's), alerts per ticket, desk calls and churn (reopens,
resolves after the first), next to what ticketing per alert identity and per Alertmanager group (the
Jira receiver's model: one issue per group key; per identity for the other sources) would have
opened for the same recording.

    python -m bench.outage                      # the five shapes, full size (4,000 to 10,000 alerts each)
    python -m bench.outage --scale 0.2 --seed 7 # smaller, another seed
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bridge.core.config import MappingConfig
from bridge.tools.replay import Webhook

T0 = 1_767_600_000_000  # 2026-01-05T08:00:00Z, in ms
MIN = 60_000
IDEAL = {"switch": 1, "database": 1, "storage": 1, "flapping": 5, "unrelated": 20}
HOST_KEY = '{{ labels.host or labels.instance.split(":")[0] }}'
SWITCH_KEY = (
    '{{ labels.switch or (labels.host if labels.host_groups == "switches" else labels.host_groups) | default("") }}'
)


@dataclass(frozen=True)
class Shape:
    name: str
    parent_last: bool = False  # the switch's alert comes after its hosts' alerts
    repeat_interval_ms: int = 4 * 60 * MIN  # Alertmanager's default
    ha: bool = True  # an Alertmanager HA pair: every notification twice
    hold: str = "5m"  # the mapping's topology.hold ("0s": children open at once, adopted when the parent comes)


SHAPES = (
    Shape("parent_first"),
    Shape("parent_last", parent_last=True),
    Shape("parent_last_repeat_10m", parent_last=True, repeat_interval_ms=10 * MIN),
    Shape("parent_last_one_am", parent_last=True, ha=False),
    Shape("parent_last_no_hold", parent_last=True, hold="0s"),
)


@dataclass
class Outage:
    shape: Shape
    seed: int
    hooks: list[Webhook]
    ideal: int = sum(IDEAL.values())
    alerts: int = 0  # alerts in the webhooks (an Alertmanager notification carries several)
    identities: set[str] = field(default_factory=set)  # alert identities that fired: per-alert ticketing
    am_groups: set[str] = field(default_factory=set)  # Alertmanager group keys: per-group ticketing
    others: set[str] = field(default_factory=set)  # identities of the other sources' alerts

    @property
    def per_group(self) -> int:
        """Tickets ticketing per Alertmanager group (and per identity for Nagios and Splunk) opens."""
        return len(self.am_groups) + len(self.others)


class _Builder:
    def __init__(self, shape: Shape, seed: int, scale: float) -> None:
        self.shape, self.rng, self.scale = shape, random.Random(seed), scale
        self.hooks: list[Webhook] = []
        self.out = Outage(shape, seed, self.hooks)
        self._problem = 1000

    def at(self, minutes: float, jitter_s: float = 0.0) -> int:
        return T0 + int(minutes * MIN + self.rng.uniform(0, jitter_s) * 1000)

    # --- Nagios: one notification per state change -------------------------------------------------
    def nagios(self, at: int, host: str, *, up: bool, service: str = "", groups: str = "", since: int = 0) -> None:
        obj = "service" if service else "host"
        if not up:
            self._problem += 1
        state = ("OK" if up else "CRITICAL") if service else ("UP" if up else "DOWN")
        body: dict[str, Any] = {
            "notification_type": "RECOVERY" if up else "PROBLEM",
            "object_type": obj,
            "host_name": host,
            "host_state": "UP" if service or up else "DOWN",
            "host_groups": groups,
            "timet": str(at // 1000),
            f"{obj}_output": f"{state} - synthetic",
            f"{obj}_problem_id": "0" if up else str(self._problem),
            f"last_{obj}_problem_id": str(self._problem),
            f"{obj}_last_state_change": str((since or at) // 1000),
        }
        if service:
            body.update(service_desc=service, service_state=state)
        identity = f"{host}!{service}" if service else host
        if not up:
            self.out.identities.add(identity)
            self.out.others.add(identity)
        self.out.alerts += 1
        self.hooks.append(Webhook("nagios", at, orjson.dumps(body)))

    # --- Splunk: one webhook per result of each run -------------------------------------------------
    def splunk(self, at: int, search: str, result: dict[str, str]) -> None:
        body = {"sid": f"scheduler__{search}_{at}", "search_name": search, "app": "search", "owner": "admin",
                "results_link": "https://splunk.example.com/app/search", "result": result}  # fmt: skip
        identity = f"splunk|{search}|{result.get('host', '')}"
        self.out.identities.add(identity)
        self.out.others.add(identity)
        self.out.alerts += 1
        self.hooks.append(Webhook("splunk", at, orjson.dumps(body)))

    # --- Alertmanager: groups, group_wait, group_interval, repeat_interval, an HA pair -----------------
    def alertmanager(self, group_by: tuple[str, ...], alerts: Sequence[tuple[dict[str, str], int, int | None]]) -> None:
        """`alerts`: (labels, fires at, resolves at or None) as Prometheus evaluates them."""
        groups: dict[tuple[str, ...], list[tuple[dict[str, str], int, int | None]]] = defaultdict(list)
        for labels, fires, resolves in alerts:
            groups[tuple(labels.get(k, "") for k in group_by)].append((labels, fires, resolves))
        for key, members in groups.items():
            self._group(group_by, key, members)

    def _group(self, group_by: tuple[str, ...], key: tuple[str, ...], members: list[Any]) -> None:
        group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in zip(group_by, key, strict=True)) + "}"
        wait, interval, repeat = 30_000, 5 * MIN, self.shape.repeat_interval_ms
        first = min(f for _, f, _ in members)
        end = max((r or f) for _, f, r in members) + interval * 2
        sent_resolved: set[int] = set()
        last_sent, last_firing = -1, frozenset[int]()
        tick = first + wait
        while tick <= end:
            firing = frozenset(i for i, (_, f, r) in enumerate(members) if f <= tick and (r is None or r > tick))
            resolved = [
                i for i, (_, f, r) in enumerate(members) if r is not None and r <= tick and i not in sent_resolved
            ]
            changed = firing != last_firing or bool(resolved)
            if changed or (firing and tick - last_sent >= repeat):
                if firing or resolved:
                    self._notify(group_key, group_by, key, members, firing, resolved, tick)
                    sent_resolved.update(resolved)
                    last_sent = tick
                last_firing = firing
            over = all(m[2] is not None and m[2] <= tick for m in members)
            if over and not firing and all(i in sent_resolved for i in range(len(members))):
                break
            tick += interval

    def _notify(
        self, group_key: str, group_by: tuple[str, ...], key: tuple[str, ...], members: list[Any],
        firing: frozenset[int], resolved: list[int], at: int,
    ) -> None:  # fmt: skip
        from adapters.sources.alertmanager import fingerprint

        alerts = []
        for i in sorted(firing) + resolved:
            labels, fires, resolves = members[i]
            done = i in resolved
            alerts.append({
                "status": "resolved" if done else "firing",
                "labels": labels,
                "annotations": {"summary": f"{labels['alertname']} on {labels.get('instance', '')}"},
                "startsAt": _iso(fires),
                "endsAt": _iso(resolves) if done else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint(labels),
            })  # fmt: skip
            if not done:
                self.out.identities.add(fingerprint(labels))
        body = {
            "receiver": "bridge", "status": "firing" if firing else "resolved", "alerts": alerts,
            "groupLabels": dict(zip(group_by, key, strict=True)), "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "version": "4", "groupKey": group_key, "truncatedAlerts": 0,
        }  # fmt: skip
        self.out.am_groups.add(group_key)
        raw = orjson.dumps(body)
        for copy in range(2 if self.shape.ha else 1):
            self.out.alerts += len(alerts)
            self.hooks.append(Webhook("alertmanager", at + copy * self.rng.randint(200, 3000), raw))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def generate(shape: Shape, seed: int = 30, *, scale: float = 1.0) -> Outage:
    """The outage in `shape`, from `seed`; `scale` shrinks the host counts and the durations' alerts."""
    b = _Builder(shape, seed, scale)
    rng = b.rng
    per_switch = max(4, round(100 * scale))
    hosts = [f"h{i:03d}" for i in range(per_switch * 5)]
    switch_of = {h: f"sw-{i // per_switch}" for i, h in enumerate(hosts)}
    dead = [h for h in hosts if switch_of[h] == "sw-3"]
    alive = [h for h in hosts if switch_of[h] != "sw-3"]
    rng.shuffle(alive)

    # 1. The switch sw-3 dies at 10 min, for 50 min: its hosts with it.
    dies, back = b.at(10), b.at(60)
    parent_at = dies + (4 * MIN if shape.parent_last else MIN)
    b.nagios(parent_at, "sw-3", up=False, groups="switches", since=dies)
    for h in dead:
        down = dies + (MIN // 2 if shape.parent_last else 2 * MIN) + rng.randint(0, 90_000)
        b.nagios(down, h, up=False, groups="sw-3", since=dies)
        b.nagios(back + rng.randint(30_000, 120_000), h, up=True, groups="sw-3")
    b.nagios(back, "sw-3", up=True, groups="switches")
    # Prometheus loses each host's node and process exporters, and the blackbox probe of its service.
    down_alerts = [
        ({"alertname": name, "instance": f"{h}:{port}", "job": job, "switch": "sw-3", "severity": "critical"},
         dies + (MIN // 2 if shape.parent_last else 2 * MIN) + rng.randint(0, 60_000), back + rng.randint(0, 60_000))
        for h in dead
        for name, job, port in (("InstanceDown", "node", 9100), ("InstanceDown", "process", 9256),
                                ("ProbeFailed", "blackbox", 443))
    ]  # fmt: skip
    b.alertmanager(("alertname", "switch"), down_alerts)

    # 2. The orders database fails at 70 min, for 40 min: Prometheus and a Splunk search on the app hosts.
    fails, fixed = b.at(70), b.at(110)
    db = [
        ({"alertname": "PostgresDown", "instance": "db-orders-1:9187", "database": "orders", "severity": "critical"},
         fails + MIN, fixed),
        ({"alertname": "PostgresReplicationLag", "instance": "db-orders-2:9187", "database": "orders",
          "severity": "warning"}, fails + 2 * MIN, fixed + MIN),
        ({"alertname": "PostgresTooManyConnections", "instance": "db-orders-2:9187", "database": "orders",
          "severity": "warning"}, fails + 3 * MIN, fixed),
    ]  # fmt: skip
    b.alertmanager(("alertname", "database"), db)
    apps = [f"app-{i}" for i in range(1, max(2, round(8 * scale)) + 1)]
    run = fails + 5 * MIN
    while run < fixed:
        for app in apps:
            hit = {"host": app, "database": "orders", "severity": "high", "count": str(rng.randint(5, 90))}
            b.splunk(run + rng.randint(0, 20_000), "DB connection errors", hit)
        run += 5 * MIN

    # 3. The storage array san-2 degrades from 30 min on, host after host, for three hours.
    san = alive[: max(5, round(60 * scale))]
    start, step = b.at(30), 3 * MIN  # a host more every 3 minutes
    repaired = start + len(san) * step + 15 * MIN
    latency = [
        ({"alertname": "DiskLatencyHigh", "instance": f"{h}:9100", "device": device, "array": "san-2",
          "switch": switch_of[h], "severity": "warning"},
         start + i * step + rng.randint(0, step // 2), repaired + rng.randint(0, 5 * MIN))
        for i, h in enumerate(san)
        for device in ("sdb", "sdc")
    ]  # fmt: skip
    b.alertmanager(("alertname", "array"), latency)

    # 4. Five services flap from 20 min on, for 90 minutes.
    flappy = alive[len(san) : len(san) + 5]
    for h, service in zip(flappy, ("Apache", "Tomcat", "Queue", "Cache", "Mail"), strict=True):
        at = b.at(20, 120)
        while at < b.at(110):
            b.nagios(at, h, up=False, service=service, groups=switch_of[h])
            at += rng.randint(60_000, 150_000)
            b.nagios(at, h, up=True, service=service, groups=switch_of[h])
            at += rng.randint(60_000, 180_000)

    # 5. Twenty unrelated problems: 8 Prometheus alerts, 8 Nagios services, 4 Splunk searches.
    others = alive[len(san) + 5 : len(san) + 25]
    names = ("HighCPU", "MemoryPressure", "CertExpirySoon", "NTPDrift", "SwapFull", "InodesLow", "ConntrackFull",
             "ClockSkew")  # fmt: skip
    prom = []
    for h, name in zip(others[:8], names, strict=True):
        fires = b.at(rng.uniform(5, 200))
        prom.append(({"alertname": name, "instance": f"{h}:9100", "switch": switch_of[h], "severity": "warning"}, fires,
                     fires + rng.randint(10, 40) * MIN))  # fmt: skip
    b.alertmanager(("alertname", "instance"), prom)
    for h, service in zip(
        others[8:16], ("Disk /var", "NTP", "SSH", "Swap", "Load", "Users", "HTTPS", "DNS"), strict=True
    ):
        fires = b.at(rng.uniform(5, 200))
        b.nagios(fires, h, up=False, service=service, groups=switch_of[h])
        b.nagios(fires + rng.randint(15, 45) * MIN, h, up=True, service=service, groups=switch_of[h])
    for h, search in zip(others[16:20], ("Failed logins", "Kernel oops", "Disk errors", "Backup failed"), strict=True):
        at = b.at(rng.uniform(5, 200))
        for _ in range(rng.randint(2, 6)):
            b.splunk(at, search, {"host": h, "severity": "medium", "count": str(rng.randint(1, 50))})
            at += 5 * MIN
    b.hooks.sort(key=lambda hook: hook.at_ms)
    return b.out


def mapping(desk_url: str = "http://127.0.0.1:9", *, hold: str = "5m") -> MappingConfig:
    """The mapping an ops team would write from the README's knobs for this estate."""
    fields = {
        "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
        "description": "{{ summary }}",
    }
    ticket = {"fields": fields, "flush_interval": "1m"}
    life = {"resolve_after": "5m", "reopen_within": "1h"}
    routes: list[dict[str, Any]] = [
        # Host-level alerts of both tools, one incident per host, in one key space; the switch is their parent.
        {"name": "hosts", "sources": ["nagios"], "desk": "snow", "match": ['object_type="host"'],
         "correlate": {"by": [HOST_KEY], "scope": "hosts"},
         "topology": {"parent": ['host_groups="switches"'], "key": SWITCH_KEY, "hold": hold, "adopt_within": "15m"},
         "storm": {"max_new_per_minute": 30, "group_by": [SWITCH_KEY]}, "lifecycle": life, "ticket": ticket},
        {"name": "databases", "sources": ["alertmanager"], "desk": "snow", "match": ['database=~".+"'],
         "correlate": {"by": ["{{ labels.database }}"], "scope": "databases"}, "lifecycle": life, "ticket": ticket},
        {"name": "database-logs", "sources": ["splunk"], "desk": "snow", "match": ['database=~".+"'],
         "correlate": {"by": ["{{ labels.database }}"], "scope": "databases"},
         "lifecycle": {"auto_resolve_after": "15m"}},
        {"name": "storage", "sources": ["alertmanager"], "desk": "snow", "match": ['alertname="DiskLatencyHigh"'],
         "correlate": {"by": ["{{ labels.array }}"]},
         "lifecycle": {**life, "threshold": {"count": 5, "distinct_resources": True, "window": "30m"}},
         "ticket": ticket},
        {"name": "host-metrics", "sources": ["alertmanager"], "desk": "snow", "match": ['switch=~".+"'],
         "correlate": {"by": [HOST_KEY], "scope": "hosts"}},
        {"name": "services", "sources": ["nagios"], "desk": "snow", "match": ['object_type="service"'],
         "correlate": {"by": ["{{ labels.host }}!{{ labels.service }}"]},
         "lifecycle": {**life, "flap": {"changes": 4, "window": "30m", "quiet": "15m"}}, "ticket": ticket},
        {"name": "logs", "sources": ["splunk"], "desk": "snow", "correlate": {"by": ["{{ name }}|{{ resource }}"]},
         "lifecycle": {**life, "auto_resolve_after": "15m"}, "ticket": ticket},
        {"name": "other", "sources": ["alertmanager", "nagios"], "desk": "snow",
         "correlate": {"by": ["{{ name }}|{{ resource }}"]}, "lifecycle": life, "ticket": ticket},
    ]  # fmt: skip
    return MappingConfig.model_validate(
        {
            "sources": {
                "nagios": {"kind": "nagios"},
                "alertmanager": {"kind": "alertmanager"},
                "splunk": {"kind": "splunk"},
            },
            "desks": {"snow": {"kind": "servicenow", "url": desk_url, "user": "bridge", "password": "bench"}},
            "routes": routes,
        }
    )


def measure(outage: Outage, report: dict[str, Any]) -> dict[str, Any]:
    """Tickets against the ideal, desk calls and churn, from a replay report, with the baselines."""
    calls = report["calls"]
    by_ticket: dict[str, list[str]] = defaultdict(list)
    for call in calls:
        if call["ticket"]:
            by_ticket[call["ticket"]].append(call["action"])
    opened = sum(1 for c in calls if c["action"] == "open")
    duplicates = sum(1 for c in calls if c["action"] == "close_duplicate")
    reopens = sum(actions.count("reopen") for actions in by_ticket.values())
    resolves_again = sum(max(0, actions.count("resolve") - 1) for actions in by_ticket.values())
    standing = opened - duplicates
    return {
        "shape": outage.shape.name,
        "seed": outage.seed,
        "webhooks": len(outage.hooks),
        "alerts": report["alerts"],
        "ideal": outage.ideal,
        "tickets": opened,
        "tickets_per_ideal": round(opened / outage.ideal, 3),
        "root_cause_tickets": standing,
        "closed_as_duplicates": duplicates,
        "alerts_per_ticket": round(report["alerts"] / opened, 1) if opened else None,
        "desk_calls": report["desk_calls"],
        "churn": {"reopens": reopens, "resolves_after_the_first": resolves_again},
        "left_open": sum(
            1
            for actions in by_ticket.values()
            if "open" in actions and not {"resolve", "close_duplicate"} & set(actions)
        ),
        "per_alert_tickets": len(outage.identities),
        "per_group_tickets": outage.per_group,
        "decisions": report["decisions"],
        "dead_letters": report["dead_letters"],
    }


async def replay_outage(outage: Outage, *, settle: str = "2h") -> dict[str, Any]:
    """Replay the outage on a private Redis with the bench mapping; the measures (`measure`)."""
    import redis.asyncio as aioredis

    from bridge.core.policy import parse_duration
    from bridge.process.embedded import EmbeddedRedis
    from bridge.tools.replay import replay

    with (
        tempfile.TemporaryDirectory(prefix="bridge-outage-") as tmp,
        EmbeddedRedis(Path(tmp), appendonly=False) as server,
    ):
        client = aioredis.Redis.from_url(server.url)
        try:
            config = mapping(hold=outage.shape.hold)
            report = await replay(client, config, outage.hooks, settle_ms=int(parse_duration(settle) * 1000))
        finally:
            await client.aclose()
    return measure(outage, report)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| shape | alerts | webhooks | tickets (ideal) | standing | closed as duplicates | desk calls | reopens "
            "| resolves again | per alert | per AM group |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['alerts']:,} | {r['webhooks']:,} | {r['tickets']} ({r['ideal']}) | "
            f"{r['root_cause_tickets']} | {r['closed_as_duplicates']} | {r['desk_calls']['total']} | "
            f"{r['churn']['reopens']} | {r['churn']['resolves_after_the_first']} | {r['per_alert_tickets']} | "
            f"{r['per_group_tickets']} |"
        )
    return "\n".join(lines)


def run(*, seed: int = 30, scale: float = 1.0, shapes: tuple[Shape, ...] = SHAPES,
        progress: Callable[[str], None] = print) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for shape in shapes:
        outage = generate(shape, seed, scale=scale)
        started = time.perf_counter()
        row = asyncio.run(replay_outage(outage))
        row["replay_s"] = round(time.perf_counter() - started, 1)
        progress(f"{shape.name}: {row['alerts']:,} alerts, {row['tickets']} tickets (ideal {row['ideal']}), "
                 f"{row['desk_calls']['total']} desk calls, churn {row['churn']}")  # fmt: skip
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from bridge.core import logs

    p = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seed", type=int, default=30)
    p.add_argument("--scale", type=float, default=1.0, help="host counts and search hits (1: 500 hosts)")
    p.add_argument("--shape", action="append", choices=[s.name for s in SHAPES], help="only these shapes")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    logs.configure(level="warning")
    shapes = tuple(s for s in SHAPES if not args.shape or s.name in args.shape)
    rows = run(seed=args.seed, scale=args.scale, shapes=shapes)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{stamp}-noise-seed{args.seed}-scale{args.scale:g}"
    base.with_suffix(".json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    base.with_suffix(".md").write_text(f"# Noise bench, seed {args.seed}, scale {args.scale:g}\n\n{table(rows)}\n")
    print(table(rows))
    print(f"wrote {base}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
