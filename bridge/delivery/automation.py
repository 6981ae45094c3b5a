"""Automation beside delivery: a route's `automation:` job, started once per incident epoch and trigger,
its result a work note through the incident's outbox.

When delivery has applied an OPEN (the ticket exists), a REOPEN or a RESOLVE of a route whose
`automation.on` names that trigger, it hands the action here and goes on with the outbox: the job runs
in a task of its own, so a slow or failed job never holds the ticket back. The task

1. claims the run: `HSETNX` of `auto:<trigger>:<epoch>` on the incident's state hash. One command,
   atomic across replicas, so an action delivered twice (a lease lost mid-drain) or by two replicas
   starts one job;
2. takes a token from the runner's shared bucket (`bucket:automation:<runner>`, take_token.lua, as the
   desks' `limits:`), waiting for one up to `RATE_WAIT_S`, else the note says it was skipped;
3. renders `extra_vars` over the alert and the incident (its ticket too) and calls the runner plugin
   (`adapters/automation/`: AWX launches and follows a job template, EDA posts the event), which
   answers an `Outcome` and never raises for what the runner says;
4. appends the note to the outbox (an entry with its `text`, after whatever the incident has queued)
   and marks the incident ready: the note is ordered, retried and dead-lettered like any other.

A replica that dies while following a job leaves the claim set and writes no note: the job itself runs
on in AWX. That is the price of never running a job twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from prometheus_client import Counter

from bridge.core import keys
from bridge.core.automation import Outcome, Request, Runner, RunnerSettings
from bridge.core.config import Route
from bridge.core.templates import alert_context, render
from bridge.runtime import outbox
from bridge.runtime.connect import is_cluster
from bridge.runtime.context import Runtime
from bridge.runtime.outbox import Action

log = structlog.get_logger("bridge.delivery.automation")
TRIGGERS = {"OPEN": "open", "REOPEN": "reopen", "RESOLVE": "resolve"}
RATE_WAIT_S = 60.0  # how long a run waits for its runner's rate limit before it is skipped
MAX_NOTE = 8_000  # characters of a note (the output's lines are cut to fit)
MAX_RUNNING = 100  # jobs followed at once by one replica; more are noted as skipped


class Automations:
    """The jobs one replica follows; `after` is called by delivery for each delivered action."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._tasks: set[asyncio.Task[None]] = set()
        self._built: dict[str, tuple[RunnerSettings, Runner]] = {}
        self.runs = _counter(runtime)

    def after(self, ik: keys.IncidentKeys, action: Action, view: dict[bytes, bytes]) -> None:
        """Start the route's job for this action, if its trigger is one the route names (no I/O here)."""
        route = action.settings
        trigger = TRIGGERS.get(action.kind)
        if route is None or route.automation is None or trigger not in route.automation.on:
            return
        ref = outbox.ticket_ref(view, action.epoch)
        ticket = (ref.display or ref.id, ref.url or "") if ref else ("", "")
        task = asyncio.create_task(self._run(ik, action, route, trigger, ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop following jobs (at shutdown): the jobs run on in the runner; their notes are not written."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, ik: keys.IncidentKeys, action: Action, route: Route, trigger: str, ticket: tuple[str, str]
    ) -> None:
        auto = route.automation
        assert auto is not None
        claim = f"auto:{trigger}:{action.epoch}"
        try:
            if not await self.rt.redis.hsetnx(ik.state, claim, self.rt.clock()):
                return  # another replica (or an earlier delivery of this action) started it
            outcome = await self._start(ik, action, route, trigger, ticket)
            self.runs.labels(auto.runner, outcome.status).inc()
            log.info(
                "automation_ran", incident=action.incident, runner=auto.runner, trigger=trigger,
                status=outcome.status, job=outcome.job,
            )  # fmt: skip
            await self._note(ik, action, note_text(auto.runner, trigger, outcome))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take delivery with it
            log.exception("automation_failed", incident=action.incident, runner=auto.runner)

    async def _start(
        self, ik: keys.IncidentKeys, action: Action, route: Route, trigger: str, ticket: tuple[str, str]
    ) -> Outcome:
        auto = route.automation
        assert auto is not None
        settings = self.rt.config.automation.get(auto.runner)
        if settings is None:
            return Outcome(status="not_started", detail=f"runner {auto.runner!r} is no longer in the mapping")
        if len(self._tasks) > MAX_RUNNING:
            return Outcome(status="not_started", detail=f"this replica already follows {MAX_RUNNING} jobs")
        if not await self._token(auto.runner, settings):
            return Outcome(status="not_started", detail=f"rate limit of runner {auto.runner!r}: no run within 60s")
        incident = {
            "id": action.incident, "epoch": action.epoch, "route": route.name, "trigger": trigger,
            "ticket": ticket[0], "ticket_url": ticket[1],
        }  # fmt: skip
        context = alert_context(action.alert or {}, incident=incident, ticket={"id": ticket[0], "url": ticket[1]})
        try:
            extra_vars = {name: render(template, context) for name, template in auto.extra_vars.items()}
        except ValueError as exc:
            return Outcome(status="not_started", detail=f"extra_vars: {exc}")
        event = {
            "incident": action.incident, "route": route.name, "state": trigger, "epoch": action.epoch,
            "ticket": {"id": ticket[0], "url": ticket[1]}, "alerts": [action.alert] if action.alert else [],
            "extra_vars": extra_vars,
        }  # fmt: skip
        request = Request(
            runner=auto.runner, trigger=trigger, incident=action.incident, route=route.name, ticket=ticket[0],
            ticket_url=ticket[1], job_template=auto.job_template, extra_vars=extra_vars, event=event,
            timeout_s=auto.timeout, output_lines=auto.output_lines,
        )  # fmt: skip
        runner = self._runner(auto.runner, settings)
        try:
            # The runner bounds its own calls; this bounds a runner that does not (a plugin's bug).
            return await asyncio.wait_for(runner.run(request), auto.timeout + 120)
        except TimeoutError:
            return Outcome(status="timeout", detail=f"runner {auto.runner!r} did not answer within the timeout")

    async def _token(self, runner: str, settings: RunnerSettings) -> bool:
        deadline = time.monotonic() + RATE_WAIT_S
        key = keys.automation_bucket(runner)
        while True:
            now = self.rt.clock()
            wait_ms = await self.rt.scripts.take_token(runner, now, settings.per_second, settings.burst, key)
            if not wait_ms:
                return True
            if time.monotonic() + wait_ms / 1000 > deadline:
                return False
            await asyncio.sleep(min(wait_ms, 5_000) / 1000)

    def _runner(self, name: str, settings: RunnerSettings) -> Runner:
        """The runner as configured now (built again after a reload changed it), on the shared session."""
        built = self._built.get(name)
        if built is None or built[0] != settings:
            built = (settings, settings.build(name, self.rt.session))
            self._built[name] = built
        return built[1]

    async def _note(self, ik: keys.IncidentKeys, action: Action, text: str) -> None:
        """The result as a NOTE entry at the end of the outbox, and the incident marked ready."""
        now = self.rt.clock()
        entry = {
            "kind": "NOTE", "incident": action.incident, "epoch": action.epoch, "route": action.route,
            "alert": action.alert, "reason": "automation", "text": text, "at": now,
        }  # fmt: skip
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.rpush(ik.outbox, orjson.dumps(entry))
        if is_cluster(self.rt.redis):  # the outbox and `ready` are on two masters there: the append first
            await self.rt.scripts.execute(pipe)
            pipe = self.rt.redis.pipeline(transaction=False)
        outbox.signal(pipe, {ik.base: now}, self.rt.shards)
        await self.rt.scripts.execute(pipe)


def note_text(runner: str, trigger: str, outcome: Outcome) -> str:
    """The work note: what ran, how it ended, how long it took, where to see it, its last lines."""
    words = {
        "successful": "succeeded", "failed": "FAILED", "error": "ended in an ERROR", "canceled": "was canceled",
        "timeout": "is still running (the bridge stopped following it)", "not_started": "could not start",
        "sent": "was sent",
    }  # fmt: skip
    what = f"Automation ({runner}, on {trigger})"
    if outcome.job:
        what += f": job {outcome.job}"
    lines = [f"{what} {words.get(outcome.status, outcome.status)}."]
    if outcome.detail:
        lines.append(outcome.detail)
    if outcome.elapsed_s is not None:
        lines.append(f"Elapsed: {outcome.elapsed_s:.1f}s")
    if outcome.url:
        lines.append(f"Job: {outcome.url}")
    if outcome.output:
        lines.append(f"Last {len(outcome.output)} lines of output:")
        budget = MAX_NOTE - sum(len(line) + 1 for line in lines) - 20
        tail: list[str] = []
        for line in reversed(outcome.output):
            budget -= len(line) + 1
            if budget < 0:
                break
            tail.append(line)
        lines.extend(reversed(tail))
    return "\n".join(lines)[:MAX_NOTE]


def _counter(runtime: Runtime) -> Any:
    """bridge_automation_runs_total{runner,status}, once per metrics registry."""
    registry = runtime.metrics.registry
    existing = getattr(registry, "_names_to_collectors", {}).get("bridge_automation_runs_total")
    if existing is not None:
        return existing
    return Counter(
        "bridge_automation_runs",
        "Automation runs by runner and how they ended (successful, failed, error, canceled, timeout, "
        "not_started, sent)",
        ["runner", "status"],
        registry=registry,
    )
