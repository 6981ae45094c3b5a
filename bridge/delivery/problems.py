"""Problem records (route `problem:`): an incident key that opens `after` tickets within `within` opens one
problem record at the desk (`Desk.open_problem`, optional), once per window across replicas (the count and
the claim are one atomic step, bridge/runtime/lua/problem_count.lua), and its tickets are linked to it
(`Desk.link_problem`, with a note).

Never holds a ticket back: it runs after the ticket opened, and a desk that refuses or does not answer is
logged, counted and audited; a claim whose record could not be opened is given up, for a later ticket.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import structlog

from bridge.core import keys
from bridge.core.desk import Desk, TicketRef
from bridge.core.errors import DeskError
from bridge.core.models import base36
from bridge.core.policy import ProblemRecord
from bridge.core.templates import render
from bridge.delivery.guard import DeskGuard
from bridge.runtime.context import Runtime

log = structlog.get_logger("bridge.delivery.problems")
CLAIM_HOLD_MS = 60_000  # a claim not turned into a record within this is taken over by another replica


class Problems:
    def __init__(self, runtime: Runtime, guard: DeskGuard) -> None:
        self.rt = runtime
        self.guard = guard

    async def opened(
        self,
        ik: keys.IncidentKeys,
        desk: Desk,
        spec: ProblemRecord,
        epoch: str,
        ref: TicketRef,
        context: dict[str, Any],
    ) -> None:
        """Count a ticket the incident key just opened; open the problem record it makes due, or link it to
        the live one."""
        if getattr(desk, "open_problem", None) is None or getattr(desk, "link_problem", None) is None:
            return
        member = orjson.dumps([epoch, ref.id, ref.display, ref.url]).decode()
        token = uuid.uuid4().hex
        window = int(spec.within * 1000)
        now = self.rt.clock()
        reply = await self.rt.scripts.problem_count(ik, now, window, spec.after, member, token, CLAIM_HOLD_MS)
        match reply[0]:
            case "LINK":
                await self._link(ik, desk, ref, TicketRef(*orjson.loads(reply[1])))
            case "CLAIMED":
                tickets = [TicketRef(*orjson.loads(m)[1:]) for m in reply[1:]]
                opened = await self._open(ik, desk, spec, tickets, token, context)
                if opened is not None:
                    for ticket in tickets:
                        await self._link(ik, desk, ticket, opened)
            case _:  # counted (or another replica is opening the record right now)
                return

    async def _open(
        self,
        ik: keys.IncidentKeys,
        desk: Desk,
        spec: ProblemRecord,
        tickets: list[TicketRef],
        token: str,
        context: dict[str, Any],
    ) -> TicketRef | None:
        now = self.rt.clock()
        shown = [t.display or t.id for t in tickets]
        problem_context = {**context, "problem": {"count": len(tickets), "tickets": shown, "within": spec.within}}
        try:
            fields = {name: render(t, problem_context) for name, t in spec.fields.items()}
            correlation = f"{ik.base}:problem:{base36(now)}"
            opening = desk.open_problem(correlation, fields)  # type: ignore[attr-defined]
            problem: TicketRef = await self.guard.once(desk, "open_problem", opening)
        except (DeskError, ValueError) as exc:
            await self.rt.scripts.problem_release(ik, now, token)
            self._count(desk, "failed")
            log.warning("problem_record_failed", desk=desk.name, error=str(exc))
            await self._audit(ik, "failed", "", f"no problem record: {exc}")
            return None
        await self.rt.scripts.problem_set(ik, self.rt.clock(), int(spec.within * 1000), token, _record(problem))
        self._count(desk, "opened")
        log.info("problem_record_opened", desk=desk.name, problem=problem.display or problem.id, tickets=shown)
        reason = f"{len(tickets)} tickets within {spec.within:g}s: {', '.join(shown)}"
        await self._audit(ik, "opened", problem.display or problem.id, reason)
        return problem

    async def _link(self, ik: keys.IncidentKeys, desk: Desk, ref: TicketRef, problem: TicketRef) -> None:
        shown = problem.display or problem.id
        note = f"Linked to problem {shown}: this incident keeps recurring." + (f" {problem.url}" if problem.url else "")
        try:
            await self.guard.once(desk, "link_problem", desk.link_problem(ref, problem, note))  # type: ignore[attr-defined]
        except DeskError as exc:
            self._count(desk, "failed")
            log.warning("problem_link_failed", desk=desk.name, ticket=ref.display or ref.id, error=str(exc))
            await self._audit(ik, "link_failed", shown, f"{ref.display or ref.id} not linked: {exc}")
            return
        self._count(desk, "linked")
        await self._audit(ik, "linked", shown, f"{ref.display or ref.id} linked to {shown}")

    def _count(self, desk: Desk, outcome: str) -> None:
        self.rt.metrics.problem_records.labels(desk.name, outcome).inc()

    async def _audit(self, ik: keys.IncidentKeys, outcome: str, problem: str, reason: str) -> None:
        entry = {"at": self.rt.clock(), "decision": "PROBLEM", "outcome": outcome, "problem": problem,
                 "reason": self.rt.masker.text(reason)}  # fmt: skip
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.lpush(ik.audit, orjson.dumps(entry))
        pipe.ltrim(ik.audit, 0, self.rt.scripts.audit_cap - 1)
        await self.rt.scripts.execute(pipe)


def _record(ref: TicketRef) -> str:
    return orjson.dumps([ref.id, ref.display, ref.url]).decode()
