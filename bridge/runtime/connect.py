"""Connecting to Redis from a URL: standalone (`redis://`, `rediss://`, `unix://`) or through
Sentinel (`redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]`), so that
a failover moves the bridge to the new master without a restart. `rediss+sentinel://` is TLS to the
sentinels and to the servers they name, with `?ssl_ca_certs=...` and the like for both.

Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port...]` (any nodes of the cluster, as
seeds: the client learns the rest and follows slot moves and failovers), `rediss+cluster://` for TLS
with the same query parameters. A cluster has only database 0."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from bridge.core.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# Query parameters of a `rediss+sentinel://` URL passed to every TLS connection (as redis-py's own URLs take them).
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


class _PackedByHiredis:
    """Commands packed in C by hiredis, as redis-py's synchronous client does (its asyncio client
    packs them in Python, a large share of the engine's CPU). Same bytes."""

    _serializer = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]

    def pack_command(self, *args: Any) -> list[bytes]:
        # A one-word command name (EVALSHA, XADD, ...) goes to hiredis as it is: redis-py's serializer
        # first copies every argument into a new tuple.
        if isinstance(args[0], str) and " " not in args[0]:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # a bytearray or memoryview: the serializer converts it
                pass
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def packed_by_hiredis(client: aioredis.Redis) -> aioredis.Redis:
    """Let `client`'s connections (plain, TLS, Unix socket or Sentinel-managed) pack with hiredis."""
    pool = client.connection_pool
    base = pool.connection_class
    if HIREDIS_AVAILABLE and not issubclass(base, _PackedByHiredis):
        pool.connection_class = type(base.__name__, (_PackedByHiredis, base), {})
    return client


def without_password(url: str) -> str:
    """`url` as it may be shown (logs, /readyz): its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}***@{parts.netloc.rpartition('@')[2]}").geturl()


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`; `options` (timeouts) apply to the data connections."""
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        return _cluster(url, **options)
    if parts.scheme not in SENTINEL_SCHEMES:
        return packed_by_hiredis(aioredis.Redis.from_url(url, **options))
    _, _, hosts = parts.netloc.rpartition("@")
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise ConfigError(f"bad Sentinel URL {url!r}: use redis+sentinel://host:26379[,host:26379]/<master>[/<db>]")
    try:
        sentinels = [(host, int(port)) for host, _, port in (h.rpartition(":") for h in hosts.split(","))]
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError as exc:
        raise ConfigError(f"bad Sentinel URL {url!r}: {exc}") from exc
    # The same credentials and transport for the sentinels as for the master and replicas they name:
    # `rediss+sentinel://` is TLS to both, and an ACL user name is sent to both.
    auth, tls = _auth_and_tls(url)
    connection: dict[str, Any] = {**auth, **tls, **options}
    sentinel = Sentinel(sentinels, sentinel_kwargs={**auth, **tls}, **connection)  # type: ignore[no-untyped-call,unused-ignore]
    client: aioredis.Redis = sentinel.master_for(path[0], db=db)
    return packed_by_hiredis(client)


def is_cluster(redis: Any) -> bool:
    """Whether `redis` (a client or a pipeline) talks to a Redis Cluster."""
    return isinstance(redis, RedisCluster) or hasattr(redis, "cluster_client")


def _auth_and_tls(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ACL user name and password of a Sentinel or Cluster URL, and its TLS options (`rediss+...`)."""
    parts = urlsplit(url)
    auth: dict[str, Any] = {}
    if parts.username:
        auth["username"] = unquote(parts.username)
    if parts.password:
        auth["password"] = unquote(parts.password)
    tls: dict[str, Any] = {}
    if parts.scheme.startswith("rediss+"):
        tls["ssl"] = True
        for name, value in parse_qsl(parts.query):
            if name in TLS_OPTIONS:
                tls[name] = value
    return auth, tls


def _cluster(url: str, **options: Any) -> aioredis.Redis:
    parts = urlsplit(url)
    _, _, hosts = parts.netloc.rpartition("@")
    if not hosts or parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"bad Cluster URL {url!r}: use redis+cluster://host:6379[,host:6379...] (database 0 only)")
    try:
        seeds = [ClusterNode(host, int(port)) for host, _, port in (h.rpartition(":") for h in hosts.split(","))]
    except ValueError as exc:
        raise ConfigError(f"bad Cluster URL {url!r}: {exc}") from exc
    auth, tls = _auth_and_tls(url)
    client = RedisCluster(startup_nodes=seeds, **auth, **tls, **options)
    # The bridge's code is typed against the standalone client; the cluster client answers the same
    # commands (each routed by its key's slot) and the same pipeline calls (split per node).
    return client  # type: ignore[return-value]
