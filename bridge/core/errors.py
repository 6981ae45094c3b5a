"""One error hierarchy, grouped by what the caller must do.

    BridgeError
    ├── ConfigError        the mapping is wrong: exit at start-up; every problem found, each with file, line, path
    ├── RequestError       the sender's request is wrong: 4xx, never retried by us
    │   ├── AuthError          401
    │   ├── PayloadError       400, names the bad field
    │   ├── TooLarge           413
    │   └── UnsupportedMedia   415
    └── DeskError          a service desk call failed (desk, action, url, cause, status)
        ├── DeskTransient      connect error, timeout, 429, 5xx: retried, honouring Retry-After
        ├── DeskAuthExpired    401 on a session that worked: re-authenticate once, then rejected
        └── DeskRejected       any other 4xx or a validation error: dead-lettered with request+answer

Normal outcomes (a duplicate, a suppressed alert) are return values, not exceptions.
Foreign exceptions are translated at one boundary each, with `raise ... from exc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in the mapping, located: `file:line: key.path: message` (parts that are unknown left out)."""

    message: str
    file: str = ""
    path: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.file and self.line else "")
        return ": ".join(part for part in (where, self.path, self.message) if part)


class ConfigError(BridgeError):
    """The mapping (or the environment it reads) is wrong. `problems` holds every mistake found, in file
    and line order; `file`, `path`, `line` and `message` are the first one's."""

    def __init__(
        self,
        message: str = "",
        *,
        file: str = "",
        path: str = "",
        line: int | None = None,
        problems: Sequence[Problem] = (),
    ) -> None:
        self.problems = list(problems) or [Problem(message, file, path, line)]
        first = self.problems[0]
        self.message, self.file, self.path, self.line = first.message, first.file, first.path, first.line
        if len(self.problems) == 1:
            super().__init__(str(first))
        else:
            super().__init__(f"{len(self.problems)} problems:\n" + "\n".join(str(p) for p in self.problems))


class RequestError(BridgeError):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class AuthError(RequestError):
    status, code = 401, "unauthorized"


class PayloadError(RequestError):
    status, code = 400, "bad_payload"


class TooLarge(RequestError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(RequestError):
    status, code = 415, "unsupported_media_type"


class Cause:
    """Why a desk call got no usable answer, in the words `DeskError.cause` uses (besides `HTTP <status>`)."""

    REFUSED = "connection refused"
    DNS = "DNS lookup failed"
    TLS = "TLS error (certificate)"
    TIMEOUT = "timeout"


class DeskError(BridgeError):
    """`url` is where the call went (scheme://host:port); `cause` what went wrong in a few words (a
    `Cause`, `HTTP <status>` by default when there was an answer)."""

    def __init__(
        self,
        message: str,
        *,
        desk: str = "",
        action: str = "",
        status: int | None = None,
        request: dict[str, Any] | None = None,
        answer: str = "",
        url: str = "",
        cause: str = "",
    ) -> None:
        self.desk, self.action, self.status = desk, action, status
        self.request, self.answer = request or {}, answer
        self.url = url
        self.cause = cause or (f"HTTP {status}" if status is not None else "")
        super().__init__(message)

    def record(self) -> dict[str, Any]:
        """The structured form kept in the dead-letter stream."""
        return {
            "error": type(self).__name__,
            "message": str(self),
            "desk": self.desk,
            "action": self.action,
            "status": self.status,
            "request": self.request,
            "answer": self.answer,
        }


class DeskTransient(DeskError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class DeskAuthExpired(DeskError):
    pass


class DeskRejected(DeskError):
    pass
