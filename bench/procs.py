"""The processes a benchmark runs: Redis, the bridge, the baselines, the desk simulator; and their RSS.

Every process is started here, on a free loopback port, and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from bridge.process.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]


def redis_binary() -> str:
    """Debian's Redis 7 when installed (the version production runs), else whatever the bridge finds."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if Path(candidate).exists():
            return candidate
    from bridge.process.embedded import find_redis_server

    return find_redis_server()


@contextlib.contextmanager
def redis_server(data_dir: Path, *, appendonly: bool = True, appendfsync: str = "everysec") -> Iterator[EmbeddedRedis]:
    """A private redis-server with AOF (fsync every second, the default), as production runs it."""
    server = EmbeddedRedis(data_dir, appendonly=appendonly, appendfsync=appendfsync)
    server.binary = redis_binary()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Proc:
    """A child process (or a group of them sharing one port) with its log in the work directory."""

    def __init__(self, name: str, procs: list[subprocess.Popen[bytes]], port: int, log: Path) -> None:
        self.name, self.procs, self.port, self.log = name, procs, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The processes that serve: each started one, or the workers of a `--workers` parent."""
        out: list[int] = []
        for proc in self.procs:
            kids = [k for k in children(proc.pid) if b"spawn_main" in _cmdline(k)]
            out.extend(kids or [proc.pid])
        return out

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the serving processes."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def peak_rss_bytes(self) -> int:
        return sum(rss_bytes(pid, "VmHWM") for pid in self.pids())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    work: Path,
    ready_path: str = "/healthz",
    copies: int = 1,
    listeners: int = 1,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Proc:
    """Start `copies` of `argv` (each binds `port` itself) and wait until GET `ready_path` answers 200.

    With SO_REUSEPORT, also wait until `listeners` sockets listen on the port: wrk keeps the
    connections it opens first, and a worker that binds after them would get none.
    """
    log = work / f"{name}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as sink:
        for _ in range(copies):
            procs.append(subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT))
    proc = Proc(name, procs, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if any(p.poll() is not None for p in procs):
            proc.stop()
            raise RuntimeError(f"{name} exited at start-up; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(proc.url + ready_path, timeout=1) as resp:
                if resp.status == 200 and listening(port) >= max(listeners, copies):
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not become ready in {timeout}s; see {log}")
        time.sleep(0.1)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def bridge(config: Path, redis_url: str, *, work: Path, workers: int, tuning: Mapping[str, str] | None = None) -> Proc:
    """`bridge serve --workers N`, as an operator runs it, against the bench's Redis."""
    port = free_port()
    env = {"BRIDGE_REDIS_URL": redis_url, **{f"BRIDGE_{k.upper()}": v for k, v in (tuning or {}).items()}}
    argv = python("-m", "bridge.cli", "serve", "--config", str(config))  # default log level, as deployed
    argv += ["--port", str(port), "--workers", str(workers)]
    return start("bridge", argv, port=port, work=work, env=env, listeners=workers)


def ingress_only(config: Path, redis_url: str, *, work: Path, workers: int, program: Sequence[str] = ()) -> Proc:
    """The bridge's request path alone (`bench.ingress_only`, or `program` for an experiment)."""
    port = free_port()
    argv = [*(program or python("-m", "bench.ingress_only")), "--config", str(config), "--port", str(port)]
    return start("ingress-only", argv, port=port, work=work, copies=workers, env={"BRIDGE_REDIS_URL": redis_url})


def trivial(*, work: Path, workers: int) -> Proc:
    port = free_port()
    argv = python("-m", "bench.trivial", "--port", str(port))
    return start("trivial", argv, port=port, work=work, copies=workers)


def desk(*, work: Path, latency_ms: int) -> Proc:
    port = free_port()
    argv = python("-m", "bench.desk", "--port", str(port), "--latency-ms", str(latency_ms))
    return start("desk", argv, port=port, work=work, ready_path="/_bench/times")


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def alertmanager(*, work: Path) -> Proc:
    """Prometheus Alertmanager with a receiver that sends nowhere: its API's first step, alone."""
    binary = alertmanager_binary()
    if binary is None:
        raise RuntimeError("prometheus-alertmanager is not installed")
    port = free_port()
    config = work / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: blackhole\n  group_by: [alertname, instance]\nreceivers:\n  - name: blackhole\n"
    )
    argv = [
        binary, f"--config.file={config}", f"--storage.path={work / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn",
    ]  # fmt: skip
    return start("alertmanager", argv, port=port, work=work, ready_path="/-/ready")


def listening(port: int) -> int:
    """How many sockets listen on this TCP port (IPv4), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            count += 1
    return count


def children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of one process from /proc (kB there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
