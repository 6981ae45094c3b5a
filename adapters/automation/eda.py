"""Event-Driven Ansible: post incident events to an `ansible.eda.webhook` source.

The source (collection ansible.eda, `extensions/eda/plugins/event_source/webhook.py`) listens on
`host:port` and takes any JSON body POSTed to it, giving the rulebook `event.payload` (the body) and
`event.meta.endpoint`/`headers`; with its `token` option it requires `Authorization: Bearer <token>`,
with `hmac_secret` a signature of the body in `hmac_header` (default `X-Hub-Signature-256`,
`sha256=<hex>` with `hmac_format: hex`). The bridge posts
`{"incident", "route", "state", "epoch", "ticket": {"id", "url"}, "alerts": [...], "extra_vars"}` and
retries a failed post (connection refused, 5xx) a few times: fire and forget, the rulebook decides
what to run; the note says whether the event was accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator

from adapters.desks.transport import tls_context
from bridge.core.automation import Outcome, Request, RunnerSettings


class EdaConfig(RunnerSettings):
    """`automation: {<name>: {kind: eda, url, secret}}`."""

    kind: Literal["eda"]
    url: str  # the webhook source's address, e.g. https://eda.example.com:5000/endpoint
    secret: SecretStr | None = None  # the source's `token` (bearer), or its `hmac_secret` (auth: hmac)
    auth: Literal["bearer", "hmac"] = "bearer"
    hmac_header: str = "X-Hub-Signature-256"
    attempts: int = Field(3, ge=1, le=10)
    timeout: float = 10.0
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://eda.example.com:5000/endpoint")
        return value

    def build(self, name: str, session: Any) -> EdaRunner:
        return EdaRunner(name, self, session)


class EdaRunner:
    def __init__(self, name: str, config: EdaConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.session = session
        self._ssl = tls_context(config.ca_file, name)

    async def run(self, request: Request) -> Outcome:
        body = orjson.dumps(request.event)
        headers = {"Content-Type": "application/json"}
        secret = self.config.secret.get_secret_value() if self.config.secret else ""
        if secret and self.config.auth == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        elif secret:
            headers[self.config.hmac_header] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        started = time.monotonic()
        problem = ""
        for attempt in range(self.config.attempts):
            if attempt:
                await asyncio.sleep(min(2.0**attempt / 2, 10.0))
            try:
                async with self.session.post(
                    self.config.url, data=body, headers=headers, ssl=self._ssl,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                ) as resp:  # fmt: skip
                    text = (await resp.content.read(2000)).decode("utf-8", errors="replace")
                    if resp.status < 300:
                        return Outcome(status="sent", detail="the event reached the EDA webhook source",
                                       elapsed_s=time.monotonic() - started)  # fmt: skip
                    problem = f"{resp.status} {text[:200]}".strip()
                    if resp.status < 500 and resp.status != 429:
                        break  # refused (a wrong token): trying again does not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome(status="not_started", detail=f"EDA webhook: {problem} (after {attempt + 1} attempts)")
