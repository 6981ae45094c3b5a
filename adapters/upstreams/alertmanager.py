"""Alertmanager: an acknowledgement is a silence of the incident's members, kept alive while the ticket is open.

API v2 (https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml): `POST /api/v2/silences`
creates a silence (or, with an `id`, updates it: in place when only its end moves, else Alertmanager expires
it and answers a new id); `GET /api/v2/silence/{id}` reads one; `DELETE /api/v2/silence/{id}` expires it.
An unknown id is a 404 on POST and, in 0.25, a 500 "silence not found" on DELETE; both count as gone.

Which alerts a silence covers. A silence is a set of matchers that must all hold, so it cannot say "these
five label sets". The labels common to all members alone would be too wide (`alertname="HighCPU"` silences
HighCPU on every host, other incidents' included). So the members are split into groups within which at most
one label varies (the varying label with the most values is the pivot; the members are grouped by their
values of the other varying labels); each group is one silence: every label of the group's members as an
equality matcher, the pivot as one anchored alternation (`instance=~"a|b|c"`), and a label some members lack
as `=""` (absent) or an alternative "" — so each silence covers exactly its members, as far as Alertmanager's
matching of label subsets allows. At most `max_silences` silences per incident: beyond that, neighbouring
groups are merged (a merged silence also covers the cross product of its members' values, never a label
value that none of the incident's members has).

The handle is the silence ids, comma-separated, in group order. `extend` reconciles: each group's silence is
updated (its end moved, in place when its matchers are unchanged), created when it is gone, and silences no
longer needed are expired. Before a silence is created, Alertmanager is asked for one this bridge already
made for the same acknowledgement (the same `createdBy`, comment and matchers, still pending or active,
found by `GET /api/v2/silences?filter=` on the group's equality matchers): an answer lost after Alertmanager
created a silence (a timeout, a proxy's 502) makes the call again, and the retry takes that silence over
instead of making a second one. Should that lookup itself fail, the silence is created all the same: a
duplicate then ends at its `endsAt` (at most the bridge's acknowledgement window), never stays.

Several URLs (an HA pair): each call goes to the first that answers; a silence made on one gossips to the
others, so `extend` and `release` work on whichever answers then.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.desks.transport import Answer, Transport, https_url, tls_context
from adapters.upstreams.http import DEFAULT_AUTHOR, HttpSettings, check_urls, comment, error, rejected, secret
from bridge.core.errors import DeskTransient
from bridge.core.sync import Acknowledgement

Matcher = dict[str, Any]  # {"name", "value", "isRegex", "isEqual"}
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_NOT_FOUND = "silence not found"


class AlertmanagerUpstream(HttpSettings):
    """`sources.<name>.upstream` for an alertmanager source."""

    url: str | list[str]  # one Alertmanager, or every member of an HA cluster (the first that answers is used)
    token: SecretStr | None = None  # Bearer (a proxy in front of Alertmanager)
    user: str | None = None  # Basic
    password: SecretStr | None = None
    created_by: str = Field(DEFAULT_AUTHOR, min_length=1)  # the silence's `createdBy`
    max_silences: int = Field(10, ge=1, le=100)  # per incident

    @field_validator("url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("give at least one Alertmanager URL")
        checked = [https_url(u, "http://alertmanager.example.com:9093") for u in urls]
        return checked[0] if isinstance(value, str) else checked

    @model_validator(mode="after")
    def _auth(self) -> Self:
        if (self.user is None) != (self.password is None):
            raise ValueError("Basic auth needs both user and password")
        if self.token is not None and self.user is not None:
            raise ValueError("give either token (Bearer) or user and password (Basic), not both")
        check_urls(self.urls(), self.allow_insecure_http)
        return self

    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)

    def build(self, name: str, session: aiohttp.ClientSession) -> AlertmanagerSilences:
        transport = Transport(name, session, timeout=self.timeout, tls=tls_context(self.ca_file, name))
        return AlertmanagerSilences(name, self, transport)


class AlertmanagerSilences:
    def __init__(self, name: str, settings: AlertmanagerUpstream, transport: Transport) -> None:
        self.name = name
        self._settings = settings
        self._http = transport
        self._urls = settings.urls()
        headers = {"Accept": "application/json"}
        if settings.token is not None:
            headers["Authorization"] = "Bearer " + secret(settings.token)
        elif settings.user is not None:
            pair = f"{settings.user}:{secret(settings.password)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._headers = headers  # never logged or kept with an error

    async def acknowledge(self, ack: Acknowledgement) -> str:
        """Silence the members until `ack.until_ms`; an acknowledgement already held is extended instead."""
        if ack.handle:
            return await self.extend(ack)
        groups = silence_groups(ack.members, self._settings.max_silences)
        if not groups:
            raise rejected(self.name, "acknowledge", "no member has labels to match: nothing to silence")
        return ",".join([await self._post("acknowledge", matchers, ack) for matchers in groups])

    async def extend(self, ack: Acknowledgement) -> str:
        """Each group's silence until `ack.until_ms` (updated, or made again if gone); leftovers expired."""
        held = [i for i in ack.handle.split(",") if i]
        groups: list[list[Matcher] | None] = list(silence_groups(ack.members, self._settings.max_silences))
        if not groups:  # no labels to go by now: keep what is held, as it is
            groups = [None] * len(held)
        ids: list[str] = []
        for index, wanted in enumerate(groups):
            old = await self._get(held[index]) if index < len(held) else None
            matchers = wanted if wanted is not None else (old or {}).get("matchers")
            if matchers:
                ids.append(await self._post("extend", matchers, ack, old))
        for stale in held[len(groups) :]:
            await self._expire("extend", stale)
        if not ids:
            raise rejected(self.name, "extend", "no member has labels to match and no silence is held")
        return ",".join(ids)

    async def release(self, ack: Acknowledgement) -> None:
        """Expire every silence held; one already gone or expired is done with."""
        for silence_id in (i for i in ack.handle.split(",") if i):
            await self._expire("release", silence_id)

    async def comment(self, ack: Acknowledgement, text: str) -> None:
        """Alertmanager keeps no comments besides a silence's own: nothing to do."""

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    # -- calls ---------------------------------------------------------------------------------

    async def _post(
        self, action: str, matchers: list[Matcher], ack: Acknowledgement, old: Mapping[str, Any] | None = None
    ) -> str:
        now = datetime.now(UTC)
        ends = datetime.fromtimestamp(ack.until_ms / 1000, UTC) if ack.until_ms else None
        if ends is None or ends <= now:
            raise rejected(self.name, action, "until_ms must be in the future: a silence needs an end")
        body: dict[str, Any] = {
            "matchers": matchers,
            "startsAt": _iso(now),
            "endsAt": _iso(ends),
            "createdBy": self._settings.created_by,
            "comment": comment(ack),
        }
        if old is None:  # a silence made by a call whose answer was lost is this one's
            old = await self._made_before(action, matchers, body["comment"])
        if old is not None and old.get("status", {}).get("state") != "expired":
            body["id"] = old["id"]
            if _same(old.get("matchers", []), matchers) and old.get("status", {}).get("state") == "active":
                body["startsAt"] = old["startsAt"]  # only the end moves: Alertmanager keeps the id
        answer = await self._send(action, "POST", "/api/v2/silences", body)
        if answer.status == 404 and "id" in body:  # gone meanwhile (another peer, or by hand): a new one
            body.pop("id")
            answer = await self._send(action, "POST", "/api/v2/silences", body)
        if not answer.ok:
            raise error(self._http, action, answer, answer.text.strip().strip('"')[:300])
        silence_id = self._json(action, answer).get("silenceID") if answer.text.strip() else None
        if not isinstance(silence_id, str) or not silence_id:
            raise self._http.unexpected(action, answer, "the answer has no silenceID")
        return silence_id

    async def _made_before(self, action: str, matchers: list[Matcher], text: str) -> dict[str, Any] | None:
        """A pending or active silence of ours with these matchers and this comment, if Alertmanager has one;
        None as well when it cannot say (the silence is then made)."""
        filters = [("filter", f'{m["name"]}="{_quoted(str(m["value"]))}"') for m in matchers
                   if not m.get("isRegex") and m.get("isEqual", True) is not False]  # fmt: skip
        try:
            answer = await self._send(action, "GET", "/api/v2/silences?" + urlencode(filters))
        except DeskTransient:
            return None
        if not answer.ok:
            return None
        try:
            found = self._http.json(action, answer)
        except Exception:  # an answer that is not JSON: as good as none
            return None
        for silence in found if isinstance(found, list) else []:
            if (
                isinstance(silence, dict)
                and silence.get("createdBy") == self._settings.created_by
                and silence.get("comment") == text
                and silence.get("status", {}).get("state") in ("pending", "active")
                and _same(silence.get("matchers") or [], matchers)
            ):
                return silence
        return None

    async def _get(self, silence_id: str) -> dict[str, Any] | None:
        answer = await self._send("extend", "GET", f"/api/v2/silence/{silence_id}")
        if answer.status == 404 or (answer.status == 500 and _NOT_FOUND in answer.text):
            return None
        if answer.status == 422:  # not a UUID: a handle that is not ours
            return None
        if not answer.ok:
            raise error(self._http, "extend", answer, answer.text.strip().strip('"')[:300])
        found = self._json("extend", answer)
        return found if isinstance(found.get("matchers"), list) and found.get("id") else None

    async def _expire(self, action: str, silence_id: str) -> None:
        answer = await self._send(action, "DELETE", f"/api/v2/silence/{silence_id}")
        if answer.ok or answer.status in (404, 422) or (answer.status == 500 and _NOT_FOUND in answer.text):
            return
        raise error(self._http, action, answer, answer.text.strip().strip('"')[:300])

    async def _send(self, action: str, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        """The first Alertmanager that answers (a 5xx other than "not found" counts as not answering)."""
        last: DeskTransient | None = None
        for base in self._urls:
            try:
                answer = await self._http.send(action, method, base + path, headers=self._headers, json=body)
            except DeskTransient as exc:
                last = exc
                continue
            if answer.status >= 500 and _NOT_FOUND not in answer.text and base != self._urls[-1]:
                last = error(self._http, action, answer)  # type: ignore[assignment]
                continue
            return answer
        assert last is not None
        raise last

    def _json(self, action: str, answer: Answer) -> dict[str, Any]:
        data = self._http.json(action, answer)
        if not isinstance(data, dict):
            raise self._http.unexpected(action, answer, "the answer is not a JSON object")
        return data


def _quoted(value: str) -> str:
    """`value` inside the double quotes of an Alertmanager filter matcher (`name="value"`)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _same(old: Sequence[Mapping[str, Any]], new: Sequence[Matcher]) -> bool:
    def key(m: Mapping[str, Any]) -> tuple[str, str, bool, bool]:
        return (str(m.get("name")), str(m.get("value")), bool(m.get("isRegex")), m.get("isEqual", True) is not False)

    return sorted(map(key, old)) == sorted(map(key, new))


def escape(value: str) -> str:
    """`value` as a literal inside an RE2 pattern (Alertmanager's regex matchers are Go RE2, anchored)."""
    return _RE2_SPECIAL.sub(r"\\\1", value)


def silence_groups(members: Sequence[Mapping[str, str]], limit: int) -> list[list[Matcher]]:
    """The matchers of each silence for `members` (at most `limit` silences), as the module says."""
    sets = sorted({tuple(sorted((str(k), str(v)) for k, v in m.items())) for m in members if m})
    if not sets:
        return []
    dicts = [dict(s) for s in sets]
    names = sorted({name for d in dicts for name in d})
    varying = [n for n in names if len({d.get(n, "") for d in dicts}) > 1]
    if len(varying) <= 1:
        groups = [dicts]
    else:
        pivot = max(varying, key=lambda n: (len({d.get(n, "") for d in dicts}), n))
        rest = [n for n in varying if n != pivot]
        by: dict[tuple[str, ...], list[dict[str, str]]] = {}
        for d in dicts:
            by.setdefault(tuple(d.get(n, "") for n in rest), []).append(d)
        groups = [by[k] for k in sorted(by)]
    if len(groups) > limit:  # merge neighbours: `limit` silences of about equal size
        size = -(-len(groups) // limit)
        groups = [[d for g in groups[i : i + size] for d in g] for i in range(0, len(groups), size)]
    return [_matchers(group, names) for group in groups]


def _matchers(group: list[dict[str, str]], names: list[str]) -> list[Matcher]:
    out: list[Matcher] = []
    for name in names:
        values = sorted({d.get(name, "") for d in group})
        if len(values) == 1:
            out.append({"name": name, "value": values[0], "isRegex": False, "isEqual": True})
        else:
            pattern = "|".join(escape(v) for v in values)
            out.append({"name": name, "value": pattern, "isRegex": True, "isEqual": True})
    return out
