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
app around it cost. `--case repeats` sends 500 alerts over and over (bench/alerts.lua's repeat mode):
what the request path costs where the repeat window answers copies from memory.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from aiohttp import web

from bench import procs
from bench.common import write_mapping, wrk

VARIANTS = ("whole", "no-xadd", "read-answer", "bare")
REPEAT_POOL = 500


def serve(variant: str) -> None:
    """Run `bench.ingress_only` (its arguments after the variant's) with the request path stripped."""
    import bridge.ingress.webhook as ingress
    import bridge.process.app as app
    from bridge.ingress.repeats import REPEATS, RepeatWindow
    from bridge.runtime.http import json_response

    if variant == "no-xadd":

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


def measure(rounds: int, seconds: float, case: str = "unique") -> dict[str, list[float]]:
    mode = f"repeat:{REPEAT_POOL}" if case == "repeats" else "unique"
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-strip-") as tmp:
        for r in range(rounds):
            for variant in VARIANTS:
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
    args = parser.parse_args()
    cpu = measure(args.rounds, args.seconds, args.case)
    print("\n| variant | µs CPU per alert (median of rounds) |\n|---|---:|")
    for variant, values in cpu.items():
        print(f"| {variant} | {sorted(values)[len(values) // 2]:.1f} |")


if __name__ == "__main__":
    main()
