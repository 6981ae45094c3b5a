"""The status page's tests: a bridge with both tokens, and a browser-like client that logs in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import Snow, mapping
from tests.running import TOKEN, base_url

VIEWER = "v1ewer-t0ken-for-tests"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class UiClient:
    """A cookie-keeping HTTP client of the status page, as a browser would use it (redirects not followed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        # The cookies are set for 127.0.0.1: aiohttp's jar keeps cookies of IP addresses only when `unsafe`.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url + path, allow_redirects=False, headers=headers) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str], **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.url + path, data=data, allow_redirects=False, headers=headers) as r:
            return r.status, await r.text(), r

    async def csrf(self, path: str = "/ui/incidents") -> str:
        status, text, _ = await self.get(path)
        assert status == 200, (path, status, text[:500])
        found = CSRF.search(text)
        assert found, text[:500]
        return found.group(1)

    async def login(self, token: str, **headers: str) -> aiohttp.ClientResponse:
        _, text, _ = await self.get("/ui/login")
        found = CSRF.search(text)
        assert found
        status, body, response = await self.post("/ui/login", {"token": token, "csrf": found.group(1)}, **headers)
        assert status == 303, (status, body[:500])
        return response

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def ui_bridge(snow: Snow, make_bridge: Any) -> Any:
    """A running bridge with the admin token and the viewer token, on the ServiceNow simulator."""
    return await make_bridge(mapping(snow.url), admin_token=TOKEN, viewer_token=VIEWER)


@pytest.fixture
async def client(ui_bridge: Any) -> AsyncIterator[UiClient]:
    c = UiClient(base_url(ui_bridge))
    yield c
    await c.close()


SCREENSHOTS: list[str] = []  # where the browser tests kept their screenshots this session


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the status page's screenshots are (the browser tests' artefacts), when any were taken."""
    for where in sorted(set(SCREENSHOTS)):
        terminalreporter.write_line(f"status page screenshots: {where}")
