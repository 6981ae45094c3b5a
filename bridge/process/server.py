"""One bridge process: ingress, engine, delivery and timers over one Redis, started and stopped whole."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions
import structlog
from aiohttp import web
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from bridge.admin.reload import Reloader
from bridge.admin.upkeep import Upkeep
from bridge.core import config as config_mod
from bridge.core import keys
from bridge.core.config import MappingConfig
from bridge.core.errors import ConfigError
from bridge.core.tuning import Tuning
from bridge.delivery.upstreams import UpstreamWorker
from bridge.delivery.worker import Delivery
from bridge.engine.consumer import Engine
from bridge.engine.desk_events import DeskEventApplier
from bridge.engine.timers import Ticker
from bridge.ingress import repeats
from bridge.ingress.desk_poll import DeskPoller
from bridge.ingress.repeats import REPEATS, RepeatWindow
from bridge.process.app import make_app
from bridge.process.embedded import embedded_redis
from bridge.runtime import durability
from bridge.runtime.connect import is_cluster, without_password
from bridge.runtime.context import Runtime
from bridge.runtime.heartbeats import Watch
from bridge.runtime.scripts import open_scripts

log = structlog.get_logger("bridge.process.server")
REDIS_TIMEOUT_S = 5.0  # a Redis that does not answer within this fails the call (webhooks get a 503)
REDIS_FIRST_WAIT_S = 0.5  # Redis unreachable at start-up: the first wait before trying again, doubling
REDIS_MAX_WAIT_S = 10.0  # up to this
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
GC_YOUNG = 50_000  # allocations between collections of the young generation (CPython's default: 700)


def warn_unauthenticated(config: MappingConfig) -> None:
    """One warning line naming every source that takes requests without a secret, if any does."""
    open_sources = [name for name, source in config.sources.items() if not source.secret_value()]
    if open_sources:
        log.warning(
            "sources_unauthenticated",
            sources=open_sources,
            hint="anyone who can reach the bridge can post alerts to these; set each one's secret to require a token",
        )


def local_only(host: str) -> bool:
    """Whether listening on `host` takes requests from this machine only (a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # "", "0.0.0.0"-like names, a host name: other machines may reach it
        return False


def refuse_open_sources(config: MappingConfig, host: str, *, allow_unauthenticated: bool) -> None:
    """On an address other machines can reach, a source without a secret lets anyone open tickets: the
    bridge does not start so unless told to (`--allow-unauthenticated`). ConfigError naming them."""
    if allow_unauthenticated or local_only(host):
        return
    open_sources = [name for name, source in config.sources.items() if not source.secret_value()]
    if open_sources:
        raise ConfigError(
            f"--host {host} takes requests from other machines, and these sources take alerts without a secret:"
            f" {', '.join(open_sources)}. Set each one's secret (e.g. secret: ${{ALERTMANAGER_TOKEN}}), remove the"
            " sources you do not use, or pass --allow-unauthenticated to accept that anyone who can reach the"
            " port may post alerts to them"
        )


def warn_insecure_desks(config: MappingConfig) -> None:
    """One warning line per desk reached over plain http:// on another host (`allow_insecure_http`)."""
    for name, desk in config.desks.items():
        url = getattr(desk, "url", "")
        if getattr(desk, "allow_insecure_http", False) and isinstance(url, str) and insecure_url(url):
            log.warning(
                "desk_insecure_http", desk=name, url=origin_of(url),
                hint="its credentials and tickets cross the network in clear; use an https:// URL",
            )  # fmt: skip


def insecure_url(url: str) -> bool:
    """http:// to a host that is not this one (loopback and `localhost` are exempt)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def collect_less() -> None:
    """Once started: what start-up built (modules, mapping, app) lives as long as the process, so it
    is kept out of the collector's reach and a full collection does not walk it (such pauses land in
    the webhook latency). And the young generation is collected every 50,000 allocations rather than
    every 700: nearly everything a request or a batch allocates is freed by its reference count."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)


