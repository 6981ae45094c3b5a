"""A request that gets no usable answer is a DeskTransient that says where it went and why, in a few
words: connection refused, DNS lookup failed, TLS error (certificate), timeout, HTTP <status>."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from adapters.desks.transport import Transport
from bridge.core.errors import Cause, DeskTransient
from bridge.process.embedded import free_port
from tests.adapters.desks.conftest import build, serve
from tests.adapters.desks.variants import Variant


async def no_answer(transport: Transport, url: str) -> DeskTransient:
    with pytest.raises(DeskTransient) as info:
        await transport.send("find", "GET", url + "/api/x", headers={}, params={"q": "1"})
    return info.value


async def test_a_closed_port_is_connection_refused(session: aiohttp.ClientSession) -> None:
    """Nothing listens there: cause `connection refused`, the URL without path or query."""
    url = f"http://127.0.0.1:{free_port()}"
    error = await no_answer(Transport("snow", session, timeout=2.0), url)
    assert (error.desk, error.action, error.url, error.cause) == ("snow", "find", url, Cause.REFUSED)
    assert error.status is None
    assert str(error).startswith(f"snow find: connection refused at {url} (")


async def test_an_unknown_host_is_dns_lookup_failed(session: aiohttp.ClientSession) -> None:
    """A host name that does not resolve (.invalid never does): cause `DNS lookup failed`."""
    error = await no_answer(Transport("snow", session, timeout=5.0), "https://desk.invalid")
    assert (error.url, error.cause) == ("https://desk.invalid", Cause.DNS)


async def test_an_untrusted_certificate_is_a_tls_error(
    session: aiohttp.ClientSession, private_ca: tuple[Path, ssl.SSLContext]
) -> None:
    """A certificate signed by a CA the desk does not trust: cause `TLS error (certificate)`."""
    _, server_ssl = private_ca
    runner, url = await serve(web.Application(), server_ssl)
    try:
        error = await no_answer(Transport("snow", session, timeout=2.0), url)
    finally:
        await runner.cleanup()
    assert (error.url, error.cause) == (url, Cause.TLS)


async def test_no_answer_in_time_is_a_timeout(session: aiohttp.ClientSession) -> None:
    """The desk accepts the request and never answers within the desk's timeout: cause `timeout`."""

    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/x", hang)
    runner, url = await serve(app)
    try:
        error = await no_answer(Transport("snow", session, timeout=0.2), url)
    finally:
        released.set()
        await runner.cleanup()
    assert (error.url, error.cause) == (url, Cause.TIMEOUT)
    assert str(error) == f"snow find: timeout at {url}: no answer within 0.2s"


async def test_a_5xx_answer_is_http_and_its_status(session: aiohttp.ClientSession) -> None:
    """An answer with status 503: cause `HTTP 503`, with the status and the URL."""

    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    app = web.Application()
    app.router.add_get("/api/x", failing)
    runner, url = await serve(app)
    try:
        transport = Transport("snow", session, timeout=2.0)
        answer = await transport.send("find", "GET", url + "/api/x", headers={})
    finally:
        await runner.cleanup()
    error = transport.error("find", answer)
    assert isinstance(error, DeskTransient)
    assert (error.url, error.cause, error.status) == (url, "HTTP 503", 503)
    assert str(error) == f"snow find: HTTP 503 at {url}"


async def test_every_desk_kind_says_where_and_why(variant: Variant, session: aiohttp.ClientSession) -> None:
    """Each desk adapter, pointed at a closed port, fails its first call with that URL and `connection refused`."""
    url = f"http://127.0.0.1:{free_port()}"
    desk = build(variant.config(url), session)
    with pytest.raises(DeskTransient) as info:
        await desk.find("route:abc123:1")
    assert (info.value.desk, info.value.url, info.value.cause) == ("desk", url, Cause.REFUSED)
