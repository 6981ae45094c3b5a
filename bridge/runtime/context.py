"""What one bridge process holds while it runs: Redis, scripts, the current mapping, desks, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bridge.core import keys, logs
from bridge.core.config import MappingConfig
from bridge.core.desk import Desk
from bridge.core.plugins import configured
from bridge.core.routing import Retired, Router
from bridge.core.secrets import Masker
from bridge.core.source import SourceAdapter
from bridge.core.sync import Upstream
from bridge.core.tuning import Tuning
from bridge.runtime import shards as sharding
from bridge.runtime.bad_records import Reporter
from bridge.runtime.metrics import Metrics
from bridge.runtime.scripts import Redis, Scripts


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    """Sleep until `event` is set or `seconds` pass, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Runtime:
    redis: Redis
    scripts: Scripts
    config: MappingConfig
    tuning: Tuning = field(default_factory=Tuning)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], int] = wall_ms
    consumer: str = "bridge"
    router: Router = field(init=False)
    sources: dict[str, SourceAdapter] = field(init=False)  # per configured source, options bound
    desks: dict[str, Desk] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    admin_token: str = ""  # bearer token of the admin API (/api/v1); empty: the API is off
    viewer_token: str = ""  # the status page's read-only token (/ui); empty: only the admin token logs in
    allow_unauthenticated: bool = False  # --allow-unauthenticated: desks without sync.secret take pushes
    upstreams: dict[str, Upstream] = field(default_factory=dict)  # source name -> its acknowledgements (loop back)
    reload_error: str = ""  # why the last reload of the mapping was rejected; "" after one that took
    # Why this process is not ready yet while it starts (waiting for Redis), for /readyz; "" once started.
    not_ready: str = ""
    redis_answered: asyncio.Event = field(default_factory=asyncio.Event)  # set by /readyz: try again now
    # Routes gone from the mapping whose incidents still live, by id (bridge.runtime.routebook).
    retired: dict[str, Retired] = field(default_factory=dict)
    bad_record: Reporter = field(init=False)  # a record in Redis that cannot be read: log and count it
    # The mapping's secrets, masked in what is stored and answered (bridge.core.secrets); those of
    # mappings loaded before stay in it, for what was written under them.
    masker: Masker = field(init=False)
    # The intake, ready queue and timers' keys (tuning.shards; automatic: 1, or 16 on Redis Cluster).
    shards: keys.Shards = field(init=False)

    def __post_init__(self) -> None:
        self.shards = sharding.default(self.redis, self.tuning.shards)
        self.router = self._router(self.config)
        self.sources = _sources(self.config)
        self.bad_record = Reporter(self.metrics)
        self.masker = Masker(self.config.secrets())
        logs.mask(self.masker.secrets)
        self.metrics.sync_desks = tuple(self.config.desks)  # the ticket indexes the gauges measure

    def _router(self, config: MappingConfig) -> Router:
        return Router(config, retention_ms=self.tuning.retention_ms, audit_cap=self.scripts.audit_cap)

    def use_config(self, config: MappingConfig) -> None:
        """Swap in a new mapping (hot reload); desks are rebuilt by `open_desks`."""
        self.config = config
        self.router = self._router(config)
        self.sources = _sources(config)
        self.masker = self.masker | Masker(config.secrets())
        logs.mask(self.masker.secrets)
        self.metrics.sync_desks = tuple(config.desks)

    async def open_desks(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(raise_for_status=False)
        old, self.desks = (
            self.desks,
            {name: desk.build(name, self.session) for name, desk in self.config.desks.items()},
        )
        for name, sync in self.config.sync.items():  # the loop back knows the bridge's own writes by it
            if sync.integration_user and name in self.desks and hasattr(self.desks[name], "integration_user"):
                self.desks[name].integration_user = sync.integration_user  # type: ignore[attr-defined]
        for desk in old.values():
            await desk.aclose()
        built = {name: s.upstream_settings() for name, s in self.config.sources.items()}
        gone, self.upstreams = (
            self.upstreams,
            {name: settings.build(name, self.session) for name, settings in built.items() if settings is not None},
        )
        for upstream in gone.values():
            await upstream.aclose()

    async def aclose(self) -> None:
        for desk in self.desks.values():
            await desk.aclose()
        self.desks = {}
        for upstream in self.upstreams.values():
            await upstream.aclose()
        self.upstreams = {}
        if self.session is not None:
            await self.session.close()
            self.session = None


RUNTIME = web.AppKey("runtime", Runtime)


def _sources(config: MappingConfig) -> dict[str, SourceAdapter]:
    return {name: configured(source.kind, source.options) for name, source in config.sources.items()}
