"""Workflow transitions on the simulated Jira: `GET` and `POST /rest/api/{2,3}/issue/{key}/transitions`.

Follows Atlassian's "Get transitions" (`getTransitions`) and "Transition issue" (`doTransition`),
https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/: the transitions the
issue's project workflow offers from its status (adapters.simulators.jira_store), each with its
target status and `hasScreen`, and the screen's fields (resolution, with its allowed values) on
`expand=transitions.fields`. A transition takes `{"transition": {"id"}}` and only fields on its
screen; a screen with the resolution requires one; into a done status the resolution is the
screen's or the post function's; 204 with no body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.simulators.jira_store import CATEGORY_IDS, CATEGORY_NAMES, RESOLUTIONS, STATUSES, JiraError
from adapters.simulators.jira_views import STORE, read_json


async def get_transitions(request: web.Request) -> web.Response:
    """Get transitions: the issue's transitions from its status, with their screens' fields on
    `expand=transitions.fields`."""
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    expand = "transitions.fields" in request.query.get("expand", "")
    out = []
    for t in store.transitions(issue):
        status_id, category = STATUSES[t.to]
        shown: dict[str, Any] = {
            "id": t.id,
            "name": t.name,
            "hasScreen": bool(t.screen),
            "isGlobal": False,
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "to": {
                "id": status_id,
                "name": t.to,
                "statusCategory": {"id": CATEGORY_IDS[category], "key": category, "name": CATEGORY_NAMES[category]},
            },
        }
        if expand:
            shown["fields"] = {
                name: {
                    "required": True,
                    "name": name.capitalize(),
                    "key": name,
                    "operations": ["set"],
                    "allowedValues": [{"name": r} for r in RESOLUTIONS],
                }
                for name in t.screen
            }
        out.append(shown)
    return web.json_response({"transitions": out})


async def do_transition(request: web.Request) -> web.Response:
    """Transition issue: 204; 403 on a read-only project; 400 for a transition not offered from the
    issue's status, a field off its screen, or a missing or unknown resolution."""
    store = request.app[STORE]
    issue = store.get(request.match_info["key"])
    store.writable(issue, "transition issues")
    body = await read_json(request)
    wanted = str((body.get("transition") or {}).get("id", ""))
    chosen = next((t for t in store.transitions(issue) if t.id == wanted), None)
    if chosen is None:
        raise JiraError(400, f"Transition id '{wanted}' is not valid for this issue.")
    values, updates = body.get("fields") or {}, body.get("update") or {}
    off_screen = [f for f in (*values, *updates) if f not in chosen.screen]
    if off_screen:
        message = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."
        raise JiraError(400, errors={f: message.format(f) for f in off_screen})
    resolution = values.get("resolution")
    name = resolution.get("name") if isinstance(resolution, dict) else None
    if "resolution" in chosen.screen and name not in RESOLUTIONS:
        raise JiraError(400, errors={"resolution": "Resolution is required."})
    done = STATUSES[chosen.to][1] == "done"
    store.move(issue, chosen.to, (name or chosen.resolution) if done else None)
    return web.Response(status=204)
