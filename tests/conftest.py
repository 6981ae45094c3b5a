"""Fixtures: real redis-server processes on free ports, the ServiceNow simulator, an in-process bridge."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from adapters.simulators.faults import FAULTS, Faults
from adapters.simulators.servicenow import STORE, make_app
from adapters.simulators.servicenow_store import ServiceNowStore
from bridge.core.config import MappingConfig
from bridge.core.tuning import Tuning
from bridge.process.embedded import EmbeddedRedis
from bridge.process.server import Bridge
from bridge.runtime.connect import connect

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sources"  # recorded payloads; provenance in their README.md
SPECS = ROOT / "tests" / "fixtures" / "specs"  # vendor schemas; provenance in their README.md

FAST = Tuning(
    block_ms=50,
    claim_idle_ms=400,
    claim_every_s=0.2,
    timer_tick_s=0.05,
    timer_lease_ms=2000,
    lease_ms=3000,
    delivery_poll_s=0.02,
    attempts=4,
    backoff_max_s=0.5,
    desk_timeout_s=2.0,
    gauges_every_s=0.1,
)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    return dict(orjson.loads(fixture_bytes(name)))


def require(binary: str) -> str:
    """The binary's path; skip without it, except under CI=1 where a missing tool is a failure."""
    found = shutil.which(binary)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{binary} is not installed (.ci/run installs it)")
    pytest.skip(f"{binary} is not installed")


ON_CLUSTER = os.environ.get("BRIDGE_TEST_REDIS") == "cluster"
# With BRIDGE_TEST_REDIS=cluster: the tests of a path that only one Redis takes (skipped by name, with why).
NOT_ON_CLUSTER = {
    "tests/engine/policy/test_root_cause.py": (
        "calls adopt.lua on one pipeline; on a cluster an adoption is adopt_child.lua, then adopt_parent.lua",
        ("test_an_alert_placed_just_before_its_incidents_adoption_runs_on_the_parent",),
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not ON_CLUSTER:
        return
    for item in items:
        path, _, name = item.nodeid.partition("::")
        why, names = NOT_ON_CLUSTER.get(path, ("", ()))
        if name in names or "*" in names:
            item.add_marker(pytest.mark.skip(reason=f"not on Redis Cluster yet: {why}"))


@pytest.fixture(scope="session")
def _clusters() -> Iterator[list[Any]]:
    """With BRIDGE_TEST_REDIS=cluster: the session's cluster, made once (six nodes take seconds to form) and
    emptied between tests; made again when a test left it unhealthy."""
    made: list[Any] = []
    yield made
    for cluster in made:
        cluster.stop()


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    """A private redis-server with AOF; tests may stop(kill=True) and start() it again. With
    BRIDGE_TEST_REDIS=cluster, a Redis Cluster of three masters and three replicas instead
    (tests/cluster.py), so that the same tests run on both; its `url` is a `redis+cluster://` one. The cluster is
    the session's, emptied before each test (FLUSHALL, SCRIPT FLUSH), as a new one would be."""
    if ON_CLUSTER:
        from tests.cluster import LocalCluster

        made: list[LocalCluster] = request.getfixturevalue("_clusters")
        if made and made[0].healthy():
            made[0].flush()
        else:
            for old in made:
                old.stop()
            made[:] = [LocalCluster(tmp_path / "cluster").start()]
        yield made[0]  # type: ignore[misc]
        return
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


class Snow:
    """A running ServiceNow simulator and handles on what it holds."""

    def __init__(self, url: str, app: web.Application) -> None:
        self.url = url
        self.app = app

    @property
    def store(self) -> ServiceNowStore:
        return self.app[STORE]

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    def incidents(self) -> list[dict[str, str]]:
        return [row["record"] for row in self.store.snapshot()]

    def notes(self, record: dict[str, str]) -> list[str]:
        return self.store.notes(record["sys_id"])


async def start_app(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def snow() -> AsyncIterator[Snow]:
    app = make_app(user="bridge", password="s3cret")
    runner, url = await start_app(app)
    yield Snow(url, app)
    await runner.cleanup()


def mapping(
    snow_url: str,
    *,
    resolve_after: str = "300ms",
    reopen_within: str = "3s",
    secret: str | None = None,
    correlate: list[str] | None = None,
    extra_routes: list[dict[str, Any]] | None = None,
) -> MappingConfig:
    """The example mapping's shape with test-sized timers, pointed at the simulator."""
    source: dict[str, Any] = {"kind": "alertmanager"}
    if secret:
        source["secret"] = secret
    return MappingConfig.model_validate(
        {
            "sources": {"alertmanager": source},
            "desks": {
                "snow": {
                    "kind": "servicenow",
                    "url": snow_url,
                    "user": "bridge",
                    "password": "s3cret",
                    "timeout": 1.0,
                }
            },
            "routes": [
                *(extra_routes or []),
                {
                    "name": "prometheus",
                    "desk": "snow",
                    "correlate": {
                        "by": correlate
                        if correlate is not None
                        else ["{{ labels.alertname }}", "{{ labels.instance | default('') }}"]
                    },
                    "lifecycle": {"resolve_after": resolve_after, "reopen_within": reopen_within},
                    "ticket": {
                        "fields": {
                            "short_description": "[{{ severity | upper }}] {{ name }} on {{ resource }}",
                            "description": "{{ summary }}",
                            "impact": "{{ {'critical': '1', 'major': '2'}.get(severity, '3') }}",
                            "urgency": "{{ {'critical': '1'}.get(severity, '2') }}",
                        }
                    },
                },
            ],
        }
    )


@pytest.fixture
async def make_bridge(redis_server: EmbeddedRedis) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process bridges (replicas) on one Redis; all are stopped at the end."""
    started: list[Bridge] = []

    async def factory(config: MappingConfig, **kw: Any) -> Bridge:
        bridge = Bridge(config, redis_server.url, port=0, tuning=kw.pop("tuning", FAST), **kw)
        started.append(await bridge.start())
        return bridge

    yield factory
    for bridge in started:
        await bridge.stop()


async def post(bridge_url: str, body: bytes | dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.post(bridge_url, data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def eventually(check: Callable[[], Any], within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {last!r}")
        await asyncio.sleep(interval)
