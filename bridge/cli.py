"""The `bridge` command: serve, init, check-config, test-mapping, simulate, demo, incidents, silences, dlq,
heartbeats, schema, replay.

The commands that take a mapping use the example packaged with the bridge when given none; `bridge
init` writes a copy of it to edit. The options before the command (--log-level, --data-dir) may
also come after it."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from bridge.core import config as config_mod
from bridge.core import logs
from bridge.core.errors import BridgeError, ConfigError

DEFAULT_CONFIG = "the example packaged with the bridge; `bridge init` writes a copy to edit"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("BRIDGE_DATA_DIR") or ".bridge-data")


def _mapping_files(given: Sequence[str] | None, option: str = "--config PATH") -> list[str]:
    """The mapping files a command was given, else the packaged example; a missing one is an error that
    says what to do."""
    if not given:
        from bridge.tools.starter import example_mapping

        return [str(example_mapping())]
    missing = [name for name in given if not Path(name).exists()]
    if missing:
        raise ConfigError(
            f"{missing[0]}: no such file (looked in {Path.cwd()}). Give the path of your mapping ({option}),"
            " or write a starter mapping to edit with `bridge init` (it writes mapping.yaml here); given none,"
            " the example packaged with the bridge is used"
        )
    return list(given)


def _redis_url(args: argparse.Namespace) -> str:
    """--redis-url or BRIDGE_REDIS_URL, else the embedded Redis of a running `bridge serve` with the same
    data directory (it writes its URL there); an error saying how to start one when none answers."""
    url = getattr(args, "redis_url", None) or config_mod.redis_url()
    if url:
        return url
    from bridge.process.embedded import running_url

    return running_url(_data_dir(args) / "redis")


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.process.server import serve

    files = _mapping_files(args.config)
    log = structlog.get_logger("bridge.cli")
    if args.config:
        log.info("mapping_files", files=[str(Path(f).resolve()) for f in files])
    else:
        log.info(
            "mapping_files", files=files, packaged_example=True,
            hint="`bridge init` writes a copy to edit; then serve it with --config mapping.yaml",
        )  # fmt: skip
    if args.workers != 1:
        from bridge.process.workers import serve_workers

        return serve_workers(
            files,
            workers=args.workers,
            host=args.host,
            port=args.port,
            redis_url=config_mod.redis_url(),
            data_dir=_data_dir(args),
            grace_s=args.grace,
            tuning=config_mod.tuning(),
            log_level=args.log_level or "info",
            admin_token=os.environ.get("BRIDGE_ADMIN_TOKEN", ""),
            viewer_token=os.environ.get("BRIDGE_VIEWER_TOKEN", ""),
            reload_poll_s=args.reload_interval,
            allow_unauthenticated=args.allow_unauthenticated,
        )
    _use_uvloop()
    return asyncio.run(
        serve(
            files,
            host=args.host,
            port=args.port,
            redis_url=config_mod.redis_url(),
            data_dir=_data_dir(args),
            grace_s=args.grace,
            tuning=config_mod.tuning(),
            admin_token=os.environ.get("BRIDGE_ADMIN_TOKEN", ""),
            viewer_token=os.environ.get("BRIDGE_VIEWER_TOKEN", ""),
            reload_poll_s=args.reload_interval,
            allow_unauthenticated=args.allow_unauthenticated,
        )
    )


def cmd_test_mapping(args: argparse.Namespace) -> int:
    from bridge.tools.explain import explain

    config = config_mod.load(_mapping_files(args.config))
    _print(explain(config, args.source, Path(args.payload), args.content_type))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    files = _mapping_files(args.files, "bridge check-config PATH")
    config = config_mod.load(files)
    print(
        f"ok: {len(config.sources)} source(s), {len(config.desks)} desk(s), {len(config.routes)} route(s)"
        f" in {', '.join(files)}" + ("" if args.files else " (the packaged example)")
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from bridge.tools.starter import write_starter

    mapping, schema = write_starter(Path(args.directory), force=args.force)
    print(f"wrote {mapping} (the example mapping, commented: edit it) and {schema} (its JSON Schema, for editors)")
    print(f"next: bridge check-config {mapping}")
    print(f"      bridge serve --config {mapping}")
    return 0


SIMULATORS = ("servicenow", "jira", "jira-datacenter", "remedy", "webhook", "jsm-ops", "icinga2", "zabbix")


def cmd_simulate(args: argparse.Namespace) -> int:
    from adapters.simulators import icinga2, jira, jsm_ops, remedy, servicenow, webhook, zabbix

    runners: dict[str, Callable[[str, int, str, str], None]] = {
        "servicenow": servicenow.run,  # also serves OAuth and Event Management
        "jira": jira.run,  # Jira Cloud with JSM; the password is the API token
        "jira-datacenter": lambda host, port, user, password: jira.run(host, port, user, password, "datacenter"),
        "remedy": remedy.run,
        "webhook": webhook.run,  # the password is the Bearer token
        "jsm-ops": jsm_ops.run,  # the password is the API key and the API token; the user the email
        "icinga2": icinga2.run,  # upstream (loop back): the actions API, Basic auth
        "zabbix": zabbix.run,  # upstream (loop back): event.acknowledge; the password is the API token
    }
    runners[args.desk](args.host, args.port, args.user, args.password)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.tools.demo import run_demo

    return asyncio.run(run_demo(_mapping_files([args.config] if args.config else None)[0]))


def _with_redis(action: Callable[[Any], Awaitable[Any]]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from bridge.runtime.connect import connect

        async def main() -> Any:
            client = connect(_redis_url(args))
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
    from bridge.admin.incidents import list_incidents, resolve_incident, show_incident
    from bridge.core.tuning import Tuning
    from bridge.runtime import shards
    from bridge.runtime.scripts import Scripts

    client, args = ctx
    if args.action == "show":
        found = await show_incident(client, args.id)
        if found is None:
            raise BridgeError(f"no incident {args.id}")
        return found
    if args.action == "resolve":
        # Without the mapping at hand the keys are kept for the default retention (7 days), which
        # covers any reopen window shorter than that.
        done = await resolve_incident(
            client, Scripts(client), args.id, now_ms=int(time.time() * 1000),
            retention_ms=Tuning().retention_ms, note=args.note, who=args.by, shards=await shards.recorded(client),
        )  # fmt: skip
        if not done.ok:
            raise BridgeError(f"{args.id} was not resolved: {done.outcome.replace('_', ' ')}")
        return {"incident": done.incident, "outcome": done.outcome, "outbox": done.outbox_len}
    return await list_incidents(client, state=args.state, route=args.route, limit=args.limit)


async def _dlq(ctx: Any) -> Any:
    from bridge.delivery import dlq
    from bridge.runtime import shards

    client, args = ctx
    if args.action == "retry":
        outcome = await dlq.retry(client, args.id, int(time.time() * 1000), await shards.recorded(client))
        if outcome is not dlq.Retried.RETRIED:
            raise BridgeError(f"{args.id} was not retried: {outcome.value.replace('_', ' ')}")
        return {"id": args.id, "outcome": outcome.value}
    if args.action == "drop":
        if not await dlq.drop(client, args.id):
            raise BridgeError(f"no dead letter {args.id}")
        return {"id": args.id, "dropped": True}
    return await dlq.list_letters(client, limit=args.limit, kind=args.kind)


async def _silences(ctx: Any) -> Any:
    from bridge.core.config import parse_duration
    from bridge.engine.silences import Silences, new_silence

    client, args = ctx
    store = Silences(client)
    now = int(time.time() * 1000)
    if args.action == "add":
        silence = new_silence(
            args.matchers, now_ms=now, starts_at=now + int(parse_duration(args.starts_in) * 1000),
            duration_s=parse_duration(args.duration), comment=args.comment, created_by=args.author,
        )  # fmt: skip
        return (await store.add(silence)).view(now)
    if args.action == "expire":
        if not await store.expire(args.id, now):
            raise BridgeError(f"no silence {args.id}")
        return {"id": args.id, "expired": True}
    return [s.view(now) for s in await store.list()]


async def _heartbeats(ctx: Any) -> Any:
    from bridge.runtime import shards
    from bridge.runtime.heartbeats import forget, list_beats

    client, args = ctx
    if args.action == "forget":
        if not await forget(client, args.id, await shards.recorded(client)):
            raise BridgeError(f"no heartbeat {args.id} (its id as `bridge heartbeats list` shows it)")
        return {"id": args.id, "forgotten": True}
    return await list_beats(client, int(time.time() * 1000))


def cmd_schema(args: argparse.Namespace) -> int:
    from bridge.tools.schema import schema_text

    text = schema_text()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge.tools.replay import replay_file

    report = asyncio.run(
        replay_file(
            args.file, _mapping_files(args.config), redis_url=args.redis_url, settle_s=args.settle,
            data_dir=_data_dir(args) / "replay",
        )
    )  # fmt: skip
    _print(report)
    return 0


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name. Only the main parser has defaults: a
    subcommand's parser sets them only when given after the command, so they do not undo the ones before."""

    def default(value: str | None) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--log-level", default=default(os.environ.get("BRIDGE_LOG_LEVEL")), help="default info (demo: warning)"
    )
    parser.add_argument(
        "--data-dir", default=default(None), help="embedded Redis data (default $BRIDGE_DATA_DIR or .bridge-data)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(sub.add_parser, parents=[common])

    p = add_parser("serve", help="run the bridge (ingress, engine, delivery, timers)")
    p.add_argument("--config", action="append", help=f"mapping file, repeatable (default: {DEFAULT_CONFIG})")
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)",
    )  # fmt: skip
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--allow-unauthenticated", action="store_true",
        help="start on a --host other machines can reach even though some sources have no secret"
        " (by default that is refused: anyone who can reach the port could open tickets)",
    )  # fmt: skip
    p.add_argument(
        "--grace",
        type=float,
        default=float(os.environ.get("BRIDGE_SHUTDOWN_GRACE_S", "10")),
        help="seconds to finish in-flight work on SIGTERM (default $BRIDGE_SHUTDOWN_GRACE_S or 10)",
    )
    p.add_argument(
        "--reload-interval", type=float, default=2.0, help="seconds between checks of the mapping files for changes"
    )
    p.add_argument("--workers", type=int, default=1, help="bridge processes sharing the port (SO_REUSEPORT) and Redis")
    p.set_defaults(func=cmd_serve)

    p = add_parser("init", help="write a starter mapping (mapping.yaml, commented) and its JSON Schema to edit")
    p.add_argument("directory", nargs="?", default=".", help="where to write them (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite mapping.yaml and schema.json if they exist")
    p.set_defaults(func=cmd_init)

    p = add_parser("check-config", help="validate mapping files")
    p.add_argument("files", nargs="*", help=f"mapping files (default: {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_check_config)

    p = add_parser("test-mapping", help="show the route, incident key and ticket a payload would produce")
    p.add_argument("payload", help="a recorded webhook body")
    p.add_argument("--source", required=True, help="the configured source name it arrives on")
    p.add_argument("--config", action="append", help=f"mapping file, repeatable (default: {DEFAULT_CONFIG})")
    p.add_argument("--content-type", default="application/json")
    p.set_defaults(func=cmd_test_mapping)

    p = add_parser("simulate", help="run a service-desk (or Icinga 2 / Zabbix API) simulator")
    p.add_argument("desk", choices=SIMULATORS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin")
    p.set_defaults(func=cmd_simulate)

    p = add_parser("demo", help="embedded Redis + ServiceNow simulator + bridge, replaying recorded alerts")
    p.add_argument("--config", help=f"mapping file (default: {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_demo)

    p = add_parser("incidents", help="list incidents, show one with its audit trail, resolve one by hand")
    p.add_argument("action", choices=["list", "show", "resolve"], nargs="?", default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--state", choices=["pending", "open", "resolving", "resolved"])
    p.add_argument("--route", help="list: only incidents of this route")
    p.add_argument("--note", default="", help="resolve: why (written as a work note)")
    p.add_argument("--by", default=os.environ.get("USER", "cli"), help="resolve: who")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_incidents))

    p = add_parser("dlq", help="dead letters: list, retry, drop")
    p.add_argument("action", choices=["list", "retry", "drop"], nargs="?", default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--kind", help="list: only letters of this kind (bad_alert, unrouted, desk_rejected, ...)")
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_dlq))

    p = add_parser("silences", help="silences and maintenance windows: list, add, expire")
    p.add_argument("action", choices=["list", "add", "expire"], nargs="?", default="list")
    p.add_argument("id", nargs="?", help="silence id (expire)")
    p.add_argument("--matcher", dest="matchers", action="append", default=[], help='e.g. team="db" (repeatable)')
    p.add_argument("--starts-in", default="0s")
    p.add_argument("--duration", default="2h")
    p.add_argument("--comment", default="")
    p.add_argument("--author", default=os.environ.get("USER", ""))
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_silences))

    p = add_parser("heartbeats", help="heartbeats: list each one's state and age, forget one for good")
    p.add_argument("action", choices=["list", "forget"], nargs="?", default="list")
    p.add_argument("id", nargs="?", help="forget: the heartbeat's id (`<name>` or `<name>/<hash>`, as listed)")
    p.add_argument("--redis-url")
    p.set_defaults(func=_with_redis(_heartbeats))

    p = add_parser("schema", help="JSON Schema of the mapping format (committed as mappings/schema.json)")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = add_parser(
        "replay", help="replay recorded webhooks against a mapping in a private Redis; report tickets and noise"
    )
    p.add_argument("file", help="JSON Lines: {source, at, body[, content_type, headers]} or bare payloads")
    p.add_argument("--config", action="append", help=f"mapping file, repeatable (default: {DEFAULT_CONFIG})")
    p.add_argument("--settle", default="0s", help="after the last webhook, let timers run this long (e.g. 10m)")
    p.add_argument("--redis-url", help="an empty scratch Redis instead of a private redis-server")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(level=args.log_level or ("warning" if args.command == "demo" else "info"))
    needs_id = getattr(args, "action", None) in ("show", "retry", "drop", "expire", "resolve", "forget")
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
