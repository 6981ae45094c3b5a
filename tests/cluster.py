"""A real Redis Cluster for tests: three masters and three replicas on loopback ports, each a
`redis-server --cluster-enabled yes --appendonly yes` in its own folder, joined by
`redis-cli --cluster create ... --cluster-replicas 1`. Tests may fail a master over to its replica
(`CLUSTER FAILOVER`) or SIGKILL it (its replica is promoted after `cluster-node-timeout`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.process.embedded import find_redis_server, free_port

NODE_TIMEOUT_MS = 1000  # how long a master may be unreachable before its replica is promoted


def cluster_tools() -> tuple[str, str]:
    """redis-server and redis-cli; skip without them (or without cluster support), except under CI=1."""

    def missing(why: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"no Redis Cluster: {why} (.ci/run installs redis-server)")
        pytest.skip(f"no Redis Cluster: {why}")

    cli = shutil.which("redis-cli")
    if cli is None:
        missing("redis-cli is not installed")
    server = find_redis_server()
    probe = subprocess.run([server, "--version"], capture_output=True, text=True, check=False)
    version = probe.stdout.partition(" v=")[2].split(".")[0]
    if not version.isdigit() or int(version) < 5:  # `redis-cli --cluster create` came with Redis 5
        missing(f"{server} is not Redis >= 5 ({probe.stdout.strip()})")
    return server, str(cli)


class Node:
    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.binary = binary
        self.port = cluster_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> None:
        """Start it; a new node whose port another process took meanwhile (it exits: the bind failed) tries
        another port. A node restarted after a kill keeps its port (its cluster knows it by that)."""
        member = (self.folder / "nodes.conf").exists()  # of a formed cluster: only its own port will do
        for _ in range(5):
            self._spawn()
            if _until_or_exit(self, 30.0 if member else 10.0):  # a member reloads its AOF first
                return
            if member:
                break
            self.stop(kill=True)
            self.port = cluster_port()
        raise TimeoutError(f"redis-server on {self.port} did not answer")

    def _spawn(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", "redis.log",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _pings(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.exceptions.RedisError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def role(self) -> str:
        return str(self.client().role()[0])


class LocalCluster:
    """`LocalCluster(folder).start()`: six nodes, three masters with a replica each, `cluster_state:ok`."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.folder = folder
        server, self.cli = cluster_tools()
        self.nodes = [Node(folder / f"node{i}", server) for i in range(masters * 2)]
        self.masters = masters

    @property
    def url(self) -> str:
        """The bridge's URL for the cluster: every node as a seed."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [self.cli, "--cluster", "create", *(n.address for n in self.nodes), "--cluster-replicas", "1",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
            _until(lambda: len(self.replicas_in_sync()) == self.masters, "the replicas did not sync", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def healthy(self) -> bool:
        """Every node up, as many masters as it was made with, and `cluster_state:ok` everywhere: what a test
        that reuses it needs (a test that killed or failed over a node leaves it otherwise)."""
        try:
            return (
                all(n.alive for n in self.nodes)
                and len(self.master_nodes()) == self.masters
                and all(n.client().cluster("info")["cluster_state"] == "ok" for n in self.nodes)
            )
        except redis.exceptions.RedisError:
            return False

    def flush(self) -> None:
        """Empty, as a new cluster is: every key and every loaded script gone (FLUSHALL reaches the replicas)."""
        for master in self.master_nodes():
            client = master.client()
            client.flushall()
            client.script_flush()
        _until(lambda: len(self.replicas_in_sync()) == self.masters, "the replicas did not follow the flush", 30)

    def wait_ok(self, within: float = 30.0) -> None:
        """Until every live node says `cluster_state:ok` and agrees on who serves every slot."""

        def ok() -> bool:
            try:
                for node in self.nodes:
                    if node.alive and node.client().cluster("info")["cluster_state"] != "ok":
                        return False
                return True
            except redis.exceptions.RedisError:
                return False

        _until(ok, "the cluster did not reach cluster_state:ok", within)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def master_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and n.role() == "master"]

    def replica_of(self, master: Node) -> Node:
        """The live replica of `master`."""
        for node in self.nodes:
            if node.alive and node is not master:
                info: dict[str, Any] = node.client().info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                    return node
        raise LookupError(f"no live replica of {master.address}")

    def master_of(self, key: str) -> Node:
        """The master that serves `key`'s slot now."""
        any_live = next(n for n in self.nodes if n.alive)
        slot = any_live.client().cluster("keyslot", key)
        for start, end, master, *_ in any_live.client().execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
            if int(start) <= int(slot) <= int(end):
                return self.node(int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def replicas_in_sync(self) -> list[Node]:
        """The replicas whose link is up and which have all their master wrote."""
        found = []
        for master in self.master_nodes():
            try:
                replica = self.replica_of(master)
                mine: dict[str, Any] = replica.client().info("replication")
                offset = master.client().info("replication")["master_repl_offset"]
            except (LookupError, redis.exceptions.RedisError):
                continue
            if mine.get("master_link_status") == "up" and mine.get("slave_repl_offset") == offset:
                found.append(replica)
        return found

    def failover(self, master: Node) -> Node:
        """`CLUSTER FAILOVER` on `master`'s replica (a coordinated hand-over, nothing lost); returns the
        new master once the cluster is ok again."""
        replica = self.replica_of(master)
        replica.client().cluster("failover")
        _until(lambda: replica.role() == "master", f"{replica.address} was not promoted")
        self.wait_ok()
        _until(lambda: master in self.replicas_in_sync(), f"{master.address} did not follow {replica.address}")
        return replica

    def kill(self, master: Node) -> Node:
        """SIGKILL `master`; returns its replica once the cluster has promoted it and is ok again."""
        replica = self.replica_of(master)
        master.stop(kill=True)
        _until(lambda: replica.role() == "master", f"{replica.address} was not promoted", 30)
        self.wait_ok()
        return replica

    def kill_and_restart(self, master: Node) -> Node:
        """`kill`, then start the dead node again (same folder and port, as a restarted pod): it rejoins
        as the replica of the master that took its place. Returns that master once the two are in sync."""
        promoted = self.kill(master)
        master.start()
        _until(lambda: master in self.replicas_in_sync(), f"{master.address} did not rejoin as a replica", 30)
        return promoted


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, as a cluster node needs."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            port -= 20000 if port > 30000 else 0
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _until_or_exit(node: Node, within: float = 10.0) -> bool:
    """Until `node` answers (True), or its process exits or `within` passes (False)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node._pings():
            return True
        if not node.alive:
            return False
        time.sleep(0.05)
    return False


def _until(check: Any, failure: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.05)


def queued_commands(pipe: Any) -> list[tuple[Any, ...]]:
    """The commands queued on a pipeline, each its arguments, on one Redis (redis-py's `command_stack`)
    or on a cluster (its execution strategy's queue)."""
    if hasattr(pipe, "command_stack"):
        return [args for args, _ in pipe.command_stack]
    return [command.args for command in pipe._execution_strategy._command_queue]