class Bridge:
    """`await Bridge(...).start()` ... `await bridge.stop()`; the stop is idempotent and graceful."""

    def __init__(
        self,
        config: MappingConfig,
        redis_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        tuning: Tuning | None = None,
        consumer: str | None = None,
        grace_s: float = 10.0,
        reuse_port: bool = False,
        config_paths: Sequence[str] = (),
        reload_poll_s: float = 2.0,
        admin_token: str = "",
        announce: bool = True,
        viewer_token: str = "",
        allow_unauthenticated: bool = False,
    ) -> None:
        """`announce`: log the start-up warnings (open sources); off in all but one of several workers."""
        self.config, self.redis_url = config, redis_url
        self.announce = announce
        self.config_paths, self.reload_poll_s = list(config_paths), reload_poll_s
        self.admin_token, self.viewer_token = admin_token, viewer_token
        self.allow_unauthenticated = allow_unauthenticated
        self.reloader: Reloader | None = None
        self.host, self.port = host, port
        self.tuning = tuning or Tuning()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.grace_s = grace_s
        self.reuse_port = reuse_port
        self.stopping = asyncio.Event()
        self.runtime: Runtime | None = None
        self.delivery: Delivery | None = None
        self.poller: DeskPoller | None = None
        self.repeats: RepeatWindow | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.failed = asyncio.Event()  # a stage stopped on its own (`_stage`): the process must stop
        self.failure = ""  # which, and why

    async def start(self) -> Bridge:
        """Listen, reach Redis, then start the stages; returns once started, or once stopped before.

        The HTTP server listens first, so that /healthz answers while Redis cannot be reached and
        /readyz says why the process is not ready; Redis is tried again with a growing wait (one
        `redis_unreachable` line per try) until it answers or `stop` is called.
        """
        scripts = open_scripts(self.redis_url, timeout=REDIS_TIMEOUT_S)
        rt = Runtime(
            scripts.redis,
            scripts,
            self.config,
            tuning=self.tuning,
            consumer=self.consumer,
            admin_token=self.admin_token,
            viewer_token=self.viewer_token,
            allow_unauthenticated=self.allow_unauthenticated,
        )
        rt.not_ready = f"starting: connecting to Redis at {without_password(self.redis_url)}"
        self.runtime = rt
        await rt.open_desks()
        if self.announce:
            warn_unauthenticated(self.config)
            warn_insecure_desks(self.config)
        engine = Engine(rt)
        await self._listen(rt)
        if not await self._reach_redis(rt, engine):
            return self  # stopped while waiting
        if self.announce:
            await durability.check(rt.redis, self.tuning)  # what a 202 can lose, said once
        self.delivery = delivery = Delivery(rt, engine.ready)
        engine.handoff = delivery
        ticker = Ticker(rt, engine.ready)
        upkeep = Upkeep(rt)
        applier = DeskEventApplier(rt, engine.ready)
        upstreams = UpstreamWorker(rt, applier.upstream_ready)
        self.poller = poller = DeskPoller(rt)
        await upkeep.refresh()  # the shared gauges have their values from the first scrape on
        assert self._runner is not None  # _listen made it
        self.repeats = window = self._runner.app[REPEATS]  # identical copies within moments (bridge/ingress/repeats.py)
        self._tasks = [
            self._stage(engine.run(self.stopping), "engine"),
            self._stage(delivery.run(self.stopping), "delivery"),
            self._stage(ticker.run(self.stopping), "timers"),
            self._stage(upkeep.run(self.stopping), "upkeep"),
            self._stage(Watch(rt).run(self.stopping), "heartbeats"),  # their gauges
            self._stage(applier.run(self.stopping), "desk_events"),  # the loop back
            self._stage(upstreams.run(self.stopping), "upstreams"),
            self._stage(poller.run(self.stopping), "desk_poll"),
            self._stage(repeats.listen(rt.redis, window, self.stopping, announce(rt)), "repeats"),
        ]
        await repeats.until_live(window, REDIS_TIMEOUT_S)
        if self.config_paths:
            self.reloader = Reloader(rt, self.config_paths, poll_s=self.reload_poll_s)
            self._tasks.append(self._stage(self.reloader.run(self.stopping), "reload"))
        rt.not_ready = ""
        log.info("bridge_started", host=self.host, port=self.port, consumer=self.consumer)
        return self

    def _stage(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A stage's loop as a task, watched: each loop handles what it can retry (Redis or a desk away), so
        one that raises is a bug, and the process must not run on without it (answering 202 for alerts
        that nothing decides or delivers). It is logged (`stage_stopped`, with its traceback), /readyz
        says so, and `failed` is set: `serve` stops the process, which exits 1 for its service manager
        (or `--workers`' parent) to start it again. A loop that returns has nothing to do (the repeat
        window turned off)."""
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(self._stage_ended)
        return task

    def _stage_ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping.is_set() or task.cancelled() or (error := task.exception()) is None:
            return
        said = f"{type(error).__name__}: {error}"
        log.critical("stage_stopped", stage=task.get_name(), error=said, exc_info=error)
        self.failure = self.failure or f"the {task.get_name()} stage stopped ({said}); the process stops"
        if self.runtime is not None:
            self.runtime.not_ready = self.failure
        self.failed.set()

    async def _listen(self, rt: Runtime) -> None:
        # In-flight requests get the grace period too: an alert being written to Redis is answered.
        self._runner = web.AppRunner(make_app(rt), access_log=None, handle_signals=False, shutdown_timeout=self.grace_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _reach_redis(self, rt: Runtime, engine: Engine) -> bool:
        """Load the scripts and make the intake group, trying again while Redis is unreachable (waits
        from REDIS_FIRST_WAIT_S doubling up to REDIS_MAX_WAIT_S, cut short when /readyz sees Redis
        answer); False when `stop` came first."""
        url = without_password(self.redis_url)

        async def contact() -> bool:
            if self.stopping.is_set():
                return False
            await rt.scripts.load()
            await engine.ensure_group()
            return True

        async def pause(seconds: float) -> None:
            rt.redis_answered.clear()
            waits = [asyncio.ensure_future(e.wait()) for e in (self.stopping, rt.redis_answered)]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

        def unreachable(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            seconds = state.next_action.sleep if state.next_action else 0.0
            rt.not_ready = (
                f"Redis at {url} is unreachable: {error} (attempt {state.attempt_number}; next try in {seconds:.1f} s)"
            )
            log.warning(
                "redis_unreachable",
                url=url,
                attempt=state.attempt_number,
                retry_in_s=round(seconds, 1),
                error=str(error),
                hint="start Redis there, or set BRIDGE_REDIS_URL to where it runs; the bridge waits for it",
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(REDIS_DOWN),
            wait=wait_exponential(multiplier=REDIS_FIRST_WAIT_S, max=REDIS_MAX_WAIT_S),
            stop=lambda state: self.stopping.is_set(),
            sleep=pause,
            before_sleep=unreachable,
            retry_error_callback=lambda state: False,
        )
        reached: bool = await retrying(contact)
        attempts = retrying.statistics.get("attempt_number", 1)
        if reached and attempts > 1:
            log.info("redis_reached", url=url, attempts=attempts)
        return reached

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish within the grace period, then cancel and await.
        A start still waiting for Redis ends first (`stopping` ends its wait).

        The grace period bounds the whole stop (Kubernetes kills at terminationGracePeriodSeconds):
        open requests are answered, the engine finishes its batch (entries it did not acknowledge
        stay pending for another replica's XAUTOCLAIM) and delivery its current desk calls (the
        rest of each outbox stays in Redis, and leases are released so others resume at once).
        """
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        remaining = max(0.0, deadline - loop.time())
        _, pending = await asyncio.wait(self._tasks, timeout=remaining) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.poller is not None:
            await self.poller.release()
        if self.runtime is not None:
            await self.runtime.aclose()
            await self.runtime.scripts.aclose()
            await self.runtime.redis.aclose()
        log.info("bridge_stopped", unfinished=len(pending))


def announce(rt: Runtime) -> Callable[[bytes], Awaitable[Any]] | None:
    """The repeat window's announcements in the round trips shared with this turn's other commands (on
    one Redis or Sentinel); None on a cluster, whose pipelines take no keyless command (a plain PUBLISH)."""
    if is_cluster(rt.redis):
        return None

    async def publish(payload: bytes) -> Any:
        pipe = rt.redis.pipeline(transaction=False)
        pipe.publish(keys.REPEATS_CHANNEL, payload)
        return await rt.scripts.execute(pipe)

    return publish


async def serve(
    config_paths: Sequence[str],
    *,
    host: str,
    port: int,
    redis_url: str | None,
    data_dir: Path,
    grace_s: float = 10.0,
    reuse_port: bool = False,
    tuning: Tuning | None = None,
    admin_token: str = "",
    reload_poll_s: float = 2.0,
    announce: bool = True,
    allow_unauthenticated: bool = False,
    viewer_token: str = "",
) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the mapping files (so does saving one). Returns the
    exit code: 0, or 1 when a stage stopped on its own (`Bridge._stage`) and so did the process.

    On an address other machines can reach, sources without a secret stop the start unless
    `allow_unauthenticated` (`refuse_open_sources`).

    Without a Redis URL, run an embedded redis-server meanwhile. A Redis that cannot be reached is
    waited for (`Bridge.start`); a signal meanwhile stops the process as cleanly as later.
    """
    config = config_mod.load(config_paths)
    refuse_open_sources(config, host, allow_unauthenticated=allow_unauthenticated)
    with contextlib.ExitStack() as stack:
        redis_url = redis_url or embedded_redis(stack, data_dir, durability=(tuning or Tuning()).durability)
        bridge = Bridge(
            config, redis_url, host=host, port=port, grace_s=grace_s, reuse_port=reuse_port, tuning=tuning,
            config_paths=config_paths, reload_poll_s=reload_poll_s, admin_token=admin_token, announce=announce,
            viewer_token=viewer_token, allow_unauthenticated=allow_unauthenticated,
        )  # fmt: skip
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        # From the start, so that a SIGHUP while still starting does not end the process (its default).
        loop.add_signal_handler(signal.SIGHUP, lambda: bridge.reloader.request() if bridge.reloader else None)
        starting = asyncio.create_task(bridge.start(), name="start")
        signal_wait = asyncio.create_task(signalled.wait(), name="signal")
        failed_wait = asyncio.create_task(bridge.failed.wait(), name="failed")
        try:
            await asyncio.wait({starting, signal_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # a signal (or a failed stage) while waiting for Redis: end the wait, then stop
                bridge.stopping.set()
            await starting
            if not signalled.is_set() and not bridge.failed.is_set():
                collect_less()
                await asyncio.wait({signal_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal_wait.cancel()
            failed_wait.cancel()
            log.info("bridge_stopping", grace_s=grace_s, **({"failure": bridge.failure} if bridge.failure else {}))
            await bridge.stop()
    return 1 if bridge.failure else 0
