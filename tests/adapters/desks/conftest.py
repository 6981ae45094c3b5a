"""Fixtures for the desk suites: a running simulator per variant, desks built through the registry, a private CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import pytest
from aiohttp import web
from pydantic import TypeAdapter

from adapters.simulators.faults import FAULTS, Faults
from bridge.core.config import DeskConfig
from bridge.core.desk import Desk
from bridge.delivery.guard import retrying
from tests.adapters.desks.variants import VARIANTS, Variant
from tests.adapters.desks.views import Ticket
from tests.tls import private_ca as make_private_ca

T = TypeVar("T")
DESKS: TypeAdapter[Any] = TypeAdapter(DeskConfig)


@dataclass
class Sim:
    """A running simulator of one variant, and handles on what it holds."""

    variant: Variant
    app: web.Application
    url: str

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    def tickets(self) -> list[Ticket]:
        return self.variant.view(self.app)

    def requests(self) -> list[dict[str, Any]]:
        return self.variant.requests(self.app)

    def config(self, **overrides: Any) -> dict[str, Any]:
        return self.variant.config(self.url) | overrides


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"


@pytest.fixture(params=VARIANTS, ids=lambda v: v.name)
def variant(request: pytest.FixtureRequest) -> Variant:
    return cast(Variant, request.param)


@pytest.fixture
async def sim(variant: Variant) -> AsyncIterator[Sim]:
    runner, url = await serve(variant.app())
    yield Sim(variant, runner.app, url)
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def build(config: dict[str, Any], session: aiohttp.ClientSession, name: str = "desk") -> Desk:
    """A desk from its mapping config, through the registry (`bridge.core.config.DeskConfig`)."""
    return cast(Desk, DESKS.validate_python(config).build(name, session))


@pytest.fixture
def make_desk(sim: Sim, session: aiohttp.ClientSession) -> Callable[..., Desk]:
    def make(**overrides: Any) -> Desk:
        return build(sim.config(**overrides), session)

    return make


@pytest.fixture
async def desk(make_desk: Callable[..., Desk]) -> AsyncIterator[Desk]:
    made = make_desk()
    yield made
    await made.aclose()


async def retried(call: Callable[[], Awaitable[T]], attempts: int = 4) -> T:
    """Run `call` under delivery's retry policy (bridge.delivery.guard), the one place where retries live."""
    return await retrying(call, attempts)


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA (its PEM file) and a server TLS context for 127.0.0.1 signed by it."""
    pytest.importorskip("cryptography")
    return make_private_ca(tmp_path_factory.mktemp("ca"))
