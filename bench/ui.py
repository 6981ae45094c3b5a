"""Status page: server-side time of the incidents page with 10,000 incidents, against the admin API's JSON
list of the same page in the same run.

The incidents are made by the engine itself (a backlog of N distinct alerts through routing and the Lua
step, as the engine section does), each then given a ticket as delivery records it. The bridge's app
(`bridge.process.app.make_app`: the API and /ui with their middlewares) is served on a loopback port;
a middleware put in front of all of them clocks each request from its arrival to its answer's body,
which is the server's time: routing, session check, Redis round trips, rendering. Each case is asked
`rounds` times after two unmeasured asks; the median is kept.

Baseline: `GET /api/v1/incidents?limit=50`, the API's first page of 50 as JSON (the same rows). The
other cases: the page's first page, a page deep in the index (`start=9,000`), a state filter that
matches nothing (it looks at its 1,000 entries, then offers the next), a route filter that matches
nothing (passes over 1,000 entries by name), and for comparison the API's list with that state filter (it
reads the whole index: the API's list is not paged); one incident's timeline against the API's `show`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench import procs
from bench.common import ratio, write_mapping
from bench.drain import CORRELATE, backlog
from bridge.admin.ui import auth
from bridge.core import config as config_mod
from bridge.core import keys
from bridge.engine.consumer import Engine
from bridge.process.app import make_app
from bridge.process.embedded import free_port
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import open_scripts

TOKEN = "bench-admin-token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def seed(rt: Runtime, n: int) -> list[str]:
    """N incidents made by the engine from N distinct alerts, each with a ticket; their ids, newest first."""
    engine = Engine(rt)
    await engine.ensure_group()
    entries = backlog(n)
    for start in range(0, n, 1000):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for entry in entries[start : start + 1000]:
                pipe.xadd(keys.INTAKE, {"a": entry})
            await pipe.execute()
    while await engine.step(block_ms=None):
        pass
    bases = [b.decode() for b in await rt.redis.zrevrange(keys.INCIDENTS, 0, -1)]
    for start in range(0, len(bases), 1000):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for i, base in enumerate(bases[start : start + 1000], start):
                ticket = orjson.dumps([f"sys{i:08d}", f"INC{i:07d}", f"https://desk.example/incident/{i}"])
                pipe.hset(keys.IncidentKeys(base).state, "ticket:1", ticket)  # epoch 1: the engine's first
            await pipe.execute()
    return bases


async def run(work: Path, *, incidents: int, rounds: int) -> dict[str, Any]:
    path = write_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9", correlate=CORRELATE)
    mapping = orjson.loads(path.read_bytes())
    # A second route that no alert reaches (the first matches all): the route filter that finds nothing.
    mapping["routes"].append({"name": "quiet", "desk": "servicenow", "match": ['team="nobody"']})
    path.write_bytes(orjson.dumps(mapping))
    config = config_mod.load([str(path)])
    with procs.redis_server(work / "redis") as server:
        scripts = open_scripts(server.url, timeout=30)
        redis = scripts.redis
        try:
            await scripts.load()
            rt = Runtime(redis, scripts, config, consumer="bench", admin_token=TOKEN)
            bases = await seed(rt, incidents)
            incident = f"{bases[0]}:1"
            clocked: list[float] = []

            @web.middleware
            async def clock(request: web.Request, handler: Handler) -> web.StreamResponse:
                started = time.perf_counter()
                response = await handler(request)
                clocked.append(time.perf_counter() - started)
                return response

            app = make_app(rt)
            app.middlewares.insert(0, clock)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            url = f"http://127.0.0.1:{port}"
            cookie = {auth.COOKIE: auth.issue(rt, "admin")}
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            cases = {
                "api: incidents, first 50 (JSON)": ("/api/v1/incidents?limit=50", bearer),
                "ui: incidents, first page of 50": ("/ui/incidents", {}),
                "ui: incidents, page at 9,000": ("/ui/incidents?start=9000", {}),
                "ui: state filter matching none": ("/ui/incidents?state=resolved", {}),
                "ui: route filter matching none": ("/ui/incidents?route=quiet", {}),
                "api: state filter matching none": ("/api/v1/incidents?state=resolved&limit=50", bearer),
                "api: one incident (JSON)": (f"/api/v1/incidents/{incident}", bearer),
                "ui: one incident's timeline": (f"/ui/incidents/{incident}", {}),
            }
            results = []
            async with aiohttp.ClientSession(cookies=cookie) as session:
                for name, (path, headers) in cases.items():
                    times = []
                    for i in range(rounds + 2):
                        clocked.clear()
                        async with session.get(url + path, headers=headers, allow_redirects=False) as r:
                            body = await r.read()
                            assert r.status == 200, (path, r.status, body[:300])
                        if i >= 2:
                            times.append(clocked[-1])
                    results.append({"case": name, "path": path, "ms": round(statistics.median(times) * 1000, 2),
                                    "bytes": len(body)})  # fmt: skip
            await runner.cleanup()
        finally:
            await scripts.aclose()
            await redis.aclose()
    base = results[0]["ms"]
    show = next(r["ms"] for r in results if r["case"] == "api: one incident (JSON)")
    for row in results:
        row["ratio"] = ratio(row["ms"], show if "one incident" in row["case"] else base)
    return {"incidents": len(bases), "rounds": rounds, "rows": results}


def markdown(ui: dict[str, Any]) -> list[str]:
    lines = [
        f"## Status page: server time per request with {ui['incidents']:,} incidents (median of {ui['rounds']})",
        "",
        "Ratios against the admin API's JSON answer for the same rows in this run (the list's first 50; one incident).",
        "",
        "| case | path | ms | ratio | bytes |",
        "|---|---|---:|---:|---:|",
    ]
    for row in ui["rows"]:
        lines.append(f"| {row['case']} | `{row['path']}` | {row['ms']:.2f} | {row['ratio']} | {row['bytes']:,} |")
    lines.append("")
    return lines
