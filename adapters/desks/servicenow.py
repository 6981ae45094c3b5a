"""The ServiceNow desk: incidents through the Table API, with its config model.

Wire format: itsm-apis.md §1 (ServiceNow Table API, `/api/now/table/{table}`). One ClientSession
is lent by the caller; every request carries its own timeout and, with `ca_file`, its own TLS
context (verification is never turned off). Foreign errors are translated in `_call` only:
connect errors, timeouts, 429 and 5xx → `DeskTransient`; 401 → `DeskAuthExpired`; any other
non-2xx → `DeskRejected`. The adapter never retries (bridge.delivery does, once, by type).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator
from yarl import URL

from adapters.desks.base import TicketPhase, TicketRef, TicketState
from bridge.errors import ConfigError, DeskAuthExpired, DeskRejected, DeskTransient

# Incident `state` values (itsm-apis.md §1.4): 1 New, 2 In Progress, 3 On Hold, 6 Resolved,
# 7 Closed, 8 Canceled. Anything else (a custom state) counts as open.
_PHASES: Mapping[str, TicketPhase] = {
    "6": TicketPhase.RESOLVED,
    "7": TicketPhase.CLOSED,
    "8": TicketPhase.CLOSED,
}
_RESOLVED, _IN_PROGRESS = "6", "2"


class ServiceNowConfig(BaseModel):
    """One ServiceNow instance, as an ops team writes it in the mappings."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["servicenow"]
    url: str  # https://instance.service-now.com
    user: str
    password: SecretStr
    table: str = "incident"
    close_code: str = "Solution provided"
    correlation_display: str = "alert-ticket-bridge"
    timeout: float = 10.0  # seconds, per request
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _instance_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://instance.service-now.com")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: use user and password")
        if parts.query or parts.fragment:
            raise ValueError("must be the instance address only, without query or fragment")
        return value.rstrip("/")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value

    def build(self, name: str, session: aiohttp.ClientSession) -> ServiceNowDesk:
        """The desk client for this instance, on the caller's session."""
        tls: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            try:
                tls = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot read CA bundle: {exc}", path=f"desks.{name}.ca_file") from exc
        return ServiceNowDesk(name, self, session, tls)


