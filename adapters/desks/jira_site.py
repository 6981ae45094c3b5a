"""Requests to one Jira site's REST API, for `JiraDesk`: signed, to the site's API version, answers checked.

Cloud speaks `/rest/api/3` (rich text as ADF) and `/rest/api/2`; Data Center only `/rest/api/2` (rich text
as wiki-markup strings). `api_type: auto` asks `/rest/api/2/serverInfo` once which one it is. Auth is Basic
`email:api_token` (Cloud) or Bearer with a personal access token (Data Center). JQL searches go through
`/search/jql` on Cloud and `/search` on Data Center. An answer that is not 2xx is the desk error it
amounts to (adapters.desks.transport), with the messages of Jira's ErrorCollection, or of JSM's
ErrorResponse, as its reason.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from adapters.desks.events import Reader
from adapters.desks.jira_config import JiraSettings
from adapters.desks.transport import Answer, Transport, json_reason
from bridge.core.errors import DeskRejected


class JiraSite:
    """The REST API of the site a `JiraSettings` names, on the desk's transport."""

    def __init__(self, name: str, config: JiraSettings, transport: Transport) -> None:
        self.name = name
        self._config = config
        self._http = transport
        if config.token is not None:
            auth = "Bearer " + config.token.get_secret_value()
        else:
            secret = config.api_token.get_secret_value() if config.api_token else ""
            auth = "Basic " + base64.b64encode(f"{config.email}:{secret}".encode()).decode("ascii")
        self._headers = {"Accept": "application/json", "Authorization": auth}  # never logged
        self._cloud: bool | None = {"cloud": True, "datacenter": False}.get(config.api_type)
        self._lock = asyncio.Lock()

    async def is_cloud(self, action: str) -> bool:
        """Cloud or Data Center: from the config, else from serverInfo's deploymentType, asked once."""
        async with self._lock:
            if self._cloud is None:
                info = await self.json(action, "GET", f"{self._config.url}/rest/api/2/serverInfo")
                kind = str(info.get("deploymentType", "")) if isinstance(info, dict) else ""
                if not kind:
                    raise DeskRejected(f"{self.name}: serverInfo has no deploymentType", desk=self.name)
                self._cloud = kind.lower() == "cloud"
            return self._cloud

    async def version(self, action: str) -> int:
        cloud = await self.is_cloud(action)
        version = self._config.api_version or (3 if cloud else 2)
        if version == 3 and not cloud:
            raise DeskRejected(f"{self.name}: Jira Data Center has no REST API v3", desk=self.name, action=action)
        return version

    async def api_url(self, action: str, path: str) -> str:
        """The URL of `path` under the platform REST API, in the version the site speaks."""
        return f"{self._config.url}/rest/api/{await self.version(action)}/{path}"

    async def search(
        self,
        action: str,
        jql: str,
        fields: list[str],
        *,
        limit: int,
        expand: str | None = None,
        page: str | None = None,
    ) -> Any:
        """The decoded answer of a JQL search: `POST /search/jql` on Cloud, `GET /search` on Data Center.

        `page` reads a paged search, "" its first page: Cloud's `nextPageToken`, Data Center's `startAt`
        (`next_page` tells the next one).
        """
        extra = {"expand": expand} if expand else {}
        if await self.is_cloud(action):
            body: dict[str, Any] = {"jql": jql, "fields": fields, **extra, "maxResults": limit}
            if page:
                body["nextPageToken"] = page
            return await self.json(action, "POST", await self.api_url(action, "search/jql"), json=body)
        params = {"jql": jql, "fields": ",".join(fields), **extra, "maxResults": str(limit)}
        if page is not None:
            params["startAt"] = page or "0"
        return await self.json(action, "GET", await self.api_url(action, "search"), params=params)

    async def next_page(self, action: str, answer: Reader, read: int) -> str | None:
        """The `page` that follows a paged search's `answer`, which held `read` issues; None after the last."""
        if await self.is_cloud(action):
            token = answer.text("nextPageToken", limit=2000)
            return token if token and answer.data.get("isLast") is not True else None
        start, total = answer.integer("startAt") or 0, answer.integer("total") or 0
        return str(start + read) if read and start + read < total else None

    async def json(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Any:
        answer = await self.send(action, method, url, params=params, json=json)
        return self._http.json(action, answer)

    async def send(
        self,
        action: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Answer:
        answer = await self._http.send(action, method, url, headers=self._headers, params=params, json=json)
        if not answer.ok:
            raise self._http.error(action, answer, _reason(answer.text))
        return answer


def _reason(text: str) -> str:
    """The messages of Jira's ErrorCollection, or of JSM's ErrorResponse."""
    messages = json_reason(text, ("errorMessages",))
    errors = json_reason(text, ("errors",))
    jsm = json_reason(text, ("errorMessage",))
    return "; ".join(part for part in (messages, errors, jsm) if part)
