"""The automation contract: a runner (AWX / Ansible Automation Platform, Event-Driven Ansible) that a
route's `automation:` sets off when an incident opens, reopens or resolves, and what it answers.

Runners are plugins, like desks: a pydantic settings model with `kind: Literal[...]` and
`build(name, session) -> Runner`, registered under the entry-point group
`alert_ticket_bridge.automation` (built-ins: `adapters/automation/`). The delivery stage
(`bridge/delivery/automation.py`) claims the run, keeps to the runner's rate limit, calls `run` beside
the desk work and writes the `Outcome` as a work note through the incident's outbox.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class Outcome(BaseModel):
    """What became of one run, for its work note."""

    model_config = ConfigDict(frozen=True)

    # successful, failed, error, canceled (AWX's final job states); timeout (still running when the
    # route's timeout passed); not_started (the runner refused or could not be reached); sent (EDA:
    # the event was accepted; what the rulebook does is its own).
    status: str
    detail: str = ""  # one line: the runner's error, or what was launched
    job: str = ""  # the runner's id of the job
    url: str = ""  # where a person sees the job (AWX's UI)
    elapsed_s: float | None = None
    output: list[str] = Field(default_factory=list)  # the last lines of the job's output

    @property
    def ok(self) -> bool:
        return self.status in ("successful", "sent")


@dataclass(frozen=True)
class Request:
    """One run: what the route asked for, rendered over the alert and the incident."""

    runner: str
    trigger: str  # open, reopen, resolve
    incident: str
    route: str
    ticket: str  # the ticket's display id
    ticket_url: str
    job_template: str  # AWX: the template's id (or name); EDA: unused
    extra_vars: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)  # EDA: the incident event to post
    timeout_s: float = 600.0
    output_lines: int = 20


class Runner(Protocol):
    name: str

    async def run(self, request: Request) -> Outcome:
        """Start the job and follow it until it ends or the request's timeout passes. Never raises for
        what the runner answers: a refusal or an unreachable runner is an Outcome (`not_started`)."""
        ...


class RunnerSettings(BaseModel):
    """Base of every runner kind's settings (`automation:` in the mapping, by runner name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # Runs started per second across all replicas (a token bucket in Redis), and the burst allowed.
    per_second: float = Field(1.0, gt=0)
    burst: int = Field(5, ge=1)

    @abstractmethod
    def build(self, name: str, session: Any) -> Runner:
        """The runner these settings describe (each kind's settings make their own)."""
