"""The simulated instance's OAuth token endpoint, `POST /oauth_token.do`.

As ServiceNow documents it: "REST OAuth example"
(https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/r_RESTOAuthExample.html) and "Client Credentials"
(https://www.servicenow.com/docs/r/platform-security/authentication/client-credentials.html).

Grants, as an instance with one Application Registry entry answers them: `password` (client id
and secret plus the instance user's name and password), `client_credentials` (client id and
secret; only while `client_credentials` is enabled, as with the instance property
`glide.oauth.inbound.client.credential.grant_type.enabled`; no refresh token is issued) and
`refresh_token`. Every failure is the platform's opaque 401
`{"error_description": "access_denied", "error": "server_error"}`.

Access tokens live `token_ttl_s` seconds (the platform default is 1799) and answer 401 afterwards.
Test hooks: `expire_tokens()` ages every access token out, `revoke()` also forgets refresh tokens,
and `grants` lists the grant types issued, oldest first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

DEFAULT_CLIENT = ("bridge-client", "client-s3cret")


@dataclass
class OAuthServer:
    clients: dict[str, str]  # client_id -> client_secret
    user: str
    password: str
    client_credentials: bool = True
    token_ttl_s: float = 1799.0
    clock: Callable[[], float] = time.time
    access: dict[str, float] = field(default_factory=dict)  # token -> expiry
    refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> client_id
    grants: list[str] = field(default_factory=list)

    def valid(self, token: str) -> bool:
        expiry = self.access.get(token)
        return expiry is not None and self.clock() < expiry

    def expire_tokens(self) -> None:
        """Every access token expires now (refresh tokens stay good)."""
        self.access = dict.fromkeys(self.access, 0.0)

    def revoke(self) -> None:
        """Forget every access and refresh token."""
        self.access.clear()
        self.refresh.clear()

    def reset(self) -> None:
        self.revoke()
        self.grants.clear()

    def grant(self, form: Mapping[str, str]) -> dict[str, object] | None:
        """The token answer for a grant request, or None when it is refused."""
        client_id, grant_type = form.get("client_id", ""), form.get("grant_type", "")
        if client_id not in self.clients or not secrets.compare_digest(
            self.clients[client_id], form.get("client_secret", "")
        ):
            return None
        if grant_type == "password":
            if (form.get("username"), form.get("password")) != (self.user, self.password):
                return None
        elif grant_type == "client_credentials":
            if not self.client_credentials:
                return None
        elif grant_type == "refresh_token":
            if self.refresh.get(form.get("refresh_token", "")) != client_id:
                return None
        else:
            return None
        self.grants.append(grant_type)
        access = secrets.token_urlsafe(48)
        self.access[access] = self.clock() + self.token_ttl_s
        answer: dict[str, object] = {
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl_s),
            "access_token": access,
        }
        if grant_type != "client_credentials":
            refresh = form.get("refresh_token") if grant_type == "refresh_token" else None
            refresh = refresh or secrets.token_urlsafe(48)
            self.refresh[refresh] = client_id
            answer["refresh_token"] = refresh
        return answer


OAUTH = web.AppKey("servicenow_oauth", OAuthServer)
_DENIED = {"error_description": "access_denied", "error": "server_error"}


async def token_endpoint(request: web.Request) -> web.Response:
    """`POST /oauth_token.do`, form-encoded."""
    if request.content_type != "application/x-www-form-urlencoded":
        return web.json_response(_DENIED, status=401)
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    answer = request.app[OAUTH].grant(form)
    if answer is None:
        return web.json_response(_DENIED, status=401)
    return web.json_response(answer)
