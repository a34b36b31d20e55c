"""Renderers of the one error format: DRF exception handler and a middleware for ``/api/``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import database, metrics
from .errors import STATUS_CODES, ApplicationError, error_body
from .signals import api_refused

logger = logging.getLogger("core.errors")


def _field_details(detail: Any) -> Any:
    """Turn DRF's full details into ``{field: [{"code", "message"}]}`` (nested as needed)."""
    if isinstance(detail, dict):
        if set(detail) == {"message", "code"}:
            return {"code": detail["code"], "message": str(detail["message"])}
        return {str(k): _field_details(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_field_details(v) for v in detail]
    return detail


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler producing the one error format; refusals are audit-logged."""
    response = _render(exc, context)
    metrics.rest_error(response)
    if response is not None and response.status_code in (401, 403, 404):
        # Recorded by the audit app (its receiver): core imports no app.
        api_refused.send(sender=api_exception_handler, exc=exc, context=context, response=response)
    return response


def _render(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        rendered = Response({"error": exc.as_dict()}, status=exc.status)
        if exc.status == 429 and "retry_after" in exc.extra:
            rendered["Retry-After"] = str(exc.extra["retry_after"])
        return rendered
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(*STATUS_CODES[413]), status=413)
    if isinstance(exc, SuspiciousOperation):
        # Django's refusals of a request it will not parse (too many fields or files, a
        # malformed multipart body...): the client's fault, a 400 like Django's own handler.
        return Response(error_body("bad_request", "The request could not be parsed."), status=400)

    if database.pool_exhausted(exc):
        return Response(**_busy())

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.error("unhandled error in API view", exc_info=exc)
        code, message = STATUS_CODES[500]
        return Response(error_body(code, message), status=500)

    status = response.status_code
    default_code, default_message = STATUS_CODES.get(status, ("error", "Error."))
    if isinstance(exc, drf_exceptions.ValidationError):
        details = exc.get_full_details()
        if isinstance(details, list):
            # A non-field error raised at the top level.
            first = details[0] if details else {}
            code = str(first.get("code", "invalid")) if isinstance(first, dict) else "invalid"
            message = (
                str(first.get("message", default_message)) if isinstance(first, dict) else default_message
            )
            response.data = error_body(code if code != "invalid" else "invalid", message)
        else:
            fields = _field_details(details)
            non_field = fields.pop("non_field_errors", None) if isinstance(fields, dict) else None
            code, message = "invalid", "The request is invalid."
            if non_field and isinstance(non_field, list) and isinstance(non_field[0], dict):
                code = non_field[0]["code"] if non_field[0]["code"] != "invalid" else "invalid"
                message = non_field[0]["message"]
            response.data = error_body(code, message, fields or None)
        return response

    if isinstance(exc, drf_exceptions.APIException):
        code = default_code
        detail = exc.detail
        message = str(detail) if not isinstance(detail, (dict, list)) else default_message
        exc_code = getattr(detail, "code", None)
        if isinstance(exc_code, str) and exc_code not in {"error", "invalid"}:
            code = {
                "authentication_failed": "not_authenticated",
                "not_authenticated": "not_authenticated",
                "permission_denied": "permission_denied",
                "not_found": "not_found",
                "method_not_allowed": "method_not_allowed",
                "throttled": "rate_limited",
                "unsupported_media_type": "unsupported_media_type",
                "parse_error": "parse_error",
            }.get(exc_code, exc_code)
        extra: dict[str, Any] = {}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
            # Whole seconds, rounded up, the same in the header and the body (DRF rounds down).
            extra["retry_after"] = max(1, math.ceil(wait))
            response["Retry-After"] = str(extra["retry_after"])
        response.data = error_body(code, message, **extra)
        return response

    response.data = error_body(default_code, default_message)
    return response


def _busy() -> dict[str, Any]:
    """The answer when this process's database connections all stayed in use for
    ``DATABASE_POOL_TIMEOUT`` seconds: the request got no database connection, so it can be
    repeated as it was."""
    logger.warning("database connection pool exhausted: answered 503 server_busy")
    retry = database.BUSY_RETRY_AFTER
    return {
        "data": error_body(
            "server_busy", "The server is busy; try again after retry_after seconds.", retry_after=retry
        ),
        "status": 503,
        "headers": {"Retry-After": str(retry)},
    }


class ApiErrorMiddleware:
    """Makes every error under ``/api/`` (and ``/healthz``) JSON in the one format.

    DRF views already answer in the format; this catches what never reaches a view
    (unknown URLs, CSRF failures, errors raised outside DRF) so no HTML page leaks out.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    @staticmethod
    def _applies(request: HttpRequest) -> bool:
        return request.path.startswith("/api/")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not self._applies(request) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            try:
                data = json.loads(response.content or b"{}")
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                return response
        code, message = STATUS_CODES.get(response.status_code, ("error", "Error."))
        new = JsonResponse(error_body(code, message), status=response.status_code)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                new[header] = response[header]
        return new

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not self._applies(request):
            return None
        if database.pool_exhausted(exception):
            busy = _busy()
            return JsonResponse(busy["data"], status=busy["status"], headers=busy["headers"])
        logger.error("unhandled error", exc_info=exception)
        code, message = STATUS_CODES[500]
        return JsonResponse(error_body(code, message), status=500)
