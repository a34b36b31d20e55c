"""Error tracking with sentry-sdk when ``SENTRY_DSN`` is set (every process: server, Celery,
commands; started from ``core.apps.CoreConfig.ready``).

What leaves the process is an exception's type, its stack (file, function, line: no local
variables, no request body, no cookies, no user), and a scrubbed message. ``send_default_pii``
is off; ``scrub`` is ``before_send`` and ``before_breadcrumb``: it removes request bodies, query
strings, cookies and headers but a few harmless ones, local variables, user data and ``extra``,
and rewrites every remaining string: credentials (``core.logs.redact``: JWTs, bearer tokens,
signed links, Stripe secrets), phone numbers, long base64 runs (ciphertexts, keys) and file
names are replaced by ``[filtered]``.
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings

from core.logs import scrub_text

KEPT_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id", "host"})
_DROP_KEYS = ("extra", "user", "contexts_user")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _strip_request(request: dict[str, Any]) -> dict[str, Any]:
    headers = request.get("headers") or {}
    return {
        "method": request.get("method"),
        "url": str(request.get("url", "")).split("?")[0],
        "headers": {k: v for k, v in headers.items() if k.lower() in KEPT_HEADERS},
    }


def scrub(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """``before_send``: the event without bodies, variables or personal data (see the module)."""
    for key in _DROP_KEYS:
        event.pop(key, None)
    if isinstance(event.get("request"), dict):
        event["request"] = _strip_request(event["request"])
    for exception in (event.get("exception") or {}).get("values") or []:
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    result: dict[str, Any] = _scrub(event)
    return result


def scrub_breadcrumb(crumb: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    crumb.pop("data", None)  # SQL parameters, HTTP URLs with queries
    result: dict[str, Any] = _scrub(crumb)
    return result


def init() -> bool:
    """Start sentry-sdk when ``SENTRY_DSN`` is set; True when it was started."""
    dsn = getattr(settings, "SENTRY_DSN", "")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=settings.SENTRY_ENVIRONMENT,
        integrations=[DjangoIntegration(), CeleryIntegration(), AsyncioIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=cast(Any, scrub),
        before_breadcrumb=cast(Any, scrub_breadcrumb),
        traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
    )
    return True
