"""`bridge serve --workers N`: N bridge processes on one port (SO_REUSEPORT) and one Redis.

Each worker is a whole bridge (ingress, engine consumer, delivery, timers), as a replica would be:
replicas are interchangeable (all their state is in Redis: docs/architecture.md), so N workers on
one machine need no coordination beyond Redis. The kernel spreads connections over the workers'
listening sockets. Without BRIDGE_REDIS_URL the parent runs the one embedded Redis that all workers
share, and stops it last.

The parent only supervises: SIGTERM or SIGINT is passed on to every worker, which stops gracefully
within its grace period. A worker that dies on its own takes the group down (exit status 1) so
that the service manager restarts all of it, rather than running on with part of its capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge.core.errors import ConfigError
from bridge.core.tuning import Tuning
from bridge.process.embedded import embedded_redis, free_port

log = structlog.get_logger("bridge.process.workers")
Process = multiprocessing.process.BaseProcess


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What each worker needs to start; picklable, since workers are spawned, not forked."""

    config_paths: tuple[str, ...]
    host: str
    port: int
    redis_url: str
    data_dir: Path
    grace_s: float
    tuning: Tuning | None
    log_level: str
    admin_token: str = ""
    reload_poll_s: float = 2.0
    allow_unauthenticated: bool = False
    viewer_token: str = ""


def _worker_main(spec: WorkerSpec) -> None:
    """Entry point of one worker process: a whole bridge with SO_REUSEPORT on the shared port."""
    from bridge.core import logs
    from bridge.process.server import serve

    logs.configure(level=spec.log_level)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    code = asyncio.run(
        serve(
            spec.config_paths,
            host=spec.host,
            port=spec.port,
            redis_url=spec.redis_url,
            data_dir=spec.data_dir,
            grace_s=spec.grace_s,
            reuse_port=True,
            tuning=spec.tuning,
            admin_token=spec.admin_token,
            reload_poll_s=spec.reload_poll_s,
            announce=False,  # the parent gave the start-up warnings, once
            allow_unauthenticated=spec.allow_unauthenticated,
            viewer_token=spec.viewer_token,
        )
    )
    if code:  # a stage stopped on its own: the parent sees this worker die, and stops the rest
        sys.exit(code)


def serve_workers(
    config_paths: Sequence[str],
    *,
    workers: int,
    host: str,
    port: int,
    redis_url: str | None,
    data_dir: Path,
    grace_s: float = 10.0,
    tuning: Tuning | None = None,
    log_level: str = "info",
    admin_token: str = "",
    reload_poll_s: float = 2.0,
    allow_unauthenticated: bool = False,
    viewer_token: str = "",
) -> int:
    """Run `workers` bridge processes until SIGTERM/SIGINT; returns the exit status for the CLI."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    from bridge.core import config as config_mod
    from bridge.process.server import refuse_open_sources, warn_unauthenticated

    config = config_mod.load(config_paths)  # fail or warn here, once, rather than in every worker
    refuse_open_sources(config, host, allow_unauthenticated=allow_unauthenticated)
    warn_unauthenticated(config)
    port = port or free_port()  # port 0 would give each worker a port of its own
    with contextlib.ExitStack() as stack:
        redis_url = redis_url or embedded_redis(stack, data_dir, durability=(tuning or Tuning()).durability)
        spec = WorkerSpec(
            tuple(config_paths), host, port, redis_url, data_dir, grace_s, tuning, log_level, admin_token,
            reload_poll_s, allow_unauthenticated, viewer_token,
        )  # fmt: skip
        return _supervise(spec, workers)


def _supervise(spec: WorkerSpec, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    procs: list[Process] = []

    def forward_hup(signum: int, frame: object) -> None:
        for proc in procs:  # each worker reloads its mapping
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward_hup)
    try:
        for index in range(workers):
            proc = ctx.Process(target=_worker_main, args=(spec,), name=f"bridge-worker-{index}")
            proc.start()
            procs.append(proc)
        log.info("workers_started", workers=workers, port=spec.port, pids=[p.pid for p in procs])
        while not stopping:
            died = [p for p in procs if not p.is_alive()]
            if died:
                log.error("worker_died", pids=[p.pid for p in died], codes=[p.exitcode for p in died])
                break
            time.sleep(0.2)
    finally:
        _stop_all(procs, spec.grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else 1


def _stop_all(procs: list[Process], grace_s: float) -> None:
    """SIGTERM to every live worker, wait out its grace period (plus slack), then SIGKILL."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s + 5.0
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("worker_killed", pid=proc.pid)
            proc.kill()
            proc.join()
    log.info("workers_stopped", codes=[p.exitcode for p in procs])
