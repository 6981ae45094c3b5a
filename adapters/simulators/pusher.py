"""Outgoing webhooks of the desk simulators: a desk that pushes its ticket changes to a URL, in order.

A simulator's store calls `Pusher.push(body)` (synchronously, from its write path) for every change it
would send a webhook for; the pusher POSTs them one after the other, in the order they were made,
from a task on the running loop, as the vendor's delivery would. Nothing is sent while no target is
set. A test points it at the bridge (`target(url, headers, sign=...)`) and reads `deliveries` (each
body with the status the receiver answered, or the error) or awaits `drained()`.

`sign` names a header that carries an HMAC-SHA256 of the body under `secret` as `sha256=<hex>`
(Jira's `X-Hub-Signature` for webhooks with a secret); other auth goes in `headers`
(`Authorization: Bearer ...`, as a ServiceNow REST message sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


@dataclass
class Delivery:
    body: dict[str, Any]
    status: int | None = None
    error: str = ""


@dataclass
class Pusher:
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    sign: str = ""  # header name for the body's HMAC-SHA256 (empty: no signature)
    timeout_s: float = 10.0
    instance: str = ""  # the simulator's own base URL, for the ticket links in bodies (set by /_sim/push)
    deliveries: list[Delivery] = field(default_factory=list)
    _queue: asyncio.Queue[Delivery] | None = None
    _task: asyncio.Task[None] | None = None

    def target(self, url: str, headers: Mapping[str, str] | None = None, *, secret: str = "", sign: str = "") -> None:
        """Send every later change to `url`; an empty url stops pushing."""
        self.url, self.headers, self.secret, self.sign = url, dict(headers or {}), secret, sign

    def push(self, body: dict[str, Any]) -> None:
        """Queue one webhook body; sent in order by a task on the running loop."""
        if not self.url:
            return
        delivery = Delivery(body)
        self.deliveries.append(delivery)
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._queue.put_nowait(delivery)

    async def drained(self, within: float = 10.0) -> list[Delivery]:
        """Wait until every queued body has been answered; the deliveries so far."""
        if self._queue is not None:
            await asyncio.wait_for(self._queue.join(), within)
        return list(self.deliveries)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reset(self) -> None:
        self.deliveries.clear()

    async def _run(self) -> None:
        assert self._queue is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                delivery = await self._queue.get()
                try:
                    raw = orjson.dumps(delivery.body)
                    headers = {"Content-Type": "application/json", **self.headers}
                    if self.sign and self.secret:
                        digest = hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
                        headers[self.sign] = f"sha256={digest}"
                    async with session.post(self.url, data=raw, headers=headers) as answer:
                        await answer.read()
                        delivery.status = answer.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    delivery.error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._queue.task_done()
