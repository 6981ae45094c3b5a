"""Zabbix: acknowledgements through the JSON-RPC API's `event.acknowledge`.

https://www.zabbix.com/documentation/current/en/manual/api/reference/event/acknowledge: `action` is a
bitmask (2 acknowledge, 4 add message, 16 unacknowledge: Zabbix 5.2 and later), `message` required with 4
(at most 2,048 characters: longer is cut). Auth is an API token: `Authorization: Bearer <token>` (Zabbix
6.4 and later, the only way from 7.2), or `auth_in_body: true` for 5.4 to 6.2, which take it as the request's
`auth` member. Zabbix answers 200 to every JSON-RPC call; an error is the body's `error` ({code, message,
data}). The call is refused whole when any event id is unknown, not a problem event, or not visible to the
token's user ("No permissions to referred object or it does not exist!"): then each id is tried alone, so
that the others are still acknowledged, and it is rejected only when none could be.

Errors: no answer, HTTP 5xx and 429, JSON-RPC -32603 (internal), -32400 (system) and -32500 whose data says
the database failed are transient; every other JSON-RPC error (bad params, not authorised, no permission)
is rejected. An acknowledgement already made is skipped by Zabbix itself, so a retry is harmless.

Members are found by the `event_id` label the zabbix source keeps ({EVENT.ID}). Zabbix acknowledgements do
not expire: no handle, nothing to extend.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Self

import aiohttp
from pydantic import SecretStr, field_validator, model_validator

from adapters.desks.transport import Transport, https_url, tls_context
from adapters.upstreams.http import HttpSettings, check_urls, comment, error, rejected, secret
from bridge.core.errors import DeskError, DeskTransient
from bridge.core.sync import Acknowledgement

ACKNOWLEDGE, MESSAGE, UNACKNOWLEDGE = 2, 4, 16
MAX_MESSAGE = 2048
MAX_EVENTS = 1000
_TRANSIENT_CODES = frozenset({-32603, -32400, -32300})
_NOT_FOUND = "No permissions to referred object or it does not exist"


class ZabbixUpstream(HttpSettings):
    """`sources.<name>.upstream` for a zabbix source."""

    url: str  # the frontend, https://zabbix.example.com (or its .../api_jsonrpc.php)
    token: SecretStr  # an API token (Users > API tokens) of a user who may acknowledge the hosts' problems
    auth_in_body: bool = False  # Zabbix 5.4 - 6.2: the token as the request's `auth` member

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        base = https_url(value, "https://zabbix.example.com")
        return base if base.endswith("/api_jsonrpc.php") else base + "/api_jsonrpc.php"

    @model_validator(mode="after")
    def _plain(self) -> Self:
        check_urls([self.url], self.allow_insecure_http)
        return self

    def build(self, name: str, session: aiohttp.ClientSession) -> ZabbixEvents:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return ZabbixEvents(name, self, transport)


class ZabbixEvents:
    def __init__(self, name: str, settings: ZabbixUpstream, transport: Transport) -> None:
        self.name = name
        self._settings = settings
        self._http = transport
        self._ids = itertools.count(1)
        self._headers = {"Content-Type": "application/json-rpc"}
        if not settings.auth_in_body:
            self._headers["Authorization"] = "Bearer " + secret(settings.token)

    async def acknowledge(self, ack: Acknowledgement) -> str:
        await self._update("acknowledge", ack.members, ACKNOWLEDGE | MESSAGE, comment(ack))
        return ""

    async def extend(self, ack: Acknowledgement) -> str:
        """A Zabbix acknowledgement lasts until the problem closes or is released: nothing to extend."""
        return ack.handle

    async def release(self, ack: Acknowledgement) -> None:
        await self._update("release", ack.members, UNACKNOWLEDGE | MESSAGE, comment(ack, "Acknowledgement released"))

    async def comment(self, ack: Acknowledgement, text: str) -> None:
        await self._update("comment", ack.members, MESSAGE, comment(ack, text))

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    async def _update(self, action: str, members: Sequence[Mapping[str, str]], bits: int, message: str) -> None:
        ids = list(dict.fromkeys(m["event_id"] for m in members if m.get("event_id", "").isdigit()))[:MAX_EVENTS]
        if not ids:
            raise rejected(self.name, action, "no member has an `event_id` label: nothing to acknowledge")
        params = {"action": bits, "message": message[:MAX_MESSAGE]}
        try:
            await self._call(action, {"eventids": ids, **params})
            return
        except DeskTransient:
            raise
        except DeskError as exc:
            if len(ids) == 1 or _NOT_FOUND not in str(exc):
                raise
            first = exc
        done = 0
        for one in ids:  # one unknown id refuses the whole call: the others one by one
            try:
                await self._call(action, {"eventids": [one], **params})
                done += 1
            except DeskTransient:
                raise
            except DeskError:
                continue
        if not done:
            raise first

    async def _call(self, action: str, params: dict[str, Any]) -> Any:
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "method": "event.acknowledge",
            "params": params,
            "id": next(self._ids),
        }
        if self._settings.auth_in_body:
            body["auth"] = secret(self._settings.token)
        try:
            answer = await self._http.send(action, "POST", self._settings.url, headers=self._headers, json=body)
        except DeskTransient as exc:
            _mask(exc.request)
            raise
        _mask(answer.request)  # what an error keeps (a dead letter, a log line) never holds the token
        if not answer.ok:
            raise error(self._http, action, answer)
        data = self._http.json(action, answer)
        if not isinstance(data, dict):
            raise self._http.unexpected(action, answer, "the answer is not a JSON-RPC response")
        failure = data.get("error")
        if isinstance(failure, dict):
            code = int(failure.get("code", 0) or 0)
            said = f"{failure.get('message', '')} {failure.get('data', '')}".strip()
            context = self._http.context(action, answer)
            if code in _TRANSIENT_CODES or (code == -32500 and ("SQL" in said or "atabase" in said)):
                raise DeskTransient(
                    f"{self.name} {action}: JSON-RPC {code}: {said}", cause=f"JSON-RPC {code}", **context
                )
            context.pop("desk"), context.pop("action")
            raise rejected(self.name, action, f"JSON-RPC {code}: {said}", **context)
        if "result" not in data:
            raise self._http.unexpected(action, answer, "the answer has neither result nor error")
        return data["result"]


def _mask(request: dict[str, Any]) -> None:
    kept = request.get("json")
    if isinstance(kept, dict) and "auth" in kept:
        kept["auth"] = "********"
