"""`bridge demo`: embedded Redis, the ServiceNow simulator and the bridge in one process, replaying
recorded Alertmanager payloads (firing, repeat, resolve, re-fire) and printing the ticket each time."""

from __future__ import annotations

import asyncio
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from adapters.simulators import servicenow
from adapters.simulators.servicenow_store import ServiceNowStore
from bridge.core import config as config_mod
from bridge.core.tuning import Tuning
from bridge.process.embedded import EmbeddedRedis, free_port
from bridge.process.server import Bridge
from bridge.tools.starter import example_mapping

HOLD_DOWN = "1s"  # the example's 5m hold-down, shortened so the demo ends in seconds


def _sample(name: str) -> dict[str, Any]:
    return dict(orjson.loads(resources.files("bridge").joinpath("samples", name).read_bytes()))


def _refire(message: dict[str, Any]) -> dict[str, Any]:
    """The same alerts firing again later: a new startsAt makes it a new occurrence."""
    again = orjson.loads(orjson.dumps(message))
    for alert in again["alerts"]:
        alert["startsAt"] = alert["startsAt"].replace("2024-05-14T09", "2024-05-14T11")
    return dict(again)


async def run_demo(config_path: str | Path | None = None) -> int:
    """Run the demo on a mapping (default: the packaged example); 0 when the ticket went through its life."""
    config_path = config_path or example_mapping()
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as data, EmbeddedRedis(data) as redis_server:
        sim = servicenow.make_app()
        runner = web.AppRunner(sim, access_log=None)
        await runner.setup()
        sim_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", sim_port).start()
        env = {
            "SERVICENOW_URL": f"http://127.0.0.1:{sim_port}",
            "SERVICENOW_USER": "admin",
            "SERVICENOW_PASSWORD": "admin",
        }
        config = config_mod.load([config_path], env=env)
        routes = [
            r.model_copy(update={"lifecycle": r.lifecycle.model_copy(update={"resolve_after": 1.0})})
            for r in config.routes
        ]
        config = config.model_copy(update={"routes": routes})
        tuning = Tuning(block_ms=100, timer_tick_s=0.1, delivery_poll_s=0.02)
        bridge = await Bridge(config, redis_server.url, port=0, tuning=tuning).start()
        store = sim[servicenow.STORE]
        url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
        print(f"\nmapping {config_path}")
        print(f"embedded Redis {redis_server.url}, ServiceNow simulator :{sim_port}, bridge :{bridge.port}")
        print(f"(hold-down shortened to {HOLD_DOWN} for the demo)\n")
        firing, resolved = _sample("alertmanager_firing.json"), _sample("alertmanager_resolved.json")
        steps: list[tuple[str, dict[str, Any], str]] = [
            ("a group of 2 alerts fires", firing, "1"),
            ("Alertmanager repeats the same group", firing, "1"),
            ("both alerts resolve; after the hold-down the ticket resolves", resolved, "6"),
            ("the alerts fire again within the reopen window", _refire(firing), "2"),
            ("and resolve again", _refire(resolved), "6"),
        ]
        ok = True
        try:
            async with aiohttp.ClientSession() as session:
                for title, payload, want_state in steps:
                    async with session.post(url, json=payload) as resp:
                        answer = await resp.json()
                    print(f"POST {title}: {resp.status} {answer}")
                    reached = await _wait_state(store, want_state, 15.0)
                    ok = ok and reached
                    await asyncio.sleep(0.3)  # let notes land before printing
                    _show(store)
        finally:
            await bridge.stop()
            await runner.cleanup()
        tickets = store.snapshot()
        ok = ok and len(tickets) == 1
        print("demo ok: one ticket, opened, resolved, reopened and resolved" if ok else "demo FAILED")
        return 0 if ok else 1


async def _wait_state(store: ServiceNowStore, state: str, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        rows = store.snapshot()
        if rows and rows[-1]["record"]["state"] == state:
            return True
        await asyncio.sleep(0.05)
    return False


def _show(store: ServiceNowStore) -> None:
    names = {"1": "New", "2": "In Progress", "6": "Resolved", "7": "Closed"}
    for row in store.snapshot():
        rec = row["record"]
        state = names.get(rec["state"], rec["state"])
        print(f"  {rec['number']}  state={state}  priority={rec['priority']}  {rec['short_description']}")
        for entry in row["journal"]:
            first, *rest = str(entry.get("value", "")).splitlines()
            print(f"      note: {first}" + (f" (+{len(rest)} lines)" if rest else ""))
    print()
