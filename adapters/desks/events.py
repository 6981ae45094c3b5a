"""What every desk's loop back shares: reading a pushed body safely, marking the bridge's own writes.

A pushed body comes from the network: `decode` bounds its size and turns anything that is not a JSON
object into `PayloadError` (never another exception); `Reader` reads typed values out of it, each
missing or mistyped field a `PayloadError` naming the field, and cuts long texts to `MAX_TEXT`.
`Identity` answers whether a change is the bridge's own (`bridge.core.sync`: the integration user,
or `MARKER` in the text); `marked` puts `MARKER` into a note the bridge writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bridge.core.errors import PayloadError
from bridge.core.sync import MARKER

MAX_BODY = 1 << 20  # a desk's webhook body: one ticket's change, far below a megabyte
MAX_TEXT = 10_000  # a comment's text as kept in a DeskEvent (the audit trail shows it)
MAX_EVENTS = 500  # events one body or one poll page may yield
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode(body: bytes, what: str) -> Mapping[str, Any]:
    """The JSON object of a pushed body; PayloadError when it is too large, not JSON or not an object."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise PayloadError(f"{what}: the body is not bytes")
    if len(body) > MAX_BODY:
        raise PayloadError(f"{what}: the body has {len(body)} bytes, more than {MAX_BODY}")
    if not bytes(body).strip():
        raise PayloadError(f"{what}: the body is empty")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"{what}: the body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{what}: the body is not a JSON object")
    return data


class Reader:
    """Typed reads from one decoded object; errors name the field's path (`issue.fields.status`)."""

    def __init__(self, data: Any, what: str, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise PayloadError(f"{what}: {path or 'the body'} is not an object")
        self.data, self.what, self.path = data, what, path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, key: str, problem: str) -> PayloadError:
        return PayloadError(f"{self.what}: {self._where(key)} {problem}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
        """A string (a number is taken as its text); '' when absent and not required."""
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise self._fail(key, "is missing")
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._fail(key, "is not a string")
        return str(value)[:limit]

    def obj(self, key: str, *, required: bool = False) -> Reader | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "is missing")
            return None
        if not isinstance(value, Mapping):
            raise self._fail(key, "is not an object")
        return Reader(value, self.what, self._where(key))

    def items(self, key: str, *, limit: int = MAX_EVENTS) -> list[Reader]:
        """The objects of a list (absent: none); more than `limit` is a PayloadError."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, "is not a list")
        if len(value) > limit:
            raise self._fail(key, f"has {len(value)} entries, more than {limit}")
        return [Reader(item, self.what, f"{self._where(key)}[{n}]") for n, item in enumerate(value)]

    def integer(self, key: str, *, required: bool = False) -> int | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "is missing")
            return None
        if isinstance(value, bool):
            raise self._fail(key, "is not a number")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise self._fail(key, f"is not a number: {str(value)[:40]!r}") from None

    def time_ms(self, key: str, formats: Iterable[str], *, required: bool = False) -> int | None:
        """A timestamp in one of `formats` (strptime; naive means UTC), or epoch milliseconds."""
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise self._fail(key, "is missing")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise self._fail(key, "is not a time")
        at = parse_time(value, formats)
        if at is None:
            raise self._fail(key, f"is not a time: {value[:40]!r}")
        return at


def parse_time(value: str, formats: Iterable[str]) -> int | None:
    """Epoch milliseconds of `value` in one of `formats` (a naive time is UTC), or None."""
    for form in formats:
        try:
            parsed = datetime.strptime(value, form)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:  # exact: a float's seconds times 1000 can fall a millisecond short (.123 -> 122.99...)
            return (parsed - _EPOCH) // timedelta(milliseconds=1)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def utc(ms: int, form: str) -> str:
    """Epoch milliseconds as UTC text in strftime `form`."""
    return datetime.fromtimestamp(max(0, ms) / 1000, UTC).strftime(form)


def merge_pages(times_a: list[int], more_a: bool, times_b: list[int], more_b: bool) -> tuple[int, int]:
    """How many rows to take from each of two pages, each in time order from its own source, so that
    what is taken is everything up to a time neither source can still undercut: up to the last time
    of a page that has more behind it (ties included, so that a page always makes progress)."""
    bounds = ([times_a[-1]] if more_a and times_a else []) + ([times_b[-1]] if more_b and times_b else [])
    bound = min(bounds) if bounds else None
    take_a = sum(1 for t in times_a if bound is None or t <= bound)
    take_b = sum(1 for t in times_b if bound is None or t <= bound)
    return take_a, take_b


def offsets(cursor: str | None) -> tuple[int, int]:
    """A two-source cursor, "<offset a>,<offset b>"; (0, 0) for None or an unreadable one."""
    if not cursor:
        return 0, 0
    first, _, second = cursor.partition(",")
    try:
        return max(0, int(first)), max(0, int(second or 0))
    except ValueError:
        return 0, 0


def marked(text: str) -> str:
    """A note as the bridge writes it: the text, then MARKER on a line of its own (once)."""
    if not text or MARKER in text:
        return text
    return f"{text}\n\n{MARKER}"


class Identity:
    """Who the bridge is on one desk: the names its integration user goes by there.

    By default the desk's auth user and what the desk itself told (`learn`: Jira's accountId from
    /myself); `integration_user` (31a's `sync.integration_user`), once set, replaces them."""

    def __init__(self, *names: str | None) -> None:
        self._configured = ""
        self._default = next((n for n in names if n), "")  # the desk's auth user: whose changes are ours
        self._names = {n.casefold() for n in names if n}

    @property
    def integration_user(self) -> str:
        """`sync.integration_user` once set, else the desk's auth user (the first name given)."""
        return self._configured or self._default

    @integration_user.setter
    def integration_user(self, value: str | None) -> None:
        self._configured = value or ""

    def learn(self, name: str | None) -> None:
        if name:
            self._names.add(name.casefold())

    def ours(self, authors: Iterable[str], text: str = "") -> bool:
        """Whether one of `authors` is the integration user, or the text carries MARKER."""
        names = {self._configured.casefold()} if self._configured else self._names
        return MARKER in text or any(a and a.casefold() in names for a in authors)


class KnowsItself:
    """A desk with desk events: `integration_user`, whose changes are the bridge's own (its `_identity`)."""

    _identity: Identity

    @property
    def integration_user(self) -> str:
        return self._identity.integration_user

    @integration_user.setter
    def integration_user(self, value: str | None) -> None:
        self._identity.integration_user = value
