"""Lua: what one apply_alert.lua call costs Redis against the size of its incident (issue 28, item 1).

For each case an incident is filled with N members (10 and 10,000 by default), then the measured calls
are made on it, and Redis's own time per call is read from INFO commandstats (`cmdstat_evalsha`, reset
just before each measured batch): neither the client, nor the network, nor an event loop is in it.

- **pending, distinct resources, one host**: a threshold of 3 distinct resources within an hour, every
  alert a unique one on the same host, so the count stays at 1 and the incident stays pending (the case
  that was quadratic); it holds at most 1,000 of them (apply_alert.lua's cap).
- **pending, counting alerts**: a threshold of 20,000 alerts within an hour: it holds all N.
- **open**: no threshold: the first alert opens the incident, every other one is a new member (a note).

Measured in each: **fires again**, 200 alerts of members it holds, each a new occurrence (the incident
keeps its size), and **new member**, 100 unique alerts more. Each figure is the median over `rounds`
incidents filled afresh. The baseline, in the same run, is the same case and call at 10 members; the
target is every row's ratio within 1.5.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import procs
from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.core.routing import policy_json
from bridge.runtime.scripts import AlertStep, Scripts

T0 = 1_700_000_000_000
REFIRES, NEW = 200, 100
CASES: dict[str, dict[str, Any]] = {
    "pending, distinct resources, one host": {"threshold": {"count": 3, "distinct_resources": True, "window": "1h"}},
    "pending, counting alerts": {"threshold": {"count": 20_000, "window": "1h"}},
    "open": {},
}


def policy(lifecycle: dict[str, Any]) -> bytes:
    """The route's policy JSON, as the engine passes it to the Lua step."""
    mapping = MappingConfig.model_validate(
        {
            "sources": {"alertmanager": {"kind": "alertmanager"}},
            "desks": {"snow": {"kind": "servicenow", "url": "http://127.0.0.1:9", "user": "u", "password": "p"}},
            "routes": [{"name": "lua", "desk": "snow", "lifecycle": {"reopen_within": "1h", **lifecycle}}],
        }
    )
    return policy_json(mapping.routes[0], 7 * 86_400_000, 200)


class Incident:
    """One incident of one case, and the calls made on it: alert `i` is identity `a-<i>` on host `db-1`."""

    def __init__(self, scripts: Scripts, base: str, rules: bytes) -> None:
        self.scripts, self.base, self.rules = scripts, base, rules
        self.now, self.sent = T0, 0

    def step(self, identity: str, occurrence: int) -> AlertStep:
        return AlertStep(
            base=self.base,
            identity=identity,
            status="firing",
            severity="critical",
            occurrence=occurrence,
            loose=False,
            alert_json=b'{"name":"DiskSlow","resource":"db-1","labels":{"alertname":"DiskSlow","instance":"db-1"}}',
            route="lua",
            resource="db-1",
            policy=self.rules,
        )

    async def send(self, steps: list[AlertStep]) -> None:
        for start in range(0, len(steps), 250):
            pipe = self.scripts.redis.pipeline(transaction=False)
            for step in steps[start : start + 250]:
                self.now += 1
                await self.scripts.apply_alert(step, self.now, pipe)
            await self.scripts.execute(pipe)

    async def new_members(self, n: int) -> None:
        await self.send([self.step(f"a-{self.sent + i}", T0) for i in range(n)])
        self.sent += n

    async def fire_again(self, n: int, held: list[str]) -> None:
        await self.send([self.step(held[i % len(held)], T0 + 1 + i) for i in range(n)])


async def evalsha_us(redis: aioredis.Redis) -> float:
    """Redis's time per EVALSHA call since the last reset, in µs (then resets the counters)."""
    stats = await redis.info("commandstats")
    await redis.config_resetstat()
    got = stats.get("cmdstat_evalsha", {})
    return float(got.get("usec", 0)) / max(1, int(got.get("calls", 0)))


async def run(
    work: Path, *, sizes: tuple[int, int] = (10, 10_000), rounds: int = 5, script: Path | None = None
) -> dict[str, Any]:
    """`script`: another apply_alert.lua to measure instead of the package's (an older one, for an A/B)."""
    small, large = sizes
    figures: dict[tuple[str, str, int], list[float]] = {}
    held: dict[tuple[str, int], int] = {}
    with procs.redis_server(work / "redis") as server:
        redis = aioredis.Redis.from_url(server.url)
        scripts = Scripts(redis)
        try:
            await scripts.load()
            if script is not None:  # measured through the same wrapper and keys
                source = await asyncio.to_thread(script.read_text)
                scripts._apply = redis.register_script(source)
                scripts._apply.sha = await redis.script_load(source)
            for case, lifecycle in CASES.items():
                rules = policy(lifecycle)
                for r in range(rounds):
                    for n in sizes:  # in turn: a drift of the machine's speed meets both alike
                        incident = Incident(scripts, f"lua:{len(figures)}-{n}-{r}", rules)
                        await incident.new_members(n)
                        members: Any = await redis.hkeys(keys.IncidentKeys(incident.base).members)
                        kept = [k.decode() for k in members]
                        held[(case, n)] = len(kept)
                        await redis.config_resetstat()
                        await incident.fire_again(REFIRES, sorted(kept)[-REFIRES:])
                        figures.setdefault((case, "fires again", n), []).append(await evalsha_us(redis))
                        await incident.new_members(NEW)
                        figures.setdefault((case, "new member", n), []).append(await evalsha_us(redis))
                        await redis.flushall()
                        await scripts.load()
        finally:
            await redis.aclose()
    rows = []
    for case in CASES:
        for call in ("fires again", "new member"):
            at_small = statistics.median(figures[(case, call, small)])
            at_large = statistics.median(figures[(case, call, large)])
            rows.append(
                {
                    "case": case,
                    "call": call,
                    "us_small": round(at_small, 2),
                    "us_large": round(at_large, 2),
                    "ratio": round(at_large / at_small, 3) if at_small else None,
                    "held_small": held[(case, small)],
                    "held_large": held[(case, large)],
                }
            )
    return {
        "sizes": [small, large],
        "rounds": rounds,
        "refires": REFIRES,
        "new": NEW,
        "script": str(script) if script else None,
        "rows": rows,
        "worst_ratio": max((row["ratio"] or 0.0) for row in rows),
    }


def markdown(lua: dict[str, Any]) -> list[str]:
    small, large = lua["sizes"]
    lines = [
        f"## Lua step against the incident's size (Redis µs per apply_alert.lua call, INFO commandstats; median of "
        f"{lua['rounds']} incidents)",
        "",
        (f"Measured: `{lua['script']}`. " if lua.get("script") else "") + f"Fires again: {lua['refires']} alerts of "
        f"members held, each a new occurrence; new member: {lua['new']} unique alerts more.",
        "",
        f"| case | call | µs at {small:,} members | µs at {large:,} | ratio | held at {small:,} / {large:,} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in lua["rows"]:
        lines.append(
            f"| {row['case']} | {row['call']} | {row['us_small']:,.1f} | {row['us_large']:,.1f} | "
            f"{row['ratio']:.3f} | {row['held_small']:,} / {row['held_large']:,} |"
        )
    lines.append("")
    return lines
