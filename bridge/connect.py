"""Connecting to Redis from a URL: standalone (`redis://`, `rediss://`, `unix://`) or through
Sentinel (`redis+sentinel://[:password@]host:port[,host:port...]/<master name>[/<db>]`), so that
a failover moves the bridge to the new master without a restart."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from bridge.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`; `options` (timeouts) apply to the data connections."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        return aioredis.Redis.from_url(url, **options)
    _, _, hosts = parts.netloc.rpartition("@")
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise ConfigError(f"bad Sentinel URL {url!r}: use redis+sentinel://host:26379[,host:26379]/<master>[/<db>]")
    try:
        sentinels = [(host, int(port)) for host, _, port in (h.rpartition(":") for h in hosts.split(","))]
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError as exc:
        raise ConfigError(f"bad Sentinel URL {url!r}: {exc}") from exc
    password = unquote(parts.password) if parts.password else None
    auth = {"password": password} if password else {}
    tls = parts.scheme == "rediss+sentinel"
    sentinel = Sentinel(sentinels, sentinel_kwargs=dict(auth), ssl=tls, **auth, **options)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(path[0], db=db)
    return client
