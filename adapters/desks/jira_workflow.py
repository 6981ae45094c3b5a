"""Jira workflow transitions for `JiraDesk`'s resolve and reopen: which one to take, and what its screen requires.

The transition named in the config (`resolve_transition`, `reopen_transition`) is taken when the issue
offers it; else the first one into (resolve) or out of (reopen) the "done" status category, but never
one into a status in `closed_statuses`: closing is a human's call, or the configured transition's. The
transitions are listed with `expand=transitions.fields`, so each carries its screen: the fields it
shows, and which of them it requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pick(transitions: list[dict[str, Any]], wanted: str, *, done: bool, closed: list[str]) -> dict[str, Any] | None:
    """The transition called `wanted`; else the first into (done) or out of (not done) the done category.

    The fallback never picks a transition into one of the `closed` statuses: closing is a human's
    call, or the configured transition's.
    """
    for transition in transitions:
        if str(transition.get("name", "")).casefold() == wanted.casefold():
            return transition
    for transition in transitions:
        to = transition.get("to") or {}
        category = str((to.get("statusCategory") or {}).get("key", ""))
        if (category == "done") == done and str(to.get("name", "")) not in closed:
            return transition
    return None


def missing(screen: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """The names of the fields a transition's screen requires that `values` does not give."""
    return [
        str(meta.get("name", key))
        for key, meta in screen.items()
        if isinstance(meta, dict) and meta.get("required") and key not in values
    ]
