"""The one boundary between desk clients and aiohttp: requests with timeout and TLS, failures as DeskErrors.

Every desk client sends through a `Transport`. It never retries and never raises on an HTTP status.
Connect errors and timeouts become `DeskTransient` in `send`; a status becomes an error in
`Transport.error` by one rule for every desk (429 and 5xx transient, honouring Retry-After; 401
auth expired; any other non-2xx rejected), which a desk may refine before calling it (Remedy reads
its AR error numbers, token desks drop their token on a 401). Every such error names where the
call went (`url`: scheme://host:port) and the cause in a few words (`cause`: connection refused,
DNS lookup failed, TLS error (certificate), timeout, HTTP <status>; see `cause_of`). The request
kept with an error is method, URL with query and body; never a header, and form fields named
secret are masked.

Also here, for every desk config: `https_url` (the base URL check) and `tls_context` (a custom CA;
verification is never turned off).
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema, model_validator
from yarl import URL

from bridge.core.errors import Cause, ConfigError, DeskAuthExpired, DeskError, DeskRejected, DeskTransient

Json = Mapping[str, Any] | list[Any]
_MASK = "********"


@dataclass(frozen=True, slots=True)
class Answer:
    """A desk's answer to one request, with that request as it is kept in an error record."""

    status: int
    text: str
    request: dict[str, Any]
    retry_after: float | None = None
    location: str = ""
    content_type: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Transport:
    """Sends one desk's requests on the caller's session, each with its own timeout and TLS context."""

    def __init__(
        self,
        desk: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        tls: ssl.SSLContext | bool = True,
    ) -> None:
        self.desk = desk
        self._session = session
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tls = tls

    async def send(
        self,
        action: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        json: Json | None = None,
        form: Mapping[str, str] | None = None,
        secret_form_keys: Collection[str] = (),
    ) -> Answer:
        """One request; its answer whatever the status, or DeskTransient when none came."""
        request = describe(method, url, params, json)
        if form is not None:
            request["form"] = {k: (_MASK if k in secret_form_keys else v) for k, v in form.items()}
        where = origin(url)
        context: dict[str, Any] = {"desk": self.desk, "action": action, "request": request, "url": where}
        send_headers = dict(headers)
        data: bytes | aiohttp.FormData | None = None
        if json is not None:
            data = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = aiohttp.FormData(dict(form))
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=send_headers,
                timeout=self._timeout,
                ssl=self._tls,
                allow_redirects=False,  # a redirect means a login page or a wrong URL, never a record
                raise_for_status=False,
            ) as response:
                text = await response.text(errors="replace")
                return Answer(
                    status=response.status,
                    text=text,
                    request=request,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                    location=response.headers.get("Location", ""),
                    content_type=response.content_type,
                )
        except TimeoutError as exc:
            message = f"{self.desk} {action}: {Cause.TIMEOUT} at {where}: no answer within {self._seconds}s"
            raise DeskTransient(message, cause=Cause.TIMEOUT, **context) from exc
        except aiohttp.ClientError as exc:
            cause = cause_of(exc)
            message = f"{self.desk} {action}: {cause} at {where} ({type(exc).__name__}: {exc})"
            raise DeskTransient(message, cause=cause, **context) from exc

    def error(self, action: str, answer: Answer, reason: str = "") -> DeskError:
        """The desk error a non-2xx answer amounts to, by status."""
        context = self.context(action, answer)
        message = f"{self.desk} {action}: HTTP {answer.status} at {context['url']}" + (f": {reason}" if reason else "")
        if answer.status == 429 or answer.status >= 500:
            return DeskTransient(message, retry_after=answer.retry_after, **context)
        if answer.status == 401:
            return DeskAuthExpired(message, **context)
        return DeskRejected(message, **context)

    def json(self, action: str, answer: Answer) -> Any:
        """The decoded JSON of a 2xx answer; an answer that is not JSON means the desk is not there."""
        try:
            return orjson.loads(answer.text) if answer.text.strip() else None
        except orjson.JSONDecodeError as exc:
            # A hibernating or proxied desk answers 200 with an HTML page: transient.
            context = self.context(action, answer)
            message = f"{self.desk} {action}: answer is not JSON at {context['url']}"
            raise DeskTransient(message, cause="answer is not JSON", **context) from exc

    def unexpected(self, action: str, answer: Answer, what: str) -> DeskTransient:
        """A 2xx answer without what the client needs: transient, so that an open is searched for first."""
        context = self.context(action, answer)
        return DeskTransient(f"{self.desk} {action}: {what} at {context['url']}", cause="unexpected answer", **context)

    def context(self, action: str, answer: Answer) -> dict[str, Any]:
        return {
            "desk": self.desk,
            "action": action,
            "status": answer.status,
            "request": answer.request,
            "answer": answer.text,
            "url": origin(str(answer.request.get("url", ""))),
        }


