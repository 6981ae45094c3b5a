"""The JSM Operations simulator's side of the loop back: a person's actions and the outgoing webhook it
pushes for every acknowledge, close and note (the desk itself reads no desk events yet: docs/desks.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.simulators import jsm_ops
from bridge.core.desk import Desk
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.pushes import receiving
from tests.adapters.desks.variants import JSM_OPS


@pytest.fixture
async def site() -> AsyncIterator[tuple[web.Application, Desk]]:
    runner, url = await serve(JSM_OPS.app())
    async with aiohttp.ClientSession() as session:
        yield runner.app, build(JSM_OPS.config(url), session)
    await runner.cleanup()


async def test_every_action_is_pushed_with_who_made_it(site: tuple[web.Application, Desk]) -> None:
    app, desk = site
    async with receiving() as got:
        app[jsm_ops.PUSH].target(got.url, {"Authorization": "Bearer sync-secret"})
        ref = await desk.open("route:abc123:1", JSM_OPS.fields)
        await desk.note(ref, "disk at 97%")
        app[jsm_ops.STORE].act_as_human(ref.id, "jdoe@example.com", "acknowledge")
        app[jsm_ops.STORE].act_as_human(ref.id, "jdoe@example.com", "close", "replaced the disk")
        await app[jsm_ops.PUSH].drained()
        bodies = [orjson.loads(b) for b in got.bodies]
    shown = [(b["action"], b["alert"]["username"], b["alert"].get("note", "")) for b in bodies]
    assert shown == [
        ("AddNote", "alert-ticket-bridge", "disk at 97%"),  # the desk's `user` names the bridge's actions
        ("Acknowledge", "jdoe@example.com", ""),
        ("Close", "jdoe@example.com", "replaced the disk"),
    ]
    assert all(b["alert"]["alias"] == ref.id and isinstance(b["alert"]["updatedAt"], int) for b in bodies)
    alert = app[jsm_ops.STORE].find(ref.id, "alias")
    assert alert is not None and alert["status"] == "closed"
