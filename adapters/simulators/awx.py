"""A small AWX (automation controller) for tests and the demo: job templates, launches, jobs whose
status moves on with time, their output.

Written from AWX's API documentation (https://docs.ansible.com/automation-controller/latest/html/controllerapi/,
"Launching a Job Template", and the job resource's fields): token auth (`Authorization: Bearer`;
401 `{"detail": "Authentication credentials were not provided."}` without it), `GET
/api/v2/job_templates/?name=`, `POST /api/v2/job_templates/{id}/launch/` (201 with `job`,
`ignored_fields`; 404 `{"detail": "Not found."}` for an unknown template; 400 `{"extra_vars": [...]}`
for extra_vars that are not a mapping), `GET /api/v2/jobs/{id}/` (status pending → running → the
template's ending after its duration; `elapsed`, `failed`, `job_explanation`) and `GET
/api/v2/jobs/{id}/stdout/?format=txt`. `throttle` answers 429 with Retry-After to the next N calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

TOKEN = "awx-test-token"


@dataclass
class Template:
    id: int
    name: str
    ending: str = "successful"  # successful, failed, error, canceled
    duration: float = 0.3  # seconds from launch to the ending
    ask_variables_on_launch: bool = True
    output: list[str] = field(default_factory=lambda: ["PLAY [remediate] ***", "TASK [restart service] ***", "ok"])


@dataclass
class Job:
    id: int
    template: Template
    extra_vars: dict[str, Any]
    launched: float

    def status(self, now: float) -> str:
        age = now - self.launched
        if age < self.template.duration / 4:
            return "pending"
        if age < self.template.duration:
            return "running"
        return self.template.ending

    def view(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        done = status not in ("pending", "running")
        return {
            "id": self.id,
            "type": "job",
            "url": f"/api/v2/jobs/{self.id}/",
            "name": self.template.name,
            "job_template": self.template.id,
            "status": status,
            "failed": status in ("failed", "error"),
            "started": self.launched,
            "finished": self.launched + self.template.duration if done else None,
            "elapsed": round(min(now - self.launched, self.template.duration), 3),
            "job_explanation": "Job terminated due to error" if status == "error" else "",
            "extra_vars": orjson.dumps(self.extra_vars).decode(),
        }

    def stdout(self, now: float) -> str:
        lines = self.template.output
        if self.status(now) == "failed":
            lines = [*lines[:-1], 'fatal: [web-1]: FAILED! => {"msg": "service did not start"}', "PLAY RECAP ***"]
        return "\n".join(lines) + "\n"


@dataclass
class AwxStore:
    token: str = TOKEN
    templates: dict[int, Template] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)  # each launch's template and extra_vars
    throttle: int = 0  # the next N calls are answered 429

    def add(self, template: Template) -> Template:
        self.templates[template.id] = template
        return template


STORE = web.AppKey("awx_store", AwxStore)


def _error(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    store = request.app[STORE]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, {"detail": "Authentication credentials were not provided."})
    if token != store.token:
        return _error(401, {"detail": "Invalid token."})
    if store.throttle > 0:
        store.throttle -= 1
        return _error(429, {"detail": "Request was throttled."}, **{"Retry-After": "1"})
    response: web.StreamResponse = await handler(request)
    return response


async def _templates(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.query.get("name")
    found = [t for t in store.templates.values() if name is None or t.name == name]
    results = [{"id": t.id, "type": "job_template", "name": t.name} for t in found]
    return web.json_response({"count": len(results), "next": None, "previous": None, "results": results})


async def _launch(request: web.Request) -> web.Response:
    store = request.app[STORE]
    template = store.templates.get(_int(request.match_info["id"]))
    if template is None:
        return _error(404, {"detail": "Not found."})
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return _error(400, {"detail": "JSON parse error - not valid JSON"})
    extra = body.get("extra_vars", {}) if isinstance(body, dict) else None
    if isinstance(extra, str):  # AWX takes extra_vars as a JSON (or YAML) string too
        try:
            extra = orjson.loads(extra)
        except orjson.JSONDecodeError:
            return _error(400, {"extra_vars": ["Must be valid JSON or YAML."]})
    if not isinstance(extra, dict):
        return _error(400, {"extra_vars": ["Must be a valid JSON or YAML dictionary."]})
    ignored: dict[str, Any] = {}
    if extra and not template.ask_variables_on_launch:
        ignored["extra_vars"], extra = extra, {}
    job = Job(id=len(store.jobs) + 1, template=template, extra_vars=extra, launched=time.monotonic())
    store.jobs[job.id] = job
    store.launches.append({"template": template.id, "extra_vars": extra, "job": job.id})
    view = job.view(job.launched)
    return web.json_response({"job": job.id, "ignored_fields": ignored, **view}, status=201)


async def _job(request: web.Request) -> web.Response:
    job = request.app[STORE].jobs.get(_int(request.match_info["id"]))
    if job is None:
        return _error(404, {"detail": "Not found."})
    return web.json_response(job.view(time.monotonic()))


async def _stdout(request: web.Request) -> web.Response:
    job = request.app[STORE].jobs.get(_int(request.match_info["id"]))
    if job is None:
        return _error(404, {"detail": "Not found."})
    if request.query.get("format", "txt") not in ("txt", "txt_download"):
        return _error(400, {"detail": "only format=txt is simulated"})
    return web.Response(text=job.stdout(time.monotonic()), content_type="text/plain")


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def make_app(token: str = TOKEN) -> web.Application:
    """The simulator; its store (`app[STORE]`) holds templates 7 (succeeds) and 8 (fails) to start with."""
    app = web.Application(middlewares=[_auth])
    store = AwxStore(token=token)
    store.add(Template(7, "restart-service"))
    store.add(Template(8, "failing-remediation", ending="failed"))
    app[STORE] = store
    app.router.add_get("/api/v2/job_templates/", _templates)
    app.router.add_post("/api/v2/job_templates/{id}/launch/", _launch)
    app.router.add_get("/api/v2/jobs/{id}/", _job)
    app.router.add_get("/api/v2/jobs/{id}/stdout/", _stdout)
    return app
