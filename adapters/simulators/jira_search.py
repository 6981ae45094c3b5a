"""Search on the simulated Jira: `/search/jql` (Cloud) and the legacy `/search` (Data Center; 410 on Cloud).

`/search/jql` pages with `nextPageToken` and `isLast` and, without `fields`, shows only issue ids;
`expand=changelog` (both searches) adds each issue's changelog histories, the newest 100;
issues younger than the `search_lag_s` knob are not found yet (Cloud search is eventually
consistent). `/search` pages with `startAt`, `maxResults` and `total` and shows navigable fields.
JQL per adapters.simulators.jira_jql.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from adapters.simulators.jira_jql import JqlError, parse
from adapters.simulators.jira_store import Issue, JiraError
from adapters.simulators.jira_views import SETTINGS, STORE, api_version, dumps, issue_json, read_json


def add_search_routes(app: web.Application) -> None:
    for path in ("/rest/api/{version}/search/jql", "/rest/api/{version}/search"):
        app.router.add_get(path, _search)
        app.router.add_post(path, _search)


# -- search --------------------------------------------------------------------------------------


async def _search(request: web.Request) -> web.Response:
    version = api_version(request)
    store, settings = request.app[STORE], request.app[SETTINGS]
    new_api = request.path.endswith("/search/jql")
    if new_api and not store.cloud:
        raise web.HTTPNotFound()
    if not new_api and store.cloud:
        raise JiraError(
            410,
            "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API."
            " A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046",
        )
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST":
        params |= await read_json(request)
    try:
        query = parse(str(params.get("jql", "")), settings["indexed"], store.time_zone)
    except JqlError as exc:
        raise JiraError(400, str(exc)) from None
    now = time.monotonic()
    visible = [i for i in store.issues.values() if not new_api or now - i.created_at >= settings["lag"]]
    rows = query.select([issue.search_row() | {"_issue": issue} for issue in visible])
    found: list[Issue] = [row["_issue"] for row in rows]
    limit = int(params.get("maxResults", 50))
    fields = params.get("fields")
    wanted = ",".join(fields) if isinstance(fields, list) else fields
    expand = params.get("expand") or ""
    changelog = "changelog" in (",".join(expand) if isinstance(expand, list) else str(expand))
    if new_api:
        start = int(params.get("nextPageToken") or 0)
        page = found[start : start + limit]
        answer: dict[str, Any] = {
            "issues": [issue_json(request, i, version, wanted or "id", changelog=changelog) for i in page]
        }
        answer["isLast"] = start + limit >= len(found)
        if not answer["isLast"]:
            answer["nextPageToken"] = str(start + limit)
        return web.json_response(answer, dumps=dumps)
    start = int(params.get("startAt", 0))
    page = found[start : start + limit]
    return web.json_response(
        {
            "expand": "names,schema",
            "startAt": start,
            "maxResults": limit,
            "total": len(found),
            "issues": [issue_json(request, i, version, wanted or "*navigable", changelog=changelog) for i in page],
        },
        dumps=dumps,
    )
