"""structlog, configured once at the entry point: JSON off a terminal, console on one.

Every line the process writes to its log is one event in that format, also those of libraries that
log through the standard `logging` module (aiohttp, asyncio) and uncaught exceptions: a traceback is
the `exception` field of its event, never lines of plain text between the JSON ones.

Every event passes `redact` last before rendering: values of keys that name a credential, bearer
and basic credentials inside any text, and passwords in URLs are replaced by "***". Code does not
log secrets in the first place (SecretStr, header maps kept out of events); this is the net under
that rule, and tests/core/test_logs.py scans a real bridge's log for every secret it was given.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar, Token
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


_SECRETS: list[str] = []  # the running mapping's secret values (`mask`), longest first


def mask(secrets: Iterable[str]) -> None:
    """Also mask these values wherever they appear in an event (the mapping's secrets, set by the
    runtime: bridge.core.secrets); they add to those given before."""
    _SECRETS[:] = sorted(set(_SECRETS) | set(secrets), key=len, reverse=True)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
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


Fields = Callable[[], Mapping[str, Any]]
_LAZY: ContextVar[Fields | None] = ContextVar("bridge_log_fields", default=None)


class lazily:
    """Bind the fields `fields()` returns to the log context of a block, worked out only if a line is
    logged in it: per request, binding its id and source cost more than the request's every other log
    call, which most requests never make. `fields` is called once per line; cache what it makes."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: Fields) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token: Token[Fields | None] = _LAZY.set(self._fields)

    def __exit__(self, *_: object) -> None:
        _LAZY.reset(self._token)


def merge_lazy(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The fields bound by `lazily`, under the event's own and those bound by `bound`."""
    fields = _LAZY.get()
    if fields is not None:
        for key, value in fields().items():
            event.setdefault(key, value)
    return event


# JSON allows these raw inside strings, but they end a line for Python's str.splitlines, JavaScript and
# some log viewers: escaped, an event is one line wherever it is read (alert text and paths carry them).
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _orjson_text(value: Any, **_: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if text.isascii() else text.translate(_LINE_BREAKS)


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
    _foreign(stream, renderer, logging.getLevelName(level.upper()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_lazy,
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


def _foreign(stream: Any, renderer: structlog.typing.Processor, level: int) -> None:
    """Route the standard `logging` module (aiohttp's and asyncio's loggers) and uncaught exceptions
    through the same processors and renderer: one event per line, the traceback in `exception`."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_bridge", False):
            root.removeHandler(old)
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # Libraries say much at info (aiohttp: every odd request); warnings and errors are what matter here.
    root.setLevel(max(level, logging.WARNING))
    log = structlog.get_logger("bridge")

    def uncaught(kind: type[BaseException], value: BaseException, trace: Any) -> None:
        log.critical("uncaught_exception", exc_info=(kind, value, trace))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            log.critical("uncaught_exception", thread=getattr(args.thread, "name", ""), exc_info=args.exc_value)

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
