"""Where a desk simulator pushes its webhooks in the loop-back tests: a small HTTP receiver that keeps each body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from tests.adapters.desks.conftest import serve


class Receiver:
    """Keeps each pushed body and its headers, in arrival order; answers 202 as the bridge does."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        return web.json_response({"accepted": 1}, status=202)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/desk-events/{desk}", got.handle)
    runner, url = await serve(app)
    got.url = f"{url}/desk-events/desk"
    try:
        yield got
    finally:
        await runner.cleanup()
