"""One error type for the whole service, and its two renderings.

REST: ``{"error": {"code", "message", "fields"?}}`` with the matching HTTP status.
WebSocket: ``{"type": "error", "ref", "error": {"code", "message"}}`` (see messaging).
Exception text and tracebacks never reach a client.
"""

from __future__ import annotations

from typing import Any

STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("invalid", "The request is invalid."),
    401: ("not_authenticated", "Authentication credentials were not provided or are invalid."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    406: ("not_acceptable", "Could not satisfy the request Accept header."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("too_large", "The request is too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("rate_limited", "Too many requests."),
    500: ("internal_error", "An internal error occurred."),
    503: ("unavailable", "The service is temporarily unavailable."),
}


class ApplicationError(Exception):
    """A domain error with a stable machine-readable ``code``.

    Raised by validators and services; rendered by the REST exception handler and by the
    WebSocket dispatcher alike.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        fields: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields
        self.extra = extra or {}

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.extra)
        return body


class NotFound(ApplicationError):
    def __init__(self, message: str = "Not found.", code: str = "not_found") -> None:
        super().__init__(code, message, status=404)


class PermissionDenied(ApplicationError):
    def __init__(
        self,
        message: str = "You do not have permission to perform this action.",
        code: str = "permission_denied",
    ) -> None:
        super().__init__(code, message, status=403)


def error_body(code: str, message: str, fields: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return {"error": body}
