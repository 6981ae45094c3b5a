"""What the request path's CPU goes to: the ingress-only server whole and stripped, under one wrk load.

    python -m bench.strip [--rounds 3] [--seconds 8] [--case unique|repeats]

Four copies of `bench.ingress_only` (2 processes each, their own Redis), 1 alert per request,
interleaved round by round; for each, the CPU its processes and its Redis spent per alert:
  whole           the request path as served
  no-xadd         everything but the XADD round trip (the alerts are parsed, then dropped: this copy
                  only measures, it is not the bridge)
  read-answer     the middleware, reading the body and answering 202: aiohttp's own cost, the
                  ceiling's handler with the bridge's middleware
  bare            the same handler alone in an app of its own, without the bridge's middleware,
                  routes and sub-apps: the framework's ceiling in the same harness
The differences are what the XADD round trip, the handler's own work (auth, parse, metrics) and the
app around it cost. `--window-parts` runs the request path whole, with the repeat window off, and with
each of its parts taken out (remembering the copies written, announcing them, all of it in the
request path while the subscription runs): what the window costs where nothing repeats, part by part.
`--case repeats` sends 500 alerts over and over (bench/alerts.lua's repeat mode):
what the request path costs where the repeat window answers copies from memory.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import procs
from bench.common import write_mapping, wrk

VARIANTS = ("whole", "no-xadd", "read-answer", "bare")
# `--window-parts`: the repeat window's parts taken out one by one (where nothing repeats, what each costs)
WINDOW_PARTS = ("whole", "window-off", "no-remember", "no-announce", "no-window-in-enqueue")
REPEAT_POOL = 500


def serve(variant: str) -> None:
    """Run `bench.ingress_only` (its arguments after the variant's) with the request path stripped."""
    import bridge.ingress.repeats as repeats
    import bridge.ingress.webhook as ingress
    import bridge.process.app as app
    from bridge.ingress.repeats import REPEATS, RepeatWindow
    from bridge.runtime.http import json_response

    if variant == "window-off":
        os.environ["BRIDGE_REPEAT_WINDOW_MS"] = "0"
    elif variant == "no-remember":  # copies written are not remembered (nothing is ever absorbed)
        repeats.RepeatWindow.wrote = lambda self, written, now: None  # type: ignore[method-assign]
    elif variant == "no-announce":  # writes are not published to the other processes
        repeats.Announcer.add = lambda self, written, durable=True: None  # type: ignore[method-assign,misc]
    elif variant == "no-window-in-enqueue":  # the subscription runs, the request path does not use it
        enqueue_with = ingress.enqueue

        async def enqueue_without(runtime: Any, source: str, parsed: Any, window: Any = None) -> Any:
            return await enqueue_with(runtime, source, parsed, None)

        ingress.enqueue = enqueue_without
    elif variant == "no-xadd":

        async def enqueue(*_: object) -> None:
            return None

        ingress.enqueue = enqueue  # type: ignore[assignment]
    elif variant == "read-answer":

        async def webhook(request: web.Request) -> web.Response:
            await request.read()
            return json_response({"accepted": 1, "rejected": 0}, 202)

        app.webhook = webhook  # type: ignore[attr-defined]  # make_app routes to the name it imported
    elif variant == "bare":

        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return json_response({"accepted": 1, "rejected": 0}, 202)

        async def answer_ok() -> web.Response:
            return web.Response(text="ok")

        def bare_app(_: object) -> web.Application:
            bare = web.Application()
            bare[REPEATS] = RepeatWindow(1.0, 1)  # for ingress_only's subscription; the handler has none
            bare.router.add_post("/webhook/{source}", answer)
            bare.router.add_get("/healthz", lambda _: answer_ok())  # what the harness waits for
            return bare

        app.make_app = bare_app  # type: ignore[assignment]  # ingress_only imports it by name
    runpy.run_module("bench.ingress_only", run_name="__main__")


def measure(
    rounds: int, seconds: float, case: str = "unique", variants: tuple[str, ...] = VARIANTS
) -> dict[str, list[float]]:
    mode = f"repeat:{REPEAT_POOL}" if case == "repeats" else "unique"
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-strip-") as tmp:
        for r in range(rounds):
            for variant in variants:
                work = Path(tmp) / f"{variant}-{r}"
                with ExitStack() as stack:
                    server = stack.enter_context(procs.redis_server(work / "redis"))
                    config = write_mapping(work / "mapping.yaml", desk_url="http://127.0.0.1:9", correlate=["x"])
                    program = [sys.executable, "-m", "bench.strip", "serve", variant]
                    proc = procs.ingress_only(config, server.url, work=work, workers=2, program=program)
                    stack.callback(proc.stop)
                    url, redis_pid = proc.url + "/webhook/alertmanager", server.process.pid if server.process else 0
                    wrk(url, fmt="webhook", per_request=1, connections=32, seconds=2, mode=mode)
                    before = proc.cpu_seconds() + procs.cpu_seconds(redis_pid)
                    result = wrk(url, fmt="webhook", per_request=1, connections=32, seconds=seconds, mode=mode)
                    used = proc.cpu_seconds() + procs.cpu_seconds(redis_pid) - before
                    cpu[variant].append(used / result.requests * 1e6)
                    print(f"{variant:12s} round {r}: {result.requests / result.seconds:,.0f} alerts/s, "
                          f"{cpu[variant][-1]:.1f} µs CPU per alert", flush=True)  # fmt: skip
    return cpu


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        variant = sys.argv[2]
        del sys.argv[1:3]
        serve(variant)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.strip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--case", choices=["unique", "repeats"], default="unique")
    parser.add_argument("--window-parts", action="store_true", help="the repeat window's parts, one by one")
    args = parser.parse_args()
    cpu = measure(args.rounds, args.seconds, args.case, WINDOW_PARTS if args.window_parts else VARIANTS)
    print("\n| variant | µs CPU per alert (median of rounds) |\n|---|---:|")
    for variant, values in cpu.items():
        print(f"| {variant} | {sorted(values)[len(values) // 2]:.1f} |")


if __name__ == "__main__":
    main()
