"""The bridge's request path alone: `bridge.process.app.make_app` as `Bridge.start` serves it, no engine.

For the ingest benchmark's "ingress only" row, which isolates the request path (auth, size,
content type, parse, pipelined XADD, 202; the repeat window and its subscription, unless
BRIDGE_REPEAT_WINDOW_MS=0) from the engine draining the stream in the same processes.
Run one copy per worker: `python -m bench.ingress_only --config FILE --port P`.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

from bridge.core import config as config_mod
from bridge.core import logs
from bridge.ingress import repeats
from bridge.process.app import make_app
from bridge.process.server import REDIS_TIMEOUT_S, announce, collect_less
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import open_scripts


async def serve(config_path: str, port: int) -> None:
    config = config_mod.load([config_path])
    url = config_mod.redis_url()
    assert url, "BRIDGE_REDIS_URL must be set"
    scripts = open_scripts(url, timeout=REDIS_TIMEOUT_S)  # as Bridge.start opens them
    redis = scripts.redis
    tuning = config_mod.tuning()
    await scripts.load()
    runtime = Runtime(redis, scripts, config, tuning=tuning)
    app = make_app(runtime)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    stop = asyncio.Event()
    listening = asyncio.create_task(repeats.listen(redis, app[repeats.REPEATS], stop, announce(runtime)))
    await repeats.until_live(app[repeats.REPEATS], REDIS_TIMEOUT_S)
    collect_less()  # as `bridge serve` does once started
    try:
        await asyncio.Event().wait()
    finally:
        stop.set()
        await listening
        await runner.cleanup()
        await scripts.aclose()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logs.configure(level="info")  # as `bridge serve` by default
    uvloop.install()
    asyncio.run(serve(args.config, args.port))


if __name__ == "__main__":
    main()
