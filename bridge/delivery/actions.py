"""What each outbox action does at the desk: open (idempotently), note, reopen, resolve.

`Delivery` (bridge/delivery/worker.py) holds the incident's lease and decides when an action goes;
`DeskActions.apply` makes its calls, with the templates rendered and field ownership applied.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from bridge.core import keys
from bridge.core.config import Route
from bridge.core.desk import ChangeRef, Desk, TicketPhase, TicketRef
from bridge.core.errors import Cause, DeskError, DeskRejected, DeskTransient
from bridge.core.models import base36
from bridge.core.policy import DuringChange
from bridge.core.routing import is_storm_base
from bridge.core.templates import alert_context, render
from bridge.delivery import changes, guard, ownership
from bridge.delivery.changes import ChangeChecks, Checked
from bridge.delivery.guard import BreakerOpen, DeskGuard
from bridge.delivery.notes import acknowledged, note_text
from bridge.delivery.problems import Problems
from bridge.runtime import outbox, routebook, sync
from bridge.runtime.context import Runtime
from bridge.runtime.outbox import Action

log = structlog.get_logger("bridge.delivery.worker")
ROTATED = "rotated"  # apply's answer when a closed ticket made the incident start a new epoch
NOT_SENT = (Cause.REFUSED, Cause.DNS, Cause.TLS)  # failures that say the request never reached the desk
REFUSED_STATUSES = (429, 503)  # answers that say the desk did not act on it (throttled, unavailable)


class HeldByChange(BreakerOpen):
    """Not a desk answer: an approved change covers the incident's configuration item (route `change:`,
    `during_change: suppress`), so its open waits, in the outbox, until the change's window ends."""


class Settling(BreakerOpen):
    """Not a desk answer: an open whose outcome is unknown waits for the desk's search to catch up
    (`Desk.find_lag`) before it is made again; the incident waits, the desk's breaker stays as it is."""


