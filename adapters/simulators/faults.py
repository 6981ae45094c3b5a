"""Fault switches shared by every desk simulator: latency, 5xx, 429, timeouts, lost answers, expired auth.

A simulator builds its app, then calls `install(app, faults, answers)`: the middleware applies the
switches to every request outside `/_sim/`, and the control endpoints let a test or the CLI in
another process drive them:

    GET  /_sim/faults   -> the current switches, e.g. {"latency_ms": 0, "fail_5xx": 2, ...}
    POST /_sim/faults   <- any subset of the switches as JSON; answers the switches after the change
    POST /_sim/reset    -> all switches back to zero, plus the simulator's own reset (its records)

In-process tests hold the `Faults` object (or read `app[FAULTS]`) and call `faults.set(...)`.

Counted switches apply to the next N requests, in this order of precedence when several are armed:
`expire_auth` (401), `rate_limit` (429 + Retry-After), `fail_5xx` (503), `timeout` (held for
`hang_s`, never processed, then 503), `timeout_after_commit` (writes only: processed and stored,
then the answer is held for `hang_s`). Held requests are released when the app shuts down, so a
test server stops promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, fields, replace

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Faults:
    """The switches of one simulator. Counts are "the next N requests"; 0 means off."""

    latency_ms: int = 0  # every request sleeps this long first
    fail_5xx: int = 0  # next N requests: 503 with the vendor's error envelope
    rate_limit: int = 0  # next N requests: 429 with Retry-After
    retry_after: int = 1  # seconds announced in Retry-After
    timeout: int = 0  # next N requests: held for hang_s, not processed, then 503
    timeout_after_commit: int = 0  # next N writes: stored, then the answer is held for hang_s
    expire_auth: int = 0  # next N requests: 401 as if the session or token expired
    hang_s: float = 30.0  # longer than any client timeout

    def set(self, **switches: float) -> None:
        """Set some switches by name; an unknown name or a negative value is a ValueError."""
        known = {f.name for f in fields(self)}
        for name, value in switches.items():
            if name not in known:
                raise ValueError(f"unknown fault switch {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"fault switch {name!r} needs a number >= 0, got {value!r}")
            if name != "hang_s" and not float(value).is_integer():
                raise ValueError(f"fault switch {name!r} needs a whole number, got {value!r}")
            setattr(self, name, float(value) if name == "hang_s" else int(value))

    def reset(self) -> None:
        """Every switch back to its default."""
        for f in fields(self):
            setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def take(self, name: str) -> bool:
        """Consume one count of a counted switch: True when it was armed."""
        left: int = getattr(self, name)
        if left <= 0:
            return False
        setattr(self, name, left - 1)
        return True


@dataclass(frozen=True, slots=True)
class FaultAnswers:
    """How one vendor words each injected failure (status, body, headers)."""

    unavailable: Callable[[], web.Response]  # 503
    rate_limited: Callable[[int], web.Response]  # 429, given the Retry-After seconds
    auth_expired: Callable[[], web.Response]  # 401


FAULTS = web.AppKey("faults", Faults)
_CLOSING = web.AppKey("faults_closing", asyncio.Event)


def install(
    app: web.Application,
    faults: Faults,
    answers: FaultAnswers,
    *,
    on_reset: Callable[[], None] | None = None,
) -> None:
    """Add the fault middleware (innermost so far) and the `/_sim/` control endpoints to `app`."""
    app[FAULTS] = faults
    app.middlewares.append(_middleware(faults, answers))
    app.cleanup_ctx.append(_release_on_shutdown)
    app.on_shutdown.append(_set_closing)
    app.router.add_get("/_sim/faults", _get_faults)
    app.router.add_post("/_sim/faults", _post_faults)
    app.router.add_post("/_sim/reset", _make_reset(on_reset))


def is_control(request: web.Request) -> bool:
    """Control endpoints are never faulted, logged or authenticated."""
    return request.path.startswith("/_sim/")


def _middleware(faults: Faults, answers: FaultAnswers) -> Middleware:
    @web.middleware
    async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_control(request):
            return await handler(request)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.take("expire_auth"):
            return answers.auth_expired()
        if faults.take("rate_limit"):
            return answers.rate_limited(faults.retry_after)
        if faults.take("fail_5xx"):
            return answers.unavailable()
        if faults.take("timeout"):
            await _hang(request, faults.hang_s)
            return answers.unavailable()
        if request.method in _WRITES and faults.take("timeout_after_commit"):
            response = await handler(request)
            await _hang(request, faults.hang_s)
            return response
        return await handler(request)

    return apply_faults


async def _hang(request: web.Request, seconds: float) -> None:
    """Hold the request for `seconds`, or until the app shuts down."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(request.app[_CLOSING].wait(), seconds)


async def _release_on_shutdown(app: web.Application) -> AsyncIterator[None]:
    # The Event is made here, inside the running loop that serves the app.
    app[_CLOSING] = asyncio.Event()
    yield


async def _set_closing(app: web.Application) -> None:
    # on_shutdown runs before the server waits for in-flight handlers: release the held ones.
    app[_CLOSING].set()


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].as_dict())


async def _post_faults(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "bad_request", "detail": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "bad_request", "detail": "body must be an object"}, status=400)
    probe = replace(faults)  # validate all before changing any
    try:
        probe.set(**body)
    except ValueError as exc:
        return web.json_response({"error": "bad_request", "detail": str(exc)}, status=400)
    faults.set(**body)
    return web.json_response(faults.as_dict())


def _make_reset(on_reset: Callable[[], None] | None) -> Handler:
    async def reset(request: web.Request) -> web.Response:
        request.app[FAULTS].reset()
        if on_reset is not None:
            on_reset()
        return web.json_response({"reset": True})

    return reset
