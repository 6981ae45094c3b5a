"""AWX / Ansible Automation Platform (automation controller): launch a job template, follow the job.

API (AWX's REST API, v2; https://docs.ansible.com/automation-controller/latest/html/controllerapi/):
`POST /api/v2/job_templates/{id}/launch/` with `{"extra_vars": {...}}` answers 201 with `job` (its id)
and `ignored_fields` (what the template does not prompt for: `extra_vars` without
`ask_variables_on_launch` or a survey); `GET /api/v2/jobs/{id}/` has `status` (pending, waiting,
running, then successful, failed, error or canceled), `elapsed` (seconds) and `job_explanation`;
`GET /api/v2/jobs/{id}/stdout/?format=txt` is the output as text. Auth: an OAuth2 / personal access
token, `Authorization: Bearer <token>`. A template given by name is looked up once
(`GET /api/v2/job_templates/?name=<name>`).

Nothing raises for what AWX answers: a refused launch (401, 403, 404, 400) or an unreachable AWX is an
Outcome `not_started` with AWX's words; a job still running when the route's timeout passes is
`timeout`, with its link.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import SecretStr, field_validator

from adapters.desks.transport import https_url, tls_context
from bridge.core.automation import Outcome, Request, RunnerSettings

FINAL = frozenset({"successful", "failed", "error", "canceled"})
MAX_STDOUT = 1 << 20  # bytes of output read for the note's last lines


class AwxConfig(RunnerSettings):
    """`automation: {<name>: {kind: awx, url, token}}`."""

    kind: Literal["awx"]
    url: str  # the controller's base URL, e.g. https://awx.example.com (AAP 2.5 gateway: .../api/controller)
    token: SecretStr
    poll: float = 2.0  # seconds between looks at a running job
    timeout: float = 10.0  # seconds for one API call
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled
    # Where a person sees a job; {url} and {id} are filled in. AWX's UI: /#/jobs/playbook/<id>/output.
    job_link: str = "{url}/#/jobs/playbook/{id}/output"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return https_url(value, "https://awx.example.com")

    def build(self, name: str, session: Any) -> AwxRunner:
        return AwxRunner(name, self, session)


class AwxError(Exception):
    """AWX refused a call or could not be reached: the run is `not_started` (or its result unknown)."""


class AwxRunner:
    def __init__(self, name: str, config: AwxConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.session = session
        self.api = config.url + "/api/v2"
        self._ssl = tls_context(config.ca_file, name)

    async def run(self, request: Request) -> Outcome:
        started = time.monotonic()
        try:
            template = await self._template_id(request.job_template)
            body = {"extra_vars": request.extra_vars}
            launched = await self._call("POST", f"/job_templates/{template}/launch/", body)
        except AwxError as exc:
            return Outcome(status="not_started", detail=f"AWX: {exc}")
        job = str(launched.get("job") or launched.get("id") or "")
        if not job:
            return Outcome(status="not_started", detail="AWX answered the launch without a job id")
        link = self.config.job_link.format(url=self.config.url, id=job)
        ignored = launched.get("ignored_fields") or {}
        detail = ""
        if isinstance(ignored, dict) and "extra_vars" in ignored:
            detail = "AWX ignored extra_vars: the template does not prompt for variables (ask_variables_on_launch)"
        deadline = started + request.timeout_s
        state: dict[str, Any] = {}
        while True:
            try:
                state = await self._call("GET", f"/jobs/{job}/")
            except AwxError as exc:
                if time.monotonic() >= deadline:
                    return Outcome(status="timeout", job=job, url=link, detail=f"AWX: {exc}")
                state = {}
            status = str(state.get("status", ""))
            if status in FINAL:
                break
            if time.monotonic() + self.config.poll > deadline:
                waited = time.monotonic() - started
                return Outcome(status="timeout", job=job, url=link, elapsed_s=waited, detail=detail)
            await asyncio.sleep(self.config.poll)
        explanation = str(state.get("job_explanation") or "")
        detail = "; ".join(part for part in (detail, explanation) if part)
        elapsed = state.get("elapsed")
        output = await self._tail(job, request.output_lines) if request.output_lines else []
        return Outcome(
            status=status,
            job=job,
            url=link,
            elapsed_s=float(elapsed) if isinstance(elapsed, int | float) else time.monotonic() - started,
            output=output,
            detail=detail,
        )

    async def _template_id(self, template: str) -> str:
        if template.isdigit():
            return template
        found = await self._call("GET", "/job_templates/", params={"name": template})
        results = found.get("results") or []
        if not results:
            raise AwxError(f"no job template named {template!r}")
        return str(results[0]["id"])

    async def _tail(self, job: str, lines: int) -> list[str]:
        try:
            text = await self._text(f"/jobs/{job}/stdout/", {"format": "txt"})
        except AwxError:
            return []
        return [line.rstrip() for line in text.splitlines()][-lines:]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}", "Accept": "application/json"}

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        for attempt in range(2):  # one more try after a 429 (a proxy's), honouring Retry-After
            try:
                async with self.session.request(
                    method, self.api + path, data=data, params=params, headers=headers, ssl=self._ssl,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                ) as resp:  # fmt: skip
                    raw = await resp.content.read(MAX_STDOUT)
                    if resp.status == 429 and attempt == 0:
                        await asyncio.sleep(min(_seconds(resp.headers.get("Retry-After")), 30.0))
                        continue
                    if resp.status >= 400:
                        raise AwxError(f"{resp.status} {_reason(raw)}".strip())
                    doc = orjson.loads(raw) if raw else {}
                    return doc if isinstance(doc, dict) else {}
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                raise AwxError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        raise AwxError("429 too many requests")

    async def _text(self, path: str, params: dict[str, str]) -> str:
        try:
            async with self.session.get(
                self.api + path, params=params, headers={**self._headers(), "Accept": "text/plain"}, ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as resp:  # fmt: skip
                raw = await resp.content.read(MAX_STDOUT)
                if resp.status >= 400:
                    raise AwxError(f"{resp.status} {_reason(raw)}")
                return raw.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AwxError(type(exc).__name__) from None


def _reason(raw: bytes) -> str:
    """AWX's words: `detail`, or the first field error (`{"extra_vars": ["..."]}`)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", errors="replace")
    if isinstance(doc, dict):
        if isinstance(doc.get("detail"), str):
            return str(doc["detail"])[:300]
        for key, value in doc.items():
            text = value[0] if isinstance(value, list) and value else value
            return f"{key}: {text}"[:300]
    return ""


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value or 1))
    except ValueError:
        return 1.0
