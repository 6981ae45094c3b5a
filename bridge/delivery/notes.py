"""The text of work notes: what changed in an incident, one line per change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def change_line(change: dict[str, Any]) -> str:
    if isinstance(change.get("text"), str):  # a note written whole (an automation's result)
        return str(change["text"])
    alert = change.get("alert") or {}
    head = f"[{alert.get('status', '?')}] {alert.get('name') or alert.get('identity', '?')}"
    if alert.get("resource"):
        head += f" on {alert['resource']}"
    if alert.get("severity"):
        head += f" ({alert['severity']})"
    line = f"{head}: {change.get('reason', 'changed')}"
    if alert.get("summary") and not change.get("followup"):  # a follow-up's reason is its own text
        line += f" - {alert['summary']}"
    return line


def acknowledged(changes: Sequence[dict[str, Any]]) -> bool:
    """Whether the changes of a note include an acknowledgement (`ticket.acknowledge_fields` go with it)."""
    return any(c.get("followup") == "acknowledgement" for c in changes)


def note_text(changes: Sequence[dict[str, Any]]) -> str:
    """One change is one line; several become a list under a count, so a storm is one note."""
    lines = [change_line(c) for c in changes]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} changes:\n" + "\n".join(f"- {line}" for line in lines)
