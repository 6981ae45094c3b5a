"""How the simulated Jira shows an issue in JSON (per API version and `fields` selection), and reads bodies."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from adapters.simulators.jira_links import LINK_TYPES
from adapters.simulators.jira_store import (
    CATEGORY_IDS,
    CATEGORY_NAMES,
    SCREEN,
    STATUSES,
    Issue,
    JiraError,
    JiraStore,
    rich,
)

STORE = web.AppKey("jira_store", JiraStore)
SETTINGS = web.AppKey("jira_settings", dict[str, Any])  # auth, indexed properties, search lag


def api_version(request: web.Request) -> int:
    """The REST API version of the path: 2, 3 (Cloud only) or latest (2); otherwise Jersey's 404."""
    text = request.match_info["version"]
    number = {"2": 2, "3": 3, "latest": 2}.get(text)
    if number is None or (number == 3 and not request.app[STORE].cloud):
        raise web.HTTPNotFound()
    return number


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def read_json(request: web.Request, *, any_json: bool = False) -> Any:
    """The request's JSON body (an object unless `any_json`), or Jira's 400 for an unreadable one."""
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise JiraError(400, "Unexpected character in the request body: not JSON") from None
    if not any_json and not isinstance(body, dict):
        raise JiraError(400, "Can not deserialize the request body: expected a JSON object")
    return body


def status_json(name: str) -> dict[str, Any]:
    status_id, category = STATUSES[name]
    return {
        "id": status_id,
        "name": name,
        "statusCategory": {"id": CATEGORY_IDS[category], "key": category, "name": CATEGORY_NAMES[category]},
    }


def issue_json(
    request: web.Request, issue: Issue, version: int, wanted: str | None, *, changelog: bool = False
) -> dict[str, Any]:
    """The issue as `GET /issue/{key}` and the searches show it; `wanted` is the `fields` parameter,
    `changelog` the `expand=changelog` of a search."""
    out = issue_body(str(request.url.origin()), issue, version, wanted)
    if changelog:
        histories = issue.histories[-100:]  # a search expands at most the 100 newest histories
        out["changelog"] = {"startAt": 0, "maxResults": len(histories), "total": len(issue.histories)}
        out["changelog"]["histories"] = histories
    return out


def issue_body(origin: str, issue: Issue, version: int, wanted: str | None) -> dict[str, Any]:
    """The issue's JSON for a site at `origin` (webhooks have no request to take it from)."""
    out: dict[str, Any] = {"id": issue.id}
    if wanted == "id":
        return out
    out |= {"key": issue.key, "self": f"{origin}/rest/api/{version}/issue/{issue.id}"}
    every: dict[str, Any] = {
        "project": {"id": issue.project.id, "key": issue.project.key},
        "issuetype": {"name": issue.fields.get("issuetype")},
        "status": status_json(issue.status),
        "resolution": {"name": issue.resolution} if issue.resolution else None,
        "created": issue.created,
        "updated": issue.updated or issue.created,
        "issuelinks": issuelinks(origin, issue, version),
        "comment": {
            "comments": [
                {k: v for k, v in c.items() if k != "jsdPublic"} | {"body": rich(c["body"], version)}
                for c in issue.comments
            ],
            "maxResults": len(issue.comments),
            "total": len(issue.comments),
            "startAt": 0,
        },
    }
    for name, kind in SCREEN.items():
        value = issue.fields.get(name)
        if kind == "rich":
            value = rich(value, version)
        elif kind == "named" and value is not None:
            value = {"name": value}
        elif kind == "components":
            value = [{"name": c} for c in value or []]
        elif kind == "labels":
            value = value or []
        every[name] = value
    names = [n.strip() for n in (wanted or "*all").split(",") if n.strip()]
    if "*all" in names or "*navigable" in names:
        out["fields"] = every
    else:
        out["fields"] = {n: every[n] for n in names if n in every}
    return out


def issuelinks(origin: str, issue: Issue, version: int) -> list[dict[str, Any]]:
    """`fields.issuelinks` of an issue: each link with the other issue on its side."""
    out = []
    for made in issue.links:
        kind = next(k for k in LINK_TYPES if k["id"] == made["type"])
        other, side = (made["inward"], "inwardIssue") if made["outward"] is issue else (made["outward"], "outwardIssue")
        out.append(
            {
                "id": made["id"],
                "self": f"{origin}/rest/api/{version}/issueLink/{made['id']}",
                "type": {**kind, "self": f"{origin}/rest/api/{version}/issueLinkType/{kind['id']}"},
                side: {
                    "id": other.id,
                    "key": other.key,
                    "self": f"{origin}/rest/api/{version}/issue/{other.id}",
                    "fields": {
                        "summary": other.fields.get("summary", ""),
                        "status": status_json(other.status),
                        "issuetype": {"name": other.fields.get("issuetype")},
                    },
                },
            }
        )
    return out