def origin(url: str) -> str:
    """Where a request goes, without path or query: scheme://host[:port]."""
    try:
        return str(URL(url).origin())
    except ValueError:  # not absolute: keep what there is
        return url


_ERRNO = re.compile(r"\[Errno (-?\d+)\]")


def cause_of(exc: aiohttp.ClientError) -> str:
    """Why a request got no answer, in a few words: a `Cause`, or the error's own short description."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Cause.TLS
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS error"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Cause.DNS
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return Cause.DNS
        # Several addresses (localhost: ::1 and 127.0.0.1) fail as one OSError listing each errno.
        numbers = {int(n) for n in _ERRNO.findall(str(os_error))} or {os_error.errno or 0}
        if isinstance(os_error, ConnectionRefusedError) or numbers == {errno.ECONNREFUSED}:
            return Cause.REFUSED
        return f"cannot connect ({os_error.strerror or os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "connection lost"
    return type(exc).__name__


def describe(method: str, url: str, params: Mapping[str, str] | None, body: Json | None) -> dict[str, Any]:
    """The request as kept with an error: method, URL with query, JSON body; never the auth header."""
    full = str(URL(url).update_query(dict(params))) if params else url
    kept: Any = None
    if body is not None:
        kept = dict(body) if isinstance(body, Mapping) else list(body)
    return {"method": method, "url": full, "json": kept}


def retry_after_seconds(retry_after: str | None) -> float | None:
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


def https_url(value: str, example: str) -> str:
    """A desk's base URL: http(s), a host, no credentials, query or fragment; without a trailing /."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as {example}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: give them in their own keys")
    if parts.query or parts.fragment:
        raise ValueError("must be the desk's address only, without query or fragment")
    return value.rstrip("/")


def plain_http(url: str) -> bool:
    """Whether requests to `url` would cross a network unencrypted: http:// to a host that is not this
    one (a loopback address or `localhost`, where the simulators and sidecars run, is exempt)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return True


# A switch the mapping may also take from the environment (`${ALLOW:-false}`): true/false after it is read.
FLAG_SCHEMA = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-(true|false))?\}$"},
    ],
    "default": False,
}


class DeskAddress(BaseModel):
    """What every built-in desk config has besides its own keys: `allow_insecure_http`.

    A plain http:// URL to another host sends the desk's credentials and the tickets in clear: it is
    refused unless `allow_insecure_http: true`, and then warned about at start-up (bridge.process.server).
    """

    model_config = ConfigDict(extra="forbid")

    allow_insecure_http: Annotated[bool, WithJsonSchema(FLAG_SCHEMA)] = False

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> Self:
        url = getattr(self, "url", "")
        if isinstance(url, str) and plain_http(url) and not self.allow_insecure_http:
            raise ValueError(
                f"url {origin(url)!r} is plain http://: the desk's credentials and tickets would cross the network"
                " in clear; use https://, or set allow_insecure_http: true to accept that (a warning is logged)"
            )
        return self


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be more than 0 seconds")
    return value


Seconds = Annotated[float, AfterValidator(positive)]  # a desk's per-request timeout


def tls_context(ca_file: str | None, desk: str) -> ssl.SSLContext | bool:
    """True (the system's CAs), or a context that trusts `ca_file`; verification stays on either way."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read CA bundle: {exc}", path=f"desks.{desk}.ca_file") from exc


def json_reason(text: str, *paths: tuple[str, ...]) -> str:
    """The first non-empty value at one of `paths` in a JSON answer, joined if a list; '' otherwise."""
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ""
    for path in paths:
        value = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value if v)
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        if value:
            return str(value)
    return ""