class DeskActions:
    def __init__(self, runtime: Runtime, guard: DeskGuard) -> None:
        self.rt = runtime
        self.guard = guard
        self.changes = ChangeChecks(runtime, guard)
        self.problems = Problems(runtime, guard)

    async def apply(self, ik: keys.IncidentKeys, action: Action, view: dict[bytes, bytes]) -> str:
        """Make one action's desk calls; `view` is the incident's state hash as read with the outbox."""
        route = await self.bind(action, view)
        desk = self.rt.desks[action.desk]
        ref = outbox.ticket_ref(view, action.epoch)
        match action.kind:
            case "OPEN":
                if ref is None:
                    cleared = await self._cleared_while_held(ik, action, view)
                    if cleared:
                        return cleared
                    ref = await self._open(ik, desk, route, action, view)
                if action.changes:
                    await self._note(ik, desk, ref, route, action, [])
                return ref.display or ref.id
            case "NOTE" | "REOPEN" | "RESOLVE" if ref is None and f"suppressed:{action.epoch}".encode() in view:
                # Its open was held by a change and the incident cleared meanwhile: no ticket. Firing again
                # (outside a covering change) opens one now.
                if action.kind == "RESOLVE" or view.get(b"state") != b"open":
                    return f"no ticket: suppressed during change {view[f'suppressed:{action.epoch}'.encode()].decode()}"
                ref = await self._open(ik, desk, route, action, view)
                if action.changes:
                    await self._note(ik, desk, ref, route, action, [])
                return ref.display or ref.id
            case "MERGE":
                if ref is None:  # its open never reached the desk (dead-lettered): nothing to close
                    return "no ticket"
                await self._merge(desk, ref, action)
            case "NOTE" | "REOPEN" | "RESOLVE" if ref is None:
                raise DeskRejected(
                    f"no ticket for incident {action.incident}: its open was dead-lettered",
                    desk=desk.name,
                    action=action.kind.lower(),
                )
            case "NOTE":
                assert ref is not None
                await self._note(ik, desk, ref, route, action, [])
            case "REOPEN":
                assert ref is not None
                if await self._reopen(ik, desk, ref, route, action) is ROTATED:
                    return ROTATED
            case "RESOLVE":
                assert ref is not None
                context = self._context(action, route)
                note = _render_or_reject(route.ticket.resolve_note, context, desk.name)
                extra = {k: _render_or_reject(t, context, desk.name) for k, t in route.ticket.resolve_fields.items()}
                await self.guard.call(desk, "resolve", desk.resolve(ref, note, extra))
            case _:
                raise DeskRejected(f"unknown action {action.kind}", desk=desk.name, action=action.kind)
        return ref.display or ref.id

    async def _reopen(self, ik: keys.IncidentKeys, desk: Desk, ref: TicketRef, route: Route, action: Action) -> str:
        """Reopen the ticket, unless a human closed it (or set a won't-fix state): then a new epoch."""
        current = await self.guard.call(desk, "state", desk.state(ref))
        if current.phase is TicketPhase.CLOSED or current.raw_state in route.lifecycle.no_reopen_states:
            state = current.raw_state or current.phase.value
            reason = f"ticket {ref.display or ref.id} is {state} in the desk: new ticket"
            new_epoch = base36(self.rt.clock())
            await self.rt.scripts.rotate_epoch(ik.base, action.epoch, new_epoch, self.rt.clock(), reason)
            log.info("epoch_rotated", reason=reason, epoch=new_epoch)
            return ROTATED
        text = note_text([{"reason": "reopened: fired again within the reopen window", "alert": action.alert}])
        if action.changes:
            text += "\n" + note_text(action.changes)
        await self.guard.call(desk, "reopen", desk.reopen(ref, text))
        lines = await self._sync(ik, desk, ref, route, action)
        if lines:
            await self.guard.call(desk, "note", desk.note(ref, "\n".join(lines)))
        return "reopened"

    async def _note(
        self, ik: keys.IncidentKeys, desk: Desk, ref: TicketRef, route: Route, action: Action, lines: list[str]
    ) -> None:
        """One work note for the coalesced changes, with what field ownership has to say; with an
        acknowledgement among them, the route's `acknowledge_fields` (a desk state) are set first (a
        retry sets them again, harmlessly, rather than write the note twice)."""
        if route.ticket.acknowledge_fields and acknowledged(action.changes):
            context = self._context(action, route, action.changes[-1].get("alert"))
            fields = {k: _render_or_reject(t, context, desk.name) for k, t in route.ticket.acknowledge_fields.items()}
            await self.guard.call(desk, "update", desk.update(ref, fields))
        lines = [note_text(action.changes), *lines, *await self._sync(ik, desk, ref, route, action)]
        await self.guard.call(desk, "note", desk.note(ref, "\n".join(line for line in lines if line)))

    async def _sync(self, ik: keys.IncidentKeys, desk: Desk, ref: TicketRef, route: Route, action: Action) -> list[str]:
        latest = action.changes[-1]["alert"] if action.changes and action.changes[-1].get("alert") else action.alert
        if not latest:
            return []
        context = self._context(action, route, latest)
        try:
            return await ownership.sync(self.rt.redis, ik, desk, ref, route, action.epoch, context)
        except ValueError as exc:
            raise DeskRejected(str(exc), desk=desk.name, action="render") from exc

    async def _open(
        self, ik: keys.IncidentKeys, desk: Desk, route: Route, action: Action, view: dict[bytes, bytes]
    ) -> TicketRef:
        redis = self.rt.redis
        marker, sent = f"opening:{action.epoch}", f"sent:{action.epoch}"
        lag_ms = int(getattr(desk, "find_lag", 0.0) * 1000)  # how long the desk's search may trail a create
        ref: TicketRef | None = None
        fields: dict[str, str] = {}
        if marker.encode() in view and not action.marked:
            # An earlier open's outcome is unknown (timeout, crash): the desk may hold the record.
            ref = await self.guard.call(desk, "find", desk.find(action.incident))
            if ref is not None:
                log.info("ticket_adopted", ticket=ref.display or ref.id)
            elif lag_ms:
                await self._settled(ik, desk, action, view, lag_ms)
        checked, adopted = Checked(""), ref is not None
        if ref is None:
            context = self._context(action, route)
            if route.change is not None:
                checked = await self._check_change(ik, desk, route, action, view, context)
            overlay = route.storm.fields if route.storm and is_storm_base(ik.base, route.id) else None
            try:
                fields = ownership.open_fields(route, context, overlay)
            except ValueError as exc:
                raise DeskRejected(str(exc), desk=desk.name, action="render") from exc
            started = self.rt.clock()
            if not action.marked:  # else taking the lease set it
                written: dict[str | bytes, str | int] = {marker: action.incident}
                if lag_ms:  # when this open is sent, should its answer be lost
                    written[sent] = started
                    view[sent.encode()] = str(started).encode()
                await redis.hset(ik.state, mapping=written)  # type: ignore[arg-type]
            action.marked = False  # from here on the outcome may be unknown: a retry looks it up first
            view[marker.encode()] = action.incident.encode()
            try:
                ref = await self.guard.call(desk, "open", desk.open(action.incident, fields))
            except DeskTransient as exc:
                if lag_ms:  # its answer was lost: when it was sent, or 0 if the desk cannot have acted on it
                    acted = exc.cause not in NOT_SENT and exc.status not in REFUSED_STATUSES
                    await redis.hset(ik.state, sent, started if acted else 0)
                    view[sent.encode()] = str(started if acted else 0).encode()
                raise
            log.info("ticket_opened", desk=desk.name, ticket=ref.display or ref.id)
        ticket = orjson.dumps([ref.id, ref.display, ref.url])
        entries = ownership.written(action.epoch, fields)
        entries[f"ticket:{action.epoch}"] = ticket
        pipe = redis.pipeline(transaction=False)
        sync.record_ticket(pipe, desk.name, ref.id, action.incident)  # the loop back finds the incident by it
        if action.changes:  # a note follows: the ticket is recorded before it is called
            pipe.hset(ik.state, mapping=entries)
            pipe.hdel(ik.state, marker, sent)
            await self.rt.scripts.execute(pipe)
        else:  # recorded with the action's own bookkeeping, one round trip
            await self.rt.scripts.execute(pipe)
            action.writes, action.clears = entries, [marker, sent]
        view[f"ticket:{action.epoch}".encode()] = ticket
        view.pop(marker.encode(), None)
        view.pop(sent.encode(), None)
        if not adopted:
            await self._after_change_check(ik, desk, route, action, view, ref, checked)
        if route.problem is not None:
            await self.problems.opened(ik, desk, route.problem, action.epoch, ref, self._context(action, route))
        return ref

    async def _check_change(
        self,
        ik: keys.IncidentKeys,
        desk: Desk,
        route: Route,
        action: Action,
        view: dict[bytes, bytes],
        context: dict[str, Any],
    ) -> Checked:
        """Ask whether an approved change covers the incident's CI now (route `change:`). With `suppress`,
        a covering change holds the open (HeldByChange: the incident waits, its open in the outbox, until
        the change's window ends); a failed check lets it open (fails open, audited)."""
        spec = route.change
        assert spec is not None
        checked = await self.changes.covering(desk, spec, context)
        if checked.failed:
            await changes.audit(self.rt, ik, action.incident, "check_failed", checked,
                                f"could not ask {desk.name} for a change on {checked.ci or 'the CI'}: "
                                f"{checked.failed}; opening the ticket (fails open)")  # fmt: skip
            return checked
        change = checked.change
        if change is None or spec.during_change is not DuringChange.SUPPRESS:
            return checked
        now = self.rt.clock()
        shown = change.display or change.id
        field = f"held:{action.epoch}"
        if view.get(field.encode()) != shown.encode():  # audited once per change that holds it
            await self.rt.redis.hset(ik.state, field, shown)
            view[field.encode()] = shown.encode()
            await changes.audit(self.rt, ik, action.incident, "suppressed", checked,
                                f"approved change {changes.describe(change)} covers {checked.ci}: no ticket "
                                "while it lasts")  # fmt: skip
            log.info("open_held_by_change", change=shown, ci=checked.ci)
        until = changes.held_until(change, spec, now)
        raise HeldByChange(
            f"approved change {shown} covers {checked.ci}: the ticket waits until its window ends",
            desk=desk.name,
            action="open",
            retry_after=(until - now) / 1000,
        )

    async def _after_change_check(
        self,
        ik: keys.IncidentKeys,
        desk: Desk,
        route: Route,
        action: Action,
        view: dict[bytes, bytes],
        ref: TicketRef,
        checked: Checked,
    ) -> None:
        """After a ticket opened: link it to the change it opened during (`annotate`), or note that the
        change that held it has ended while its alerts still fire. Never fails the open."""
        held = view.pop(f"held:{action.epoch}".encode(), None)
        note, link = "", None
        if held is not None:
            await self.rt.redis.hdel(ik.state, f"held:{action.epoch}")
            ended = Checked(checked.ci, ChangeRef(id=held.decode(), display=held.decode()))
            note = f"The alerts fired during approved change {held.decode()}; its window is over and they still fire."
            await changes.audit(self.rt, ik, action.incident, "ended", ended, note + " Ticket opened.")
        elif checked.change is not None:  # annotate
            link = checked.change
            note = f"Opened during approved change {changes.describe(link)} on {checked.ci}."
            if link.url:
                note += f" {link.url}"
        if not note:
            return
        linker = getattr(desk, "link_change", None)
        try:
            if link is not None and linker is not None:
                await self.guard.once(desk, "link_change", linker(ref, link, note))
            else:
                await self.guard.once(desk, "note", desk.note(ref, note))
        except DeskError as exc:
            log.warning("change_link_failed", desk=desk.name, ticket=ref.display or ref.id, error=str(exc))
            await changes.audit(self.rt, ik, action.incident, "link_failed", checked, f"{note} Not written: {exc}")
            return
        if link is not None:
            await changes.audit(self.rt, ik, action.incident, "annotated", checked,
                                f"ticket {ref.display or ref.id} linked to {link.display or link.id}")  # fmt: skip

    async def _cleared_while_held(self, ik: keys.IncidentKeys, action: Action, view: dict[bytes, bytes]) -> str:
        """An open held by a change whose incident no longer fires: no ticket at all (its later actions of
        the epoch are skipped, unless it fires again). Returns the outcome, or "" to open as usual."""
        held = view.get(f"held:{action.epoch}".encode())
        if held is None or view.get(b"state") == b"open":
            return ""
        shown = held.decode()
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.hset(ik.state, f"suppressed:{action.epoch}", shown)
        pipe.hdel(ik.state, f"held:{action.epoch}")
        await self.rt.scripts.execute(pipe)
        view[f"suppressed:{action.epoch}".encode()] = held
        view.pop(f"held:{action.epoch}".encode(), None)
        reason = f"the alerts cleared during approved change {shown}: no ticket"
        await changes.audit(self.rt, ik, action.incident, "cleared", Checked("", ChangeRef(shown, shown)), reason)
        return f"no ticket: cleared during change {shown}"

    async def _settled(
        self, ik: keys.IncidentKeys, desk: Desk, action: Action, view: dict[bytes, bytes], lag_ms: int
    ) -> None:
        """An earlier open's outcome is unknown and the desk's search does not show it: open again only
        once the search would (`find_lag` after that open was sent; docs/desks.md). Until then raise
        Settling, and the incident waits. When it was sent is recorded with the open (`sent:<epoch>`, 0
        when the desk cannot have acted on it); a replica that died mid-open recorded nothing, so the
        wait then counts from now."""
        key = f"sent:{action.epoch}"
        now = self.rt.clock()
        raw = view.get(key.encode())
        if raw is None:
            await self.rt.redis.hset(ik.state, key, now)
            view[key.encode()] = str(now).encode()
        since = now if raw is None else int(raw)
        if since and now < since + lag_ms:
            wait = (since + lag_ms - now) / 1000
            log.info("open_outcome_unknown", desk=desk.name, search_again_in_s=round(wait, 1))
            raise Settling(
                f"{desk.name}: the outcome of an open of {action.incident} is unknown and search does not show it "
                f"yet; searching again in {wait:.1f}s before opening again",
                desk=desk.name,
                action="open",
                retry_after=wait,
            )

    async def _merge(self, desk: Desk, ref: TicketRef, action: Action) -> None:
        """Close a child's ticket as a duplicate of its topology parent's (bridge/runtime/lua/adopt.lua):
        linked where the desk can (the optional `Desk.close_duplicate`: ServiceNow's `parent_incident`),
        else resolved with a note naming the parent's ticket. Waits for the parent's ticket to open (up
        to PARENT_WAIT_MS; then the note names the parent's incident instead)."""
        base, _, epoch = action.into.rpartition(":")
        raw = await self.rt.redis.hget(keys.IncidentKeys(base).state, f"ticket:{epoch}") if base else None
        if raw is None and self.rt.clock() - self._merge_since(action) < PARENT_WAIT_MS:
            raise AwaitingParent(
                f"the ticket of {action.into}, which {action.incident} duplicates, is not open yet",
                desk=desk.name,
                action="merge",
                retry_after=1.0,
            )
        parent = TicketRef(*orjson.loads(raw)) if raw is not None else None
        shown = (parent.display or parent.id) if parent else action.into
        note = f"Closed as a duplicate of {shown}: its topology parent's ticket, which takes its alerts from now on."
        close = getattr(desk, "close_duplicate", None)
        if parent is not None and close is not None:
            await self.guard.call(desk, "close_duplicate", close(ref, parent, note))
        else:
            await self.guard.call(desk, "resolve", desk.resolve(ref, note, {}))

    @staticmethod
    def _merge_since(action: Action) -> int:
        """When the MERGE was decided (its entry's `at`)."""
        try:
            return int(orjson.loads(action.entries[0]).get("at") or 0)
        except (ValueError, AttributeError):
            return 0

    async def bind(self, action: Action, view: dict[bytes, bytes]) -> Route:
        """The route an action goes by and (`action.desk`) its desk. The route: as in the mapping, else, for
        a route gone from it, as it was when the incident opened its ticket (bridge.runtime.routebook). The
        desk: the one the incident opened its ticket in, while the mapping has it (a route may have moved
        to another desk since: its existing tickets stay where they are), else the route's."""
        if action.settings is not None:
            return action.settings
        route = self.rt.config.by_id(action.route)
        if route is None:
            retired = await routebook.lookup(self.rt, action.route)
            if retired is None:
                raise DeskRejected(
                    f"route {action.route!r} is no longer in the mapping and Redis has no record of it",
                    action=action.kind.lower(),
                )
            route = retired.route(view.get(b"settings", b"").decode())
        desk = view.get(b"desk", b"").decode()
        if desk not in self.rt.desks:
            desk = route.desk
        if desk not in self.rt.desks:
            raise DeskRejected(f"desk {desk!r} is no longer in the mapping", desk=desk, action=action.kind.lower())
        action.settings, action.desk = route, desk
        return route

    def _context(self, action: Action, route: Route, alert: dict[str, Any] | None = None) -> dict[str, Any]:
        incident = {"id": action.incident, "epoch": action.epoch, "route": route.name}
        return alert_context(alert or action.alert or {}, incident=incident, changes=action.changes)


PARENT_WAIT_MS = 600_000  # how long a MERGE waits for its parent's ticket to open


class AwaitingParent(guard.BreakerOpen):
    """Not a desk answer: a child's ticket is closed as a duplicate of its parent's only once that is
    open; the child's incident waits, the desk's breaker stays as it is."""


def _render_or_reject(template: str, context: dict[str, Any], desk: str) -> str:
    try:
        return render(template, context)
    except ValueError as exc:
        raise DeskRejected(str(exc), desk=desk, action="render") from exc