class ServiceNowDesk:
    """Incidents in one ServiceNow table, found again by `correlation_id`."""

    def __init__(
        self,
        name: str,
        config: ServiceNowConfig,
        session: aiohttp.ClientSession,
        tls: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = name
        self._config = config
        self._session = session
        self._tls = tls
        credentials = f"{config.user}:{config.password.get_secret_value()}".encode()
        basic = "Basic " + base64.b64encode(credentials).decode("ascii")  # RFC 7617, UTF-8
        # Kept only in these header maps, which are never logged or put in an error record.
        self._read_headers = {"Accept": "application/json", "Authorization": basic}
        self._write_headers = self._read_headers | {"Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._table_url = f"{config.url}/api/now/table/{config.table}"

    async def find(self, correlation_id: str) -> TicketRef | None:
        """The newest record with this correlation id, in any state."""
        params = {
            "sysparm_query": f"correlation_id={correlation_id}^ORDERBYDESCsys_created_on",
            "sysparm_fields": "sys_id,number,state",
            "sysparm_limit": "1",
        }
        answer = await self._call("find", "GET", self._table_url, params=params)
        rows = answer.get("result")
        if not isinstance(rows, list):
            raise self._unexpected("find", "GET", self._table_url, answer)
        return self._ref(rows[0]) if rows else None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        body = {
            **fields,
            "correlation_id": correlation_id,
            "correlation_display": self._config.correlation_display,
        }
        params = {"sysparm_fields": "sys_id,number"}
        answer = await self._call("open", "POST", self._table_url, params=params, json=body)
        record = answer.get("result")
        if not isinstance(record, dict) or not isinstance(record.get("sys_id"), str):
            # The record may exist: transient, so that delivery searches by correlation id first.
            raise self._unexpected("open", "POST", self._table_url, answer, body)
        return self._ref(record)

    async def note(self, ref: TicketRef, text: str) -> None:
        await self._patch("note", ref, {"work_notes": text})

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        if fields:
            await self._patch("update", ref, dict(fields))

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        """State 6 with the resolution code and notes that the data policy demands in the same call."""
        others = {k: v for k, v in fields.items() if k != "close_code"}
        body = {
            **others,
            "state": _RESOLVED,
            "close_code": fields.get("close_code", self._config.close_code),
            "close_notes": note,
        }
        await self._patch("resolve", ref, body)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        await self._patch("reopen", ref, {"state": _IN_PROGRESS, "work_notes": note})

    async def state(self, ref: TicketRef) -> TicketState:
        url = f"{self._table_url}/{ref.id}"
        params = {"sysparm_exclude_reference_link": "true"}
        answer = await self._call("state", "GET", url, params=params)
        record = answer.get("result")
        if not isinstance(record, dict):
            raise self._unexpected("state", "GET", url, answer)
        values = {k: v for k, v in record.items() if isinstance(v, str)}
        raw = values.get("state", "")
        return TicketState(phase=_PHASES.get(raw, TicketPhase.OPEN), raw_state=raw, fields=values)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    # -- the one boundary with aiohttp -----------------------------------------------------------

    def _ref(self, record: Mapping[str, Any]) -> TicketRef:
        sys_id = str(record["sys_id"])
        url = f"{self._config.url}/nav_to.do?uri={self._config.table}.do?sys_id={sys_id}"
        return TicketRef(id=sys_id, display=str(record.get("number", "")), url=url)

    async def _patch(self, action: str, ref: TicketRef, body: dict[str, str]) -> None:
        url = f"{self._table_url}/{ref.id}"
        await self._call(action, "PATCH", url, params={"sysparm_fields": "sys_id"}, json=body)

    async def _call(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; the decoded JSON object of a 2xx answer, or the desk error it amounts to."""
        request = _describe(method, url, params, json)
        context: dict[str, Any] = {"desk": self.name, "action": action, "request": request}
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=orjson.dumps(json) if json is not None else None,
                headers=self._write_headers if json is not None else self._read_headers,
                timeout=self._timeout,
                ssl=self._tls,
                allow_redirects=False,  # a redirect means a login page or a wrong URL, never a record
                raise_for_status=False,
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as exc:
            message = f"{self.name} {action}: no answer within {self._config.timeout}s"
            raise DeskTransient(message, **context) from exc
        except aiohttp.ClientError as exc:
            raise DeskTransient(f"{self.name} {action}: {type(exc).__name__}: {exc}", **context) from exc
        context |= {"status": status, "answer": text}
        if 200 <= status < 300:
            return self._decode(action, text, context)
        message = f"{self.name} {action}: HTTP {status}{_reason(text)}"
        if status == 429 or status >= 500:
            raise DeskTransient(message, retry_after=_seconds(retry_after), **context)
        if status == 401:
            raise DeskAuthExpired(message, **context)
        raise DeskRejected(message, **context)

    def _decode(self, action: str, text: str, context: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError as exc:
            # A hibernating or proxied instance answers 200 with an HTML page: the desk is not there.
            raise DeskTransient(f"{self.name} {action}: answer is not JSON", **context) from exc
        if not isinstance(answer, dict):
            raise DeskTransient(f"{self.name} {action}: answer is not a JSON object", **context)
        return answer

    def _unexpected(
        self,
        action: str,
        method: str,
        url: str,
        answer: Mapping[str, Any],
        body: Mapping[str, str] | None = None,
    ) -> DeskTransient:
        return DeskTransient(
            f"{self.name} {action}: answer has no result record",
            desk=self.name,
            action=action,
            request=_describe(method, url, None, body),
            answer=orjson.dumps(answer).decode(),
        )


def _describe(
    method: str, url: str, params: Mapping[str, str] | None, body: Mapping[str, str] | None
) -> dict[str, Any]:
    """The request as kept with an error: method, URL with query, JSON body; never the auth header."""
    full = str(URL(url).update_query(dict(params))) if params else url
    return {"method": method, "url": full, "json": dict(body) if body is not None else None}


def _reason(text: str) -> str:
    """`: message: detail` from ServiceNow's error envelope, when the answer has one."""
    try:
        error = orjson.loads(text).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    parts = [str(error[k]) for k in ("message", "detail") if error.get(k)]
    return ": " + ": ".join(parts) if parts else ""


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
