"""The `bridge` command: serve, check-config, simulate, demo, incidents, silences, dlq."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bridge import config as config_mod
from bridge import logs
from bridge.errors import BridgeError, ConfigError

DEFAULT_CONFIG = "mappings/example.yaml"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("BRIDGE_DATA_DIR") or ".bridge-data")


def _redis_url(args: argparse.Namespace) -> str:
    """BRIDGE_REDIS_URL, else the embedded Redis that `bridge serve` wrote down in the data dir."""
    url = getattr(args, "redis_url", None) or config_mod.redis_url()
    if url:
        return url
    marker = _data_dir(args) / "redis" / "url"
    if marker.exists():
        return marker.read_text().strip()
    raise ConfigError(
        "no Redis to talk to: set BRIDGE_REDIS_URL (or --redis-url), or run `bridge serve` first"
    )


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.server import serve

    if args.workers != 1:
        from bridge.workers import serve_workers

        return serve_workers(
            args.config or [DEFAULT_CONFIG],
            workers=args.workers,
            host=args.host,
            port=args.port,
            redis_url=config_mod.redis_url(),
            data_dir=_data_dir(args),
            grace_s=args.grace,
            tuning=config_mod.tuning(),
            log_level=args.log_level or "info",
        )
    _use_uvloop()
    asyncio.run(
        serve(
            args.config or [DEFAULT_CONFIG],
            host=args.host,
            port=args.port,
            redis_url=config_mod.redis_url(),
            data_dir=_data_dir(args),
            grace_s=args.grace,
            tuning=config_mod.tuning(),
        )
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_mod.load(args.files)
    print(
        f"ok: {len(config.sources)} source(s), {len(config.desks)} desk(s), {len(config.routes)} route(s)"
        f" in {', '.join(args.files)}"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from adapters.simulators import servicenow

    servicenow.run(args.host, args.port, args.user, args.password)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return asyncio.run(run_demo(args.config or DEFAULT_CONFIG))


def _with_redis(action: Callable[[Any], Awaitable[Any]]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        import redis.asyncio as aioredis

        async def main() -> Any:
            client = aioredis.Redis.from_url(_redis_url(args))
            try:
                return await action((client, args))
            finally:
                await client.aclose()

        result = asyncio.run(main())
        if isinstance(result, bool):
            return 0 if result else 1
        _print(result)
        return 0

    return command


async def _incidents(ctx: Any) -> Any:
    from bridge.incidents import list_incidents, show_incident

    client, args = ctx
    if args.action == "show":
        found = await show_incident(client, args.id)
        if found is None:
            raise BridgeError(f"no incident {args.id}")
        return found
    return await list_incidents(client, state=args.state, limit=args.limit)


async def _dlq(ctx: Any) -> Any:
    from bridge import dlq

    client, args = ctx
    if args.action == "retry":
        return await dlq.retry(client, args.id, int(time.time() * 1000))
    if args.action == "drop":
        return await dlq.drop(client, args.id)
    return await dlq.list_letters(client, limit=args.limit)


async def _silences(ctx: Any) -> Any:
    from bridge.config import parse_duration
    from bridge.silences import Silence, Silences

    client, args = ctx
    store = Silences(client)
    now = int(time.time() * 1000)
    if args.action == "add":
        start = now + int(parse_duration(args.starts_in) * 1000)
        silence = Silence(
            matchers=args.matchers,
            starts_at=start,
            ends_at=start + int(parse_duration(args.duration) * 1000),
            comment=args.comment,
            created_by=args.author,
        )
        return (await store.add(silence)).model_dump()
    if args.action == "expire":
        return await store.expire(args.id, now)
    return [s.model_dump() for s in await store.list()]


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    parser.add_argument(
        "--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL"), help="default info (demo: warning)"
    )
    parser.add_argument("--data-dir", help="embedded Redis data (default $BRIDGE_DATA_DIR or .bridge-data)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the bridge (ingress, engine, delivery, timers)")
    p.add_argument("--config", action="append", help=f"mapping file, repeatable (default {DEFAULT_CONFIG})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--grace", type=float, default=10.0, help="seconds to finish in-flight work on SIGTERM")
    p.add_argument(
        "--workers", type=int, default=1, help="bridge processes sharing the port (SO_REUSEPORT) and Redis"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate mapping files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("simulate", help="run a service-desk simulator")
    p.add_argument("desk", choices=["servicenow"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "demo", help="embedded Redis + ServiceNow simulator + bridge, replaying recorded alerts"
    )
    p.add_argument("--config", help=f"mapping file (default {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("incidents", help="list incidents, or show one with its audit trail")
    p.add_argument("action", choices=["list", "show"], nargs="?", default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--state", choices=["open", "resolving", "resolved"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_incidents))

    p = sub.add_parser("dlq", help="dead letters: list, retry, drop")
    p.add_argument("action", choices=["list", "retry", "drop"], nargs="?", default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_dlq))

    p = sub.add_parser("silences", help="silences and maintenance windows: list, add, expire")
    p.add_argument("action", choices=["list", "add", "expire"], nargs="?", default="list")
    p.add_argument("id", nargs="?", help="silence id (expire)")
    p.add_argument(
        "--matcher", dest="matchers", action="append", default=[], help='e.g. team="db" (repeatable)'
    )
    p.add_argument("--starts-in", default="0s")
    p.add_argument("--duration", default="2h")
    p.add_argument("--comment", default="")
    p.add_argument("--author", default=os.environ.get("USER", ""))
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_silences))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(level=args.log_level or ("warning" if args.command == "demo" else "info"))
    needs_id = getattr(args, "action", None) in ("show", "retry", "drop", "expire")
    if needs_id and not args.id:
        print(f"bridge {args.command} {args.action}: an id is required", file=sys.stderr)
        return 2
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
