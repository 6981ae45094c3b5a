"""Icinga 2: acknowledgements through its REST API's actions.

https://icinga.com/docs/icinga-2/latest/doc/12-icinga2-api/#actions: `POST /v1/actions/acknowledge-problem`
(`author` and `comment` required; `sticky`, `notify`, `persistent`, `expiry` a Unix time) and
`POST /v1/actions/remove-acknowledgement`, `POST /v1/actions/add-comment`; Basic auth, `Accept:
application/json` (without it a POST is a 400). One call per object, named by the simple filter
(`{"type": "Service", "service": "<host>!<service>"}` or `{"type": "Host", "host": "<host>"}`), so that a
name is never parsed as a filter expression.

The answer is `{"results": [{"code", "status"}, ...]}`, one result per object, and the HTTP status is derived
from them (lib/remote/actionshandler.cpp): 200 when all succeeded, the one error code when there is one kind
of error, 500 when several. A 404 `"No objects found."` means no object has that name (it was renamed or
removed: nothing to acknowledge there). A result 409 "already acknowledged" counts as done; 409 "is OK"/"is
UP" means the problem cleared meanwhile: nothing to do either. Results 500 and 503 ("Icinga is reloading")
are transient; other codes are rejected.

Members are found by the labels the icinga2 source keeps: `host`, and `service` for a service problem.
With `expire: true` the acknowledgement ends at the bridge's window (`expiry`) and is renewed (removed and
made again, without a notification) while the ticket is open, so that one the bridge stops caring about does
not stay forever; the default is an acknowledgement without expiry, removed when the ticket resolves.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.desks.transport import Answer, Transport, https_url, json_reason, tls_context
from adapters.upstreams.http import DEFAULT_AUTHOR, HttpSettings, check_urls, comment, error, rejected, secret
from bridge.core.errors import DeskError, DeskTransient
from bridge.core.sync import Acknowledgement

MAX_OBJECTS = 200  # objects (one call each) per acknowledgement
_BAD_NAME = re.compile(r"[!\x00-\x1f\x7f]")
_HANDLE = "expiring"


class Icinga2Upstream(HttpSettings):
    """`sources.<name>.upstream` for an icinga2 source."""

    url: str  # https://icinga.example.com:5665
    user: str = Field(min_length=1)  # an ApiUser with actions/acknowledge-problem, remove-acknowledgement, add-comment
    password: SecretStr
    author: str = Field(DEFAULT_AUTHOR, min_length=1)
    sticky: bool = True  # until the object fully recovers
    notify: bool = True  # Icinga sends its Acknowledgement notification (recognised by the bridge as its own)
    persistent: bool = False  # the comment stays after the acknowledgement ends
    expire: bool = False  # end at the bridge's window, renewed while the ticket is open

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return https_url(value, "https://icinga.example.com:5665").removesuffix("/v1")

    @model_validator(mode="after")
    def _plain(self) -> Self:
        check_urls([self.url], self.allow_insecure_http)
        return self

    def build(self, name: str, session: aiohttp.ClientSession) -> Icinga2Actions:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return Icinga2Actions(name, self, transport)


class Icinga2Actions:
    def __init__(self, name: str, settings: Icinga2Upstream, transport: Transport) -> None:
        self.name = name
        self._settings = settings
        self._http = transport
        pair = f"{settings.user}:{secret(settings.password)}".encode()
        self._headers = {"Accept": "application/json", "Authorization": "Basic " + base64.b64encode(pair).decode()}

    async def acknowledge(self, ack: Acknowledgement, *, notify: bool | None = None) -> str:
        s = self._settings
        body: dict[str, Any] = {
            "author": s.author,
            "comment": comment(ack),
            "sticky": s.sticky,
            "notify": s.notify if notify is None else notify,
            "persistent": s.persistent,
        }
        if s.expire and ack.until_ms:
            if ack.until_ms <= time.time() * 1000:
                raise rejected(self.name, "acknowledge", "until_ms is in the past: Icinga refuses such an expiry")
            body["expiry"] = ack.until_ms / 1000
        await self._each("acknowledge", "acknowledge-problem", ack.members, body)
        return _HANDLE if "expiry" in body else ""

    async def extend(self, ack: Acknowledgement) -> str:
        """An expiring acknowledgement made again with the later expiry (Icinga cannot move it); else nothing."""
        if not (self._settings.expire and ack.handle):
            return ack.handle
        await self.release(ack)
        return await self.acknowledge(ack, notify=False)

    async def release(self, ack: Acknowledgement) -> None:
        await self._each("release", "remove-acknowledgement", ack.members, {"author": self._settings.author})

    async def comment(self, ack: Acknowledgement, text: str) -> None:
        body = {"author": self._settings.author, "comment": comment(ack, text)}
        await self._each("comment", "add-comment", ack.members, body)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    async def _each(
        self, action: str, endpoint: str, members: Sequence[Mapping[str, str]], body: dict[str, Any]
    ) -> None:
        """The action on every member's object; rejected only when no object took it and some call was refused."""
        objects = self._objects(action, members)
        done, refusals = 0, []
        for target in objects:
            try:
                done += await self._one(action, endpoint, {**target, **body})
            except DeskTransient:
                raise
            except DeskError as exc:
                refusals.append(exc)
        if refusals and not done:
            raise refusals[0]

    async def _one(self, action: str, endpoint: str, body: dict[str, Any]) -> int:
        """1 when the object took the action (or already had it), 0 when there was nothing to do."""
        url = f"{self._settings.url}/v1/actions/{endpoint}"
        answer = await self._http.send(action, "POST", url, headers=self._headers, json=body)
        if answer.status == 404 and "No objects found" in answer.text:
            return 0  # renamed or removed in Icinga: nothing there to acknowledge
        results = _results(answer)
        if results is None:
            if answer.ok:
                raise self._http.unexpected(action, answer, "the answer has no results")
            raise error(self._http, action, answer, json_reason(answer.text, ("status",)))
        took = 0
        for result in results:
            code, status = int(result.get("code", 0) or 0), str(result.get("status", ""))
            if 200 <= code < 300 or (code == 409 and "already acknowledged" in status):
                took = 1
            elif code == 409 and (" is OK." in status or " is UP." in status):
                continue  # recovered meanwhile: nothing to acknowledge
            elif code >= 500 or code == 429:
                raise DeskTransient(
                    f"{self.name} {action}: {status or f'result {code}'}", **self._http.context(action, answer)
                )
            else:
                raise rejected(self.name, action, status or f"result {code}", **_context(self._http, action, answer))
        return took

    def _objects(self, action: str, members: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        found: dict[tuple[str, str], None] = {}
        for labels in members:
            host, service = labels.get("host", ""), labels.get("service", "")
            if not host:
                continue
            if _BAD_NAME.search(host) or _BAD_NAME.search(service):
                raise rejected(
                    self.name, action, f"object name {host[:60]!r}!{service[:60]!r} holds '!' or a control character"
                )
            found[host, service] = None
        if not found:
            raise rejected(self.name, action, "no member has a `host` label: nothing to acknowledge")
        return [
            {"type": "Service", "service": f"{h}!{s}"} if s else {"type": "Host", "host": h}
            for h, s in list(found)[:MAX_OBJECTS]
        ]


def _results(answer: Answer) -> list[dict[str, Any]] | None:
    try:
        data = orjson.loads(answer.text)
    except orjson.JSONDecodeError:
        return None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        return None
    return [r for r in results if isinstance(r, dict)]


def _context(http: Transport, action: str, answer: Answer) -> dict[str, Any]:
    context = http.context(action, answer)
    context.pop("desk", None)
    context.pop("action", None)
    return context
