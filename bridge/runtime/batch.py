"""Shared round trips: the commands concurrent tasks send in one event-loop turn go to Redis together.

A round trip through redis-py's asyncio client costs far more client CPU than the commands in it
(measured by `python -m bench.roundtrip`), and under load many tasks need one in the same turn:
webhook requests writing the intake stream, deliveries taking leases and recording what the desk
answered, engine batches. Each hands over its queued commands (a redis-py pipeline, not executed)
and gets its own replies back, exactly as if it had executed that pipeline itself: its commands run
in the order queued, none of a transaction (these pipelines never were one) and nothing waits for
a batch to fill. The first caller of a turn yields once, so that the others of the turn join it,
and then sends for all of them; batches in flight do not wait for each other.

Round trips go out on connections of the batcher's own, made and connected by the client's pool
(so standalone, TLS, Unix socket or Sentinel-managed alike, authenticated and with their database
selected) but kept here: a redis-py pipeline checks a connection out of the pool and in again, and
checks it for unread data, on every round trip, at about the CPU of the round trip itself.
Once connected, its transport is read by `_Wire` instead of redis-py's
stream reader: the replies of a round trip are parsed by hiredis as they arrive, in one callback,
and then given the client's response callbacks, which is what redis-py's reading does one reply
and several awaits at a time. A connection Redis has closed (a restart) is replaced, and a round
trip it failed before any reply is made once more on a new one, as redis-py's own retry would.
A round trip is timed as a whole, and a Redis that stops answering (hung, not gone) fails it after
`timeout` seconds; the connection it was reading is closed. The client given here must not decode
responses (the bridge's never do: `bridge/runtime/connect.py`); its socket timeout does not apply here.

Scripts are queued as bare EVALSHA. Should Redis have lost them (a restart, a failover), those
calls answer NOSCRIPT without having run: the scripts are loaded again and just those calls made
again, in their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import Connection
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

IDLE_MAX = 16  # connections kept open for later round trips; more round trips at once than this open more
Command = tuple[tuple[Any, ...], Mapping[str, Any]]  # (args, options), as a redis-py pipeline queues it
Caller = tuple[list[Command], "asyncio.Future[list[Any]] | None"]  # its commands, where its replies go


class _Unanswered(RedisConnectionError):
    """The connection failed before any reply came."""


_PUSH = getattr(hiredis, "PushNotification", ())  # RESP3 out-of-band messages (hiredis >= 3.2): not replies
_OPTIONS_NOT_FOR_CALLBACKS = (EMPTY_RESPONSE, NEVER_DECODE, "keys")  # as redis-py's parse_response drops them


class _Wire(asyncio.Protocol):
    """Reads one connection of the batcher's: collects the replies of the round trip in progress."""

    def __init__(self, transport: asyncio.Transport, parser: Any) -> None:
        self.transport = transport
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=parser.parse_error,
                                     notEnoughData=NOT_ENOUGH_DATA)  # fmt: skip
        self.want = 0
        self.replies: list[Any] = []
        self.done: asyncio.Future[list[Any]] | None = None
        self.lost: Exception | None = None

    def expect(self, count: int) -> asyncio.Future[list[Any]]:
        self.want, self.replies = count, []
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        replies, gets = self.replies, self.reader.gets
        while len(replies) < self.want:
            reply = gets()
            if reply is NOT_ENOUGH_DATA:
                return
            if not isinstance(reply, _PUSH):
                replies.append(reply)
        if self.done is not None and not self.done.done():
            self.done.set_result(replies)
            self.done, self.want = None, 0
            if not self.reader.has_data():
                return
        self.transport.close()  # replies nobody waits for (or more than asked for): out of step

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"Redis closed the connection: {exc or 'end of stream'}")
        if self.done is not None and not self.done.done():
            lost = self.lost if self.replies else _Unanswered(str(self.lost))
            self.done.set_exception(lost)


