"""One bridge process: ingress, engine, delivery and timers over one Redis, started and stopped whole."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiohttp import web

from bridge.admin.reload import Reloader
from bridge.core import config as config_mod
from bridge.core.config import MappingConfig
from bridge.core.tuning import Tuning
from bridge.delivery.worker import Delivery
from bridge.engine.consumer import Engine
from bridge.engine.timers import Ticker
from bridge.process.app import make_app
from bridge.process.embedded import embedded_redis
from bridge.runtime.context import Runtime
from bridge.runtime.scripts import open_scripts

log = structlog.get_logger("bridge.process.server")
REDIS_TIMEOUT_S = 5.0  # a Redis that does not answer within this fails the call (webhooks get a 503)
GC_YOUNG = 50_000  # allocations between collections of the young generation (CPython's default: 700)


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
    ) -> None:
        self.config, self.redis_url = config, redis_url
        self.config_paths, self.reload_poll_s = list(config_paths), reload_poll_s
        self.admin_token = admin_token
        self.reloader: Reloader | None = None
        self.host, self.port = host, port
        self.tuning = tuning or Tuning()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.grace_s = grace_s
        self.reuse_port = reuse_port
        self.stopping = asyncio.Event()
        self.runtime: Runtime | None = None
        self.delivery: Delivery | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Bridge:
        scripts = open_scripts(self.redis_url, timeout=REDIS_TIMEOUT_S)
        redis = scripts.redis
        await scripts.load()
        rt = Runtime(
            redis, scripts, self.config, tuning=self.tuning, consumer=self.consumer, admin_token=self.admin_token
        )
        self.runtime = rt
        await rt.open_desks()
        for name, source in self.config.sources.items():
            if source.secret is None or not source.secret_value():
                log.warning("source_unauthenticated", source=name, hint="set its secret to require a token")
        engine = Engine(rt)
        await engine.ensure_group()
        self.delivery = delivery = Delivery(rt, engine.ready)
        engine.handoff = delivery
        ticker = Ticker(rt, engine.ready)
        self._tasks = [
            asyncio.create_task(engine.run(self.stopping), name="engine"),
            asyncio.create_task(delivery.run(self.stopping), name="delivery"),
            asyncio.create_task(ticker.run(self.stopping), name="timers"),
        ]
        if self.config_paths:
            self.reloader = Reloader(rt, self.config_paths, poll_s=self.reload_poll_s)
            self._tasks.append(asyncio.create_task(self.reloader.run(self.stopping), name="reload"))
        # In-flight requests get the grace period too: an alert being written to Redis is answered.
        self._runner = web.AppRunner(make_app(rt), access_log=None, handle_signals=False, shutdown_timeout=self.grace_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("bridge_started", host=self.host, port=self.port, consumer=self.consumer)
        return self

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish within the grace period, then cancel and await.

        The grace period bounds the whole stop (Kubernetes kills at terminationGracePeriodSeconds):
        open requests are answered, the engine finishes its batch (entries it did not acknowledge
        stay pending for another replica's XAUTOCLAIM) and delivery its current desk calls (the
        rest of each outbox stays in Redis, and leases are released so others resume at once).
        """
        if self.stopping.is_set():
            return
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
        if self.runtime is not None:
            await self.runtime.aclose()
            await self.runtime.scripts.aclose()
            await self.runtime.redis.aclose()
        log.info("bridge_stopped", unfinished=len(pending))


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
) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the mapping files (so does saving one).

    Without a Redis URL, run an embedded redis-server meanwhile.
    """
    config = config_mod.load(config_paths)
    with contextlib.ExitStack() as stack:
        redis_url = redis_url or embedded_redis(stack, data_dir)
        bridge = Bridge(
            config, redis_url, host=host, port=port, grace_s=grace_s, reuse_port=reuse_port, tuning=tuning,
            config_paths=config_paths, reload_poll_s=reload_poll_s, admin_token=admin_token,
        )  # fmt: skip
        await bridge.start()
        collect_less()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        if bridge.reloader is not None:
            loop.add_signal_handler(signal.SIGHUP, bridge.reloader.request)
        await signalled.wait()
        log.info("bridge_stopping", grace_s=grace_s)
        await bridge.stop()
