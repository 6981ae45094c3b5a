"""Soak: a long stream of unique alerts over rotating hosts, time compressed, while Redis's memory and the
bridge's RSS are sampled; both must flatten out (a plateau), however many alerts have gone through.

Every alert is its own incident and ticket (correlated by a unique label), so every one makes Redis keys:
its incident's state, members, outbox and audit, index and timer entries, intake entries. The sender
never sends a clear: the route's `auto_resolve_after` resolves each alert, the resolved incident's keys
live `retention` (`BRIDGE_RETENTION_MS`) plus the route's reopen window, and the upkeep takes it out of
the index (`BRIDGE_UPKEEP_EVERY_S`). Time is compressed: seconds stand for the days of a real bridge,
so at a steady rate the live incidents number about rate x (auto-resolve + retention + reopen window)
and memory should stop growing after that long; what keeps growing is a leak.

Every `sample_s` seconds: Redis `used_memory` (INFO memory), the bridge's RSS (all workers), alerts
sent, incidents in the index, keys in Redis and the intake backlog. Plateau: over the last half of the
samples, max - min within 10 % of the mean, for Redis and for the bridge alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import procs
from bench.common import TOKEN, am_alert, trivial_desk, webhook_body
from bridge.core import keys

PLATEAU = 0.10  # the last half of the samples within this spread (max - min over the mean)


def soak_mapping(path: Path, desk_url: str, *, auto_resolve_s: float, reopen_s: float) -> Path:
    """One Alertmanager source, one incident per alert, each resolved `auto_resolve_s` after it came, and
    the generic webhook desk against a receiver that keeps nothing (`bench/trivial.py`): a desk that
    stored every ticket would slow down as the soak goes on, and its backlog would show as Redis memory."""
    mapping = {
        "sources": {"alertmanager": {"kind": "alertmanager", "secret": TOKEN}},
        "desks": {"desk": trivial_desk(desk_url)},
        "routes": [
            {
                "name": "soak",
                "desk": "desk",
                "correlate": {"by": ["{{ labels.soak_id }}"]},
                "lifecycle": {"resolve_after": "0s", "reopen_within": f"{reopen_s}s",
                              "auto_resolve_after": f"{auto_resolve_s}s"},
                "ticket": {"fields": {"summary": "{{ summary }}", "host": "{{ resource }}"}},
            }
        ],
    }  # fmt: skip
    path.write_text(json.dumps(mapping, indent=1))  # JSON is YAML
    return path


async def run(
    work: Path,
    *,
    alerts: int,
    rate: int,
    hosts: int,
    batch: int,
    retention_s: float,
    auto_resolve_s: float,
    workers: int,
    sample_s: float = 2.0,
) -> dict[str, Any]:
    reopen_s = 1.0
    with ExitStack() as stack:
        server = stack.enter_context(procs.redis_server(work / "redis", appendonly=False))
        desk = procs.trivial(work=work, workers=1)
        stack.callback(desk.stop)
        config = soak_mapping(work / "mapping.yaml", desk.url, auto_resolve_s=auto_resolve_s, reopen_s=reopen_s)
        tuning = {"retention_ms": str(int(retention_s * 1000)), "upkeep_every_s": "1", "gauges_every_s": "5"}
        bridge = procs.bridge(config, server.url, work=work, workers=workers, tuning=tuning)
        stack.callback(bridge.stop)
        client = aioredis.Redis.from_url(server.url)
        try:
            samples, sent, failures, seconds = await _soak(bridge, client, alerts, rate, hosts, batch, sample_s)
            info = await client.info("memory")
            dbsize = await client.dbsize()
        finally:
            await client.aclose()
    half = samples[len(samples) // 2 :]
    redis_spread = _spread([s["redis_used_memory"] for s in half])
    rss_spread = _spread([s["bridge_rss"] for s in half])
    return {
        "alerts": alerts,
        "sent": sent,
        "failures": failures,
        "rate": rate,
        "achieved_rate": round(sent / seconds, 1) if seconds else 0.0,
        "hosts": hosts,
        "batch": batch,
        "retention_s": retention_s,
        "auto_resolve_s": auto_resolve_s,
        "reopen_s": reopen_s,
        "sample_s": sample_s,
        "workers": workers,
        "seconds": round(seconds, 1),
        "samples": samples,
        "redis_used_memory_mb_end": round(info["used_memory"] / 2**20, 1),
        "redis_keys_end": dbsize,
        "redis_spread_last_half": round(redis_spread, 4),
        "rss_spread_last_half": round(rss_spread, 4),
        "redis_plateau": redis_spread <= PLATEAU,
        "rss_plateau": rss_spread <= PLATEAU,
    }


async def _soak(
    bridge: procs.Proc, client: aioredis.Redis, alerts: int, rate: int, hosts: int, batch: int, sample_s: float
) -> tuple[list[dict[str, Any]], int, int, float]:
    """Send `alerts` unique alerts, `batch` a request, at `rate` alerts/s (open loop, at most 64 requests in
    flight), sampling meanwhile; returns the samples, alerts accepted, requests failed and seconds."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    sent = failures = 0
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    slots = asyncio.Semaphore(64)

    async def sample() -> None:
        info = await client.info("memory")
        samples.append(
            {
                "t": round(loop.time() - started, 2),
                "sent": sent,
                "redis_used_memory": int(info["used_memory"]),
                "bridge_rss": bridge.rss_bytes(),
                "incidents_indexed": int(await client.zcard(keys.INCIDENTS)),
                "keys": int(await client.dbsize()),
                "intake": int(await client.xlen(keys.INTAKE)),
                "timers": int(await client.zcard(keys.TIMERS)),
                "timers_overdue": int(await client.zcount(keys.TIMERS, "-inf", int(time.time() * 1000) - 1000)),
                "ready": int(await client.zcard(keys.READY)),
                "dead_letters": int(await client.xlen(keys.DLQ)),
            }
        )

    async def sampler() -> None:
        while True:
            await sample()
            await asyncio.sleep(sample_s)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def post(first: int) -> None:
            nonlocal sent, failures
            body = webhook_body(
                [
                    am_alert(
                        {
                            "alertname": f"Soak{i % 50}",
                            "instance": f"host-{(i // 50) % hosts}",
                            "severity": "major",
                            "soak_id": f"soak-{i}",
                        }
                    )
                    for i in range(first, min(alerts, first + batch))
                ]
            )
            try:
                async with session.post(bridge.url + "/webhook/alertmanager", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 202:
                        sent += min(alerts, first + batch) - first
                    else:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1
            finally:
                slots.release()

        watcher = asyncio.create_task(sampler())
        tasks: set[asyncio.Task[None]] = set()
        try:
            for first in range(0, alerts, batch):
                delay = started + first / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                task = asyncio.create_task(post(first))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            watcher.cancel()
        seconds = loop.time() - started
        await sample()
    return samples, sent, failures, seconds


def _spread(values: list[int]) -> float:
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean else 0.0


def svg(soak: dict[str, Any]) -> str:
    """Redis used_memory and the bridge's RSS (MiB) against alerts sent, as a small SVG (no plotting library)."""
    samples = soak["samples"]
    width, height, left, top, plot_w, plot_h = 760, 420, 70, 40, 660, 300
    xs = [s["sent"] for s in samples] or [0]
    series = [
        ("Redis used_memory", "#1f77b4", [s["redis_used_memory"] / 2**20 for s in samples]),
        ("bridge RSS (all workers)", "#d62728", [s["bridge_rss"] / 2**20 for s in samples]),
    ]
    x_max = max(max(xs), 1)
    y_max = max(max((max(v) for _, _, v in series if v), default=1.0) * 1.1, 1.0)

    def point(x: float, y: float) -> str:
        return f"{left + x / x_max * plot_w:.1f},{top + plot_h - y / y_max * plot_h:.1f}"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Soak: {soak["sent"]:,} unique alerts at '
        f"{soak['achieved_rate']:,.0f}/s, retention {soak['retention_s']:g} s (time compressed)</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
    ]
    for i in range(6):
        y = y_max * i / 5
        py = top + plot_h - plot_h * i / 5
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + plot_w}" y2="{py:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        x = x_max * i / 5
        px = left + plot_w * i / 5
        out.append(f'<text x="{px:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x:,.0f}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 38}" text-anchor="middle">alerts sent</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               'text-anchor="middle">MiB</text>')  # fmt: skip
    half = xs[len(xs) // 2]
    out.append(f'<line x1="{left + half / x_max * plot_w:.1f}" y1="{top}" x2="{left + half / x_max * plot_w:.1f}" '
               f'y2="{top + plot_h}" stroke="#999" stroke-dasharray="4 4"/>')  # fmt: skip
    for index, (name, colour, values) in enumerate(series):
        points = " ".join(point(x, y) for x, y in zip(xs, values, strict=True))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        ly = top + plot_h // 3 + 18 * index  # below the RSS line, above Redis's
        out.append(f'<line x1="{left + 12}" y1="{ly - 4}" x2="{left + 36}" y2="{ly - 4}" stroke="{colour}" '
                   'stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{left + 42}" y="{ly}">{name}</text>')
    spread = f"spread Redis {soak['redis_spread_last_half']:.1%}, bridge {soak['rss_spread_last_half']:.1%}"
    note_y = top + plot_h // 3 + 18 * len(series)
    out.append(f'<text x="{left + 12}" y="{note_y}" fill="#666">dashed: start of the last half '
               f"({spread})</text>")  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"


def rows(soak: dict[str, Any]) -> list[str]:
    """The Markdown lines of the section."""
    first, last = soak["samples"][0], soak["samples"][-1]
    mb = 2**20
    return [
        f"## Soak ({soak['sent']:,} unique alerts over {soak['hosts']} rotating hosts, {soak['batch']} a request, "
        f"retention {soak['retention_s']:g} s, auto-resolve {soak['auto_resolve_s']:g} s: time compressed)",
        "",
        "| | value |",
        "|---|---:|",
        f"| alerts sent / failed requests | {soak['sent']:,} / {soak['failures']:,} |",
        f"| rate asked / achieved | {soak['rate']:,} / {soak['achieved_rate']:,.0f} alerts/s "
        f"over {soak['seconds']:,.0f} s |",
        f"| Redis used_memory first / last sample | {first['redis_used_memory'] / mb:,.1f} / "
        f"{last['redis_used_memory'] / mb:,.1f} MiB |",
        f"| bridge RSS first / last sample | {first['bridge_rss'] / mb:,.1f} / {last['bridge_rss'] / mb:,.1f} MiB |",
        f"| incidents in the index / keys in Redis, last sample | {last['incidents_indexed']:,} / {last['keys']:,} |",
        f"| spread over the last half: Redis / bridge | {soak['redis_spread_last_half']:.1%} / "
        f"{soak['rss_spread_last_half']:.1%} (plateau: within {PLATEAU:.0%}) |",
        "",
    ]