class Batcher:
    def __init__(
        self, redis: aioredis.Redis, reload: Callable[[], Awaitable[None]], *, timeout: float | None = None
    ) -> None:
        self.redis = redis
        self.timeout = timeout  # seconds for a whole round trip (NOSCRIPT's reload included)
        self._reload = reload
        self._joining: list[Caller] | None = None
        self._orphans: set[asyncio.Future[list[Any]]] = set()  # sends whose first caller was cancelled
        self._idle: list[Connection] = []  # connections no round trip is using

    async def execute(self, pipe: aioredis.client.Pipeline, *, raise_on_error: bool = True) -> list[Any]:
        """Run the commands queued on `pipe` (which is left as it was, not executed); returns their
        replies. With `raise_on_error`, the first error among them is raised, else returned in place."""
        commands: list[Command] = list(pipe.command_stack)
        if not commands:
            return []
        if self._joining is not None:  # a send is being gathered this turn: join it
            done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._joining.append((commands, done))
            replies = await done
        else:
            replies = await self._lead(commands)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def _lead(self, commands: list[Command]) -> list[Any]:
        joined: list[Caller] = []
        self._joining = joined
        try:
            await asyncio.sleep(0)  # the rest of this turn's callers join
        except asyncio.CancelledError:
            if joined:  # they still get their round trip, without this caller
                task = asyncio.ensure_future(self._send(joined))
                self._orphans.add(task)
                task.add_done_callback(self._orphaned)
            raise
        finally:
            self._joining = None
        return await self._send([(commands, None), *joined])

    def _orphaned(self, task: asyncio.Future[list[Any]]) -> None:
        self._orphans.discard(task)
        if not task.cancelled():
            task.exception()  # its callers got it; retrieved here so that asyncio does not log it

    async def _send(self, batch: list[Caller]) -> list[Any]:
        """Run every caller's commands in one round trip and hand each its replies; returns the
        first caller's (the one that sends: it has no future)."""
        try:
            replies = await self._run([c for commands, _ in batch for c in commands])
        except BaseException as exc:
            lost = exc if isinstance(exc, Exception) else RedisConnectionError(f"round trip interrupted: {exc!r}")
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_exception(lost)
            raise
        index = 0
        for commands, done in batch:
            if done is not None and not done.done():  # else its caller was cancelled meanwhile
                done.set_result(replies[index : index + len(commands)])
            index += len(commands)
        return replies[: len(batch[0][0])]

    async def _run(self, commands: list[Command]) -> list[Any]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._round_trip(commands)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from exc

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        replies = await self._exchange(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self._reload()
            again = await self._exchange([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _exchange(self, commands: list[Command]) -> list[Any]:
        """Send `commands` and read their replies, each parsed as the client would (its response
        callbacks); error replies are returned in place."""
        while self._idle:
            conn = self._idle.pop()
            wire: _Wire = conn._wire  # type: ignore[attr-defined]
            if wire.lost is not None or wire.transport.is_closing():  # Redis closed it meanwhile, or it is out of step
                await conn.disconnect(nowait=True)
                continue
            try:
                return await self._on(conn, commands)
            except _Unanswered:  # it failed before any reply came: once more, on a new connection
                break
        conn = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()  # here, not on first use: a Sentinel-managed one asks where the master is
            transport = conn._writer.transport
            conn._wire = _Wire(transport, conn._parser)  # reads the connection from now on
            transport.set_protocol(conn._wire)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return await self._on(conn, commands)

    async def _on(self, conn: Connection, commands: list[Command]) -> list[Any]:
        wire: _Wire = conn._wire  # type: ignore[attr-defined]
        try:
            replies = wire.expect(len(commands))
            wire.transport.writelines(conn.pack_commands([args for args, _ in commands]))
            raw = await replies
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        if len(self._idle) < IDLE_MAX:
            self._idle.append(conn)
        else:
            await conn.disconnect(nowait=True)
        callbacks = self.redis.response_callbacks
        parsed: list[Any] = []
        for (args, options), reply in zip(commands, raw, strict=True):
            if isinstance(reply, ResponseError):
                parsed.append(options.get(EMPTY_RESPONSE, reply))
                continue
            callback = callbacks.get(args[0])
            if callback is not None:
                extra = {k: v for k, v in options.items() if k not in _OPTIONS_NOT_FOR_CALLBACKS} if options else {}
                reply = callback(reply, **extra)
            parsed.append(reply)
        return parsed

    async def aclose(self) -> None:
        """Close the connections of the batcher's own."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)  # the stream reader that waits for the close is gone (_Wire)


class ClusterBatcher:
    """The same calls on a Redis Cluster: each caller's commands go out as one redis-py cluster pipeline
    (not a transaction), which splits them per node by their keys' slots, follows MOVED and ASK, and
    answers in the order queued. Callers are not joined into one round trip: a round trip is per node
    here, and the standalone batcher's shortcuts through one connection do not apply. NOSCRIPT is
    recovered as above (a promoted replica may lack a script its master had)."""

    def __init__(
        self, redis: aioredis.Redis, reload: Callable[[], Awaitable[None]], *, timeout: float | None = None
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        self._reload = reload

    async def execute(self, pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Run the commands queued on the cluster pipeline `pipe` (left as it was, not executed)."""
        commands: list[Command] = [(c.args, c.kwargs) for c in pipe._execution_strategy._command_queue]
        if not commands:
            return []
        try:
            async with asyncio.timeout(self.timeout):
                replies = await self._run(commands)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:
                    await self._reload()
                    again = await self._run([commands[i] for i in missing])
                    for i, reply in zip(missing, again, strict=True):
                        replies[i] = reply
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from exc
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def _run(self, commands: list[Command]) -> list[Any]:
        run: Any = self.redis.pipeline(transaction=False)
        for args, options in commands:
            if "wait_key" in options:  # WAIT, to the master of that key as the client knows it now
                node = self.redis.get_node_from_key(options["wait_key"])  # type: ignore[attr-defined]
                options = {k: v for k, v in options.items() if k != "wait_key"} | {"target_nodes": node}
            run.execute_command(*args, **options)
        return list(await run.execute(raise_on_error=False))

    async def aclose(self) -> None:
        """Nothing of its own to close: the cluster client's connections are the client's."""
