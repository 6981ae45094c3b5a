"""The JSM Operations simulator's state (adapters.simulators.jsm_ops): its alerts, their report and
notes, the errors it answers, and the outgoing Webhook integration's body it pushes for each change."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from adapters.simulators.pusher import Pusher

# The outgoing Webhook integration's `action` for each REST action
VERBS = {"acknowledge": "Acknowledge", "unacknowledge": "UnAcknowledge", "close": "Close", "notes": "AddNote"}


class OpsError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        self.status, self.message, self.errors = status, message, errors
        super().__init__(message)

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "took": 0.001, "requestId": str(uuid.uuid4())}
        if self.errors:
            body["errors"] = self.errors
        return web.json_response(body, status=self.status, headers=headers)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class OpsStore:
    read_only: bool = False
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> alert, in creation order
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> its status
    requests: list[dict[str, Any]] = field(default_factory=list)
    _tiny: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    on_action: list[Any] = field(default_factory=list)  # callables taking (verb, alert, user, note)
    clock: Callable[[], str] = _now  # the time of a change (a test may tick it: `2026-...T10:00:00.000Z`)

    def apply(self, alert: dict[str, Any], name: str, user: str, note: str) -> tuple[bool, str]:
        """acknowledge, unacknowledge, close or notes on one alert: (done, the request's status text)."""
        now = self.clock()
        if name != "notes" and alert["status"] == "closed":
            return False, "Alert is already closed"
        since_created = epoch_ms(now) - epoch_ms(alert["createdAt"])
        if name == "close":
            alert["status"] = "closed"
            alert["closeNote"] = note
            alert["report"] |= {"closeTime": since_created, "closedBy": user}
            if note:
                alert["notes"].append({"note": note, "owner": user, "createdAt": now, "close": True})
            status = "Closed alert"
        elif name in ("acknowledge", "unacknowledge"):
            alert["acknowledged"] = name == "acknowledge"
            if name == "acknowledge":
                alert["report"] |= {"ackTime": since_created, "acknowledgedBy": user}
            if note:
                alert["notes"].append({"note": note, "owner": user, "createdAt": now})
            status = "Acknowledged alert" if name == "acknowledge" else "Unacknowledged alert"
        else:
            alert["notes"].append({"note": note, "owner": user, "createdAt": now})
            status = "Added note"
        alert["updatedAt"] = now
        verb = VERBS[name]
        for listener in self.on_action:
            listener(verb, alert, user, note)
        return True, status

    def act_as_human(self, alias: str, user: str, action: str, note: str = "") -> dict[str, Any]:
        """A person in JSM: acknowledge, unacknowledge, close or add a note (`notes`) on the alias's alert."""
        alert = self.find(alias, "alias")
        if alert is None or action not in VERBS:
            raise OpsError(404, f"no alert {alias!r} or no action {action!r}")
        self.apply(alert, action, user, note)
        return alert

    def reset(self) -> None:
        self.alerts.clear()
        self.outcomes.clear()
        self.requests.clear()
        self.read_only = False
        self._tiny = itertools.count(1)

    def writable(self) -> None:
        if self.read_only:
            raise OpsError(403, "The integration does not have the access rights for this action.")

    def open_alias(self, alias: str) -> dict[str, Any] | None:
        return next((a for a in self.alerts.values() if a["alias"] == alias and a["status"] == "open"), None)

    def find(self, identifier: str, kind: str) -> dict[str, Any] | None:
        """The alert an identifier names: by id, by tinyId, or by alias (the open one, else the newest)."""
        if kind == "id":
            return self.alerts.get(identifier)
        if kind == "tiny":
            return next((a for a in self.alerts.values() if a["tinyId"] == identifier), None)
        named = [a for a in self.alerts.values() if a["alias"] == identifier]
        return self.open_alias(identifier) or (named[-1] if named else None)

    def outcome(self, action: str, alert: dict[str, Any] | None, alias: str, ok: bool, status: str) -> str:
        request_id = str(uuid.uuid4())
        self.outcomes[request_id] = {
            "action": action,
            "processedAt": _now(),
            "integrationId": "sim-integration",
            "isSuccess": ok,
            "status": status,
            "alertId": alert["id"] if alert else "",
            "alias": alias,
        }
        return request_id


STORE = web.AppKey("jsm_ops_store", OpsStore)
PUSH = web.AppKey("jsm_ops_push", Pusher)


def webhook_body(verb: str, alert: dict[str, Any], user: str, note: str) -> dict[str, Any]:
    """What JSM Ops' outgoing Webhook integration posts for one action on an alert (Opsgenie's format)."""
    shown = {
        "alertId": alert["id"],
        "message": alert["message"],
        "tags": alert["tags"],
        "tinyId": alert["tinyId"],
        "entity": alert["entity"],
        "alias": alert["alias"],
        "createdAt": epoch_ms(alert["createdAt"]),
        "updatedAt": epoch_ms(alert["updatedAt"]) * 1_000_000,  # nanoseconds, as JSM sends it
        "username": user,
        "userId": f"user-{user}",
        "description": alert["description"],
        "priority": alert["priority"],
        "source": alert["source"],
    } | ({"note": note} if note else {})
    integration = {"integrationName": "Webhook", "integrationId": "sim-webhook", "integrationType": "Webhook"}
    return {"action": verb, "alert": shown, "source": {"name": "", "type": "web"}} | integration


def epoch_ms(text: str) -> int:
    """Epoch milliseconds of one of the simulator's times, exactly (no float rounding)."""
    return (datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z") - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
