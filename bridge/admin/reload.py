"""Hot reload of the mapping files: on SIGHUP, or when a file changes (mtime polling).

The new files are loaded and validated whole before anything is swapped; an invalid file is
rejected with its error (file, path, line) in the log and in `bridge_config_last_reload_successful`,
and the running mapping stays. A valid one replaces the router and the desks between two awaits,
so an alert is routed wholly under the old mapping or wholly under the new one; in-flight desk calls
finish on the desk object they started with. Polling (no new dependency) notices a ConfigMap
update in Kubernetes too, where the files are swapped through a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from bridge.core import config as config_mod
from bridge.core.config import MappingConfig
from bridge.core.errors import ConfigError
from bridge.runtime import routebook
from bridge.runtime.context import Runtime

log = structlog.get_logger("bridge.admin.reload")
Stamp = tuple[int, int, int] | None
SETTLE_S = 0.2  # after a change is seen, wait this long for the writer to finish


class Reloader:
    def __init__(
        self,
        runtime: Runtime,
        paths: Sequence[str | Path],
        *,
        poll_s: float = 2.0,
        load: Callable[[Sequence[str | Path]], MappingConfig] = config_mod.load,
    ) -> None:
        self.rt = runtime
        self.paths = [str(p) for p in paths]
        self.poll_s = poll_s
        self._load = load
        self._wake = asyncio.Event()
        self._stamps = self._stat()
        self.last_error: str | None = None

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler); safe to call from a signal handler on the loop."""
        self._wake.set()

    def _stat(self) -> list[Stamp]:
        stamps: list[Stamp] = []
        for path in self.paths:
            try:
                st = os.stat(path)  # follows symlinks: a ConfigMap swap changes the target's stamp
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return stamps

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: reload on request, or when a file's mtime, size or inode changes."""
        while not stop.is_set():
            await self._wait(stop)
            if stop.is_set():
                return
            requested = self._wake.is_set()
            self._wake.clear()
            stamps = self._stat()
            if not requested and stamps == self._stamps:
                continue
            if not requested:
                await asyncio.sleep(SETTLE_S)
                stamps = self._stat()
            self._stamps = stamps
            try:
                await self.reload("signal" if requested else "file_changed")
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("config_reload_failed")

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def reload(self, reason: str = "request") -> bool:
        """Load, validate and apply the files; False (and the old mapping kept) when they are invalid."""
        try:
            config = await asyncio.to_thread(self._load, self.paths)
        except ConfigError as exc:
            return self._rejected(reason, exc)
        old = self.rt.config
        try:
            self.rt.use_config(config)
            await self.rt.open_desks()
        except ConfigError as exc:  # e.g. an unreadable CA bundle of a desk
            self.rt.use_config(old)
            await self.rt.open_desks()
            return self._rejected(reason, exc)
        self.last_error = None
        self.rt.reload_error = ""
        self.rt.metrics.reloaded(True)
        try:  # record the new mapping's routes; say which it retired with incidents still live
            await routebook.refresh(self.rt, reason="reload")
        except Exception:  # their incidents still reach their desk: delivery and timers ask Redis themselves
            log.exception("routebook_refresh_failed")
        log.info(
            "config_reloaded",
            reason=reason,
            files=self.paths,
            sources=len(config.sources),
            desks=len(config.desks),
            routes=[r.name for r in config.routes],
        )
        return True

    def _rejected(self, reason: str, exc: ConfigError) -> bool:
        self.last_error = self.rt.reload_error = str(exc)  # the status page's health says it
        self.rt.metrics.reloaded(False)
        log.error(
            "config_reload_rejected",
            reason=reason,
            error=str(exc),
            file=exc.file,
            path=exc.path,
            line=exc.line,
            hint="the running mapping stays; fix the file and save it again (or send SIGHUP)",
        )
        return False
