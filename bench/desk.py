"""The ServiceNow simulator with a fixed latency, and a clock on every desk call it answers.

`GET /_bench/times` lists `{"method", "kind", "key", "status", "t_in", "t_out"}` per Table API call
(wall-clock seconds, comparable with the bench's own clock on the same machine); `kind` is open,
note, resolve, update or the method; `key` is a created record's `short_description`, which the
bench mapping sets to the alert's bench id.
Run: `python -m bench.desk --port P --latency-ms L`.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import orjson
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.simulators.faults import FAULTS
from adapters.simulators.servicenow import make_app

USER, PASSWORD = "bench", "bench"
TIMES = web.AppKey("bench_times", list)


@web.middleware
async def clock(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    t_in = time.time()
    key, kind = "", request.method.lower()
    if request.method in ("POST", "PATCH", "PUT"):
        body: Any = orjson.loads(await request.read() or b"{}")
        body = body if isinstance(body, dict) else {}
        key = str(body.get("short_description", ""))
        if request.method == "POST":
            kind = "open"
        elif body.get("state") in ("6", "7") or "close_code" in body:
            kind = "resolve"
        elif body.get("state") == "2":
            kind = "reopen"
        elif "work_notes" in body or "comments" in body:
            kind = "note"
        else:
            kind = "update"
    response = await handler(request)
    request.app[TIMES].append(
        {"method": request.method, "kind": kind, "key": key, "status": response.status, "t_in": t_in,
         "t_out": time.time()}
    )  # fmt: skip
    return response


async def times(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[TIMES]), content_type="application/json")


def build(latency_ms: int) -> web.Application:
    app = make_app(user=USER, password=PASSWORD)
    app.middlewares.insert(0, clock)  # outermost: from arrival to the answer, the latency included
    app[TIMES] = []
    app[FAULTS].set(latency_ms=latency_ms)
    app.router.add_get("/_bench/times", times)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args()
    uvloop.install()
    # An instrument must not pause: the simulator's own collections (gen-2 up to 42 ms as its tables
    # grew, gen-0 every half second) landed in the bridge's measured overhead, since the clock is
    # read here. It lives for one bench section, so its garbage can wait (bench/OPTIMISATIONS.md).
    gc.disable()
    web.run_app(build(args.latency_ms), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
