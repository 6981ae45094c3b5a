"""ServiceNow sign-in and the signed request, shared by the Table API and Event Management desks.

Sign-in is Basic, or OAuth bearer tokens.

OAuth (ServiceNow docs, "REST OAuth example":
https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/r_RESTOAuthExample.html, and "Client
Credentials":
https://www.servicenow.com/docs/r/platform-security/authentication/client-credentials.html): a
form-encoded POST to `{url}/oauth_token.do` with `grant_type=password` (client id and secret plus a
user's name and password) or `grant_type=client_credentials` (client id and secret only; the instance
must enable that grant and name an OAuth application user). The answer's `access_token` goes out as
`Authorization: Bearer ...`. Shortly before it expires (`expires_in`) it is renewed with
`grant_type=refresh_token`; when the refresh token is refused, with the original grant again.

A 401 on a token that worked is the desk's to report: it calls `forget(header)`, which drops the
access token, and raises DeskAuthExpired, so that the delivery's one retry signs in again. The
token endpoint refusing the configured credentials is DeskRejected: signing in again cannot help.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import ConfigDict, SecretStr, field_validator, model_validator

from adapters.desks.transport import Answer, DeskAddress, Seconds, Transport, https_url, json_reason
from bridge.core.errors import DeskAuthExpired, DeskRejected

_RENEW_MARGIN_S = 60.0  # renew this long before the announced expiry, so a token never dies in flight


class ServiceNowSignIn(DeskAddress):
    """The address and credentials of one instance; both ServiceNow desk kinds extend this."""

    model_config = ConfigDict(extra="forbid")

    url: str  # https://instance.service-now.com
    auth: Literal["basic", "oauth"] = "basic"
    user: str | None = None  # basic, and the OAuth password grant
    password: SecretStr | None = None
    grant: Literal["password", "client_credentials"] = "password"  # OAuth only
    client_id: str | None = None  # OAuth only: the Application Registry entry
    client_secret: SecretStr | None = None
    timeout: Seconds = 10.0  # seconds, per request
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled

    @field_validator("url")
    @classmethod
    def _instance_url(cls, value: str) -> str:
        return https_url(value, "https://instance.service-now.com")

    @model_validator(mode="after")
    def _credentials_for_the_mode(self) -> Self:
        needs: list[str] = []
        if self.auth == "basic" or self.grant == "password":
            needs += ["user", "password"]
        if self.auth == "oauth":
            needs += ["client_id", "client_secret"]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            mode = "basic" if self.auth == "basic" else f"oauth with the {self.grant} grant"
            raise ValueError(f"auth {mode} needs {' and '.join(missing)}")
        return self


@dataclass(frozen=True, slots=True)
class _Token:
    access: str
    refresh: str
    renew_at: float  # monotonic seconds


class ServiceNowCredentials:
    """The Authorization header for the next request, signing in or renewing the token as needed."""

    def __init__(
        self,
        config: ServiceNowSignIn,
        transport: Transport,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._http = transport
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()  # one sign-in at a time within this process
        self._basic = ""
        if config.auth == "basic":
            secret = config.password.get_secret_value() if config.password else ""
            credentials = f"{config.user}:{secret}".encode()
            self._basic = "Basic " + base64.b64encode(credentials).decode("ascii")  # RFC 7617, UTF-8

    @property
    def uses_tokens(self) -> bool:
        return self._config.auth == "oauth"

    async def header(self, action: str) -> str:
        """`Basic ...`, or `Bearer <token>` after signing in or renewing when the token is due."""
        if not self.uses_tokens:
            return self._basic
        async with self._lock:
            token = self._token
            if token is None or not token.access or self._clock() >= token.renew_at:
                token = self._token = await self._renew(action, token)
            return "Bearer " + token.access

    def forget(self, header: str) -> None:
        """A 401 answered `header`: drop that access token (keeping the refresh token), if still current."""
        token = self._token
        if token is not None and header == "Bearer " + token.access:
            self._token = _Token(access="", refresh=token.refresh, renew_at=0.0)

    async def _renew(self, action: str, old: _Token | None) -> _Token:
        if old is not None and old.refresh:
            try:
                form = {"grant_type": "refresh_token", "refresh_token": old.refresh}
                return await self._grant(action, form)
            except (DeskRejected, DeskAuthExpired):
                pass  # the refresh token expired or was revoked: sign in with the configured grant
        form = {"grant_type": self._config.grant}
        if self._config.grant == "password":
            form |= {
                "username": self._config.user or "",
                "password": self._config.password.get_secret_value() if self._config.password else "",
            }
        return await self._grant(action, form)

    async def _grant(self, action: str, form: dict[str, str]) -> _Token:
        secret = self._config.client_secret.get_secret_value() if self._config.client_secret else ""
        form = form | {"client_id": self._config.client_id or "", "client_secret": secret}
        answer = await self._http.send(
            action,
            "POST",
            f"{self._config.url}/oauth_token.do",
            headers={"Accept": "application/json"},
            form=form,
            secret_form_keys=("password", "client_secret", "refresh_token"),
        )
        if answer.status in (400, 401):
            reason = json_reason(answer.text, ("error_description",), ("error",)) or "refused"
            message = f"{self._http.desk} {action}: OAuth {form['grant_type']} grant refused: {reason}"
            raise DeskRejected(message, **self._http.context(action, answer))
        if not answer.ok:
            raise self._http.error(action, answer, json_reason(answer.text, ("error_description",)))
        body: Any = self._http.json(action, answer)
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise self._http.unexpected(action, answer, "token answer has no access_token")
        try:
            lifetime = float(body.get("expires_in", 1799))
        except (TypeError, ValueError):
            lifetime = 1799.0  # the platform's default lifetime, 30 minutes less a second
        refresh = body.get("refresh_token")
        return _Token(
            access=access,
            refresh=refresh if isinstance(refresh, str) else "",
            renew_at=self._clock() + max(0.0, lifetime - _RENEW_MARGIN_S),
        )


async def call(
    http: Transport,
    credentials: ServiceNowCredentials,
    action: str,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    json: Mapping[str, Any] | list[Any] | None = None,
) -> Answer:
    """One authenticated request to an instance: its 2xx answer, or the desk error it amounts to."""
    header = await credentials.header(action)
    answer = await http.send(
        action,
        method,
        url,
        headers={"Accept": "application/json", "Authorization": header},
        params=params,
        json=json,
    )
    if answer.ok:
        return answer
    if answer.status == 401 and credentials.uses_tokens:
        credentials.forget(header)  # the delivery's one retry signs in again
    raise http.error(action, answer, reason(answer.text))


def reason(text: str) -> str:
    """`message: detail` from ServiceNow's error envelope, when the answer has one."""
    message = json_reason(text, ("error", "message"))
    detail = json_reason(text, ("error", "detail"))
    return ": ".join(part for part in (message, detail) if part)
