"""The audit app's receivers of the shared library's signals (connected in AuditConfig.ready)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from . import actions
from . import services as audit
from .models import AuditEntry


def record_api_refusal(
    sender: object, *, exc: Exception, context: dict[str, Any], response: Response, **_: object
) -> None:
    """One audit entry per refused request: 403/404 as ``authz.denied`` (with the object the
    URL names), a rejected token (401 with credentials) as a denied ``auth.signin``. Requests
    without credentials are not sign-in attempts and are not logged."""
    request = context.get("request")
    error = response.data.get("error", {}) if isinstance(response.data, dict) else {}
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    if response.status_code == 401:
        if not isinstance(exc, drf_exceptions.AuthenticationFailed):
            return
        audit.record_quietly(
            actions.AUTH_SIGNIN, request=request, outcome=AuditEntry.Outcome.DENIED, code=code
        )
        return
    object_type, object_id = "", None
    for name, value in (context.get("kwargs") or {}).items():
        if name.endswith("_id"):
            object_type, object_id = name.removesuffix("_id"), value
            break
    audit.record_quietly(
        actions.AUTHZ_DENIED,
        request=request,
        object_type=object_type,
        object_id=object_id,
        outcome=AuditEntry.Outcome.DENIED,
        code=code,
    )
