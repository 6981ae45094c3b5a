"""structlog, configured once at the entry point: JSON off a terminal, console on one.

Every event passes `redact` last before rendering: values of keys that name a credential, bearer
and basic credentials inside any text, and passwords in URLs are replaced by "***". Code does not
log secrets in the first place (SecretStr, header maps kept out of events); this is the net under
that rule, and tests/core/test_logs.py scans a real bridge's log for every secret it was given.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

MASK = "***"
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|authori[sz]ation|credential|api[_-]?key|cookie)", re.I)
_IN_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + MASK),  # Authorization values
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), r"\1" + MASK + "@"),  # scheme://user:pw@host
    (re.compile(r"(?i)\b(password|passwd|token|secret|api_key)=([^&\s]+)"), r"\1=" + MASK),  # query strings
]
# What every pattern above needs to match: text without any of it is left as it is, in one search.
_MAYBE = re.compile(r"(?i)bearer|basic|://|passw|token|secret|api_key")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if not _MAYBE.search(value):
            return value
        for pattern, replacement in _IN_TEXT:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {k: MASK if _secret_key(k, v) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _secret_key(key: Any, value: Any) -> bool:
    # A count or a flag under such a name (`tokens=3`, `secret_set=True`) tells nothing away.
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not isinstance(value, bool | int | float)


def redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = MASK if _secret_key(key, value) else _scrub(value)
    return event


class bound:
    """Bind `values` to the log context of a block, and restore what was there after it; as structlog's
    `bound_contextvars`, which first copies every context variable there is (per request and per
    desk action, that copy was the most of what binding cost)."""

    __slots__ = ("_tokens", "_values")

    def __init__(self, **values: Any) -> None:
        self._values = values

    def __enter__(self) -> None:
        self._tokens = bind_contextvars(**self._values)

    def __exit__(self, *_: object) -> None:
        reset_contextvars(**self._tokens)


def _orjson_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was set up (test runners and
    daemonisers swap it; a logger holding the old, closed stream would fail on every event)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(*, level: str = "info", json: bool | None = None, file: TextIO | None = None) -> None:
    stream: Any = file or _CurrentStderr()
    json = not stream.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
