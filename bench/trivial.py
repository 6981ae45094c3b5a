"""Baseline (b), the framework ceiling: an aiohttp handler that reads the body and answers 202.

Same stack as the bridge's ingress (aiohttp on uvloop, SO_REUSEPORT, no access log), none of its work.
Run one copy per worker: `python -m bench.trivial --port P`.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

ACCEPTED = b'{"accepted":1,"rejected":0}'


async def webhook(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ACCEPTED, status=202, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=1 << 22)
    app.router.add_post("/webhook/{source}", webhook)
    app.router.add_get("/healthz", healthz)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, reuse_port=True, access_log=None, print=None)


if __name__ == "__main__":
    main()
