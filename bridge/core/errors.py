"""One error hierarchy, grouped by what the caller must do.

    BridgeError
    ├── ConfigError        the mapping is wrong: exit at start-up (file, path, line)
    ├── RequestError       the sender's request is wrong: 4xx, never retried by us
    │   ├── AuthError          401
    │   ├── PayloadError       400, names the bad field
    │   ├── TooLarge           413
    │   └── UnsupportedMedia   415
    └── DeskError          a service desk call failed (desk, action, status, incident id)
        ├── DeskTransient      connect error, timeout, 429, 5xx: retried, honouring Retry-After
        ├── DeskAuthExpired    401 on a session that worked: re-authenticate once, then rejected
        └── DeskRejected       any other 4xx or a validation error: dead-lettered with request+answer

Normal outcomes (a duplicate, a suppressed alert) are return values, not exceptions.
Foreign exceptions are translated at one boundary each, with `raise ... from exc`.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    def __init__(self, message: str, *, file: str = "", path: str = "", line: int | None = None) -> None:
        self.file, self.path, self.line = file, path, line
        where = file + (f":{line}" if line else "") + (f" at {path}" if path else "")
        super().__init__(f"{where}: {message}" if where else message)


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


class DeskError(BridgeError):
    def __init__(
        self,
        message: str,
        *,
        desk: str = "",
        action: str = "",
        status: int | None = None,
        request: dict[str, Any] | None = None,
        answer: str = "",
    ) -> None:
        self.desk, self.action, self.status = desk, action, status
        self.request, self.answer = request or {}, answer
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
