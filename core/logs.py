"""Log records without credentials.

Signed download links (``?token=``), Firebase ID tokens, session cookies and the like must not
reach a log line: whoever reads the logs could use them. Access lines are written by whichever
server runs the app (uvicorn's ``uvicorn.access``, runserver's ``django.channels.server``, the
WebSocket libraries at debug level, ...), each with its own logger, handlers and formatters, so
the redaction sits below all of them: a record factory that every ``logging`` record of the
process is made by. ``settings.LOGGING_CONFIG`` names ``configure``, which installs it before
applying ``settings.LOGGING``; any process that sets Django up (server, worker, command) has it.

What is replaced by ``[redacted]``:
- the value of a credential-named parameter (``token=``, ``access_token=``, ``X-Amz-Signature=``,
  ``sessionid=``, ...; the name may be percent-encoded), in a URL, query string or cookie;
- anything shaped like a JWT or a Django signed value (base64 JSON ``eyJ...`` followed by
  ``.`` or ``:`` segments, the colon possibly percent-encoded), wherever it appears;
- the credential after ``Bearer``, the value of a ``Cookie:``/``Set-Cookie:`` header line;
- Stripe secret and restricted keys, webhook secrets and PaymentIntent client secrets.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

REDACTED = "[redacted]"

CREDENTIAL_PARAMETERS = frozenset(
    {
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "auth",
        "authorization",
        "api_key",
        "apikey",
        "password",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "sessionid",
        "csrftoken",
        "csrfmiddlewaretoken",
    }
)

_PARAMETER = re.compile(r"(?<![\w.%-])(?P<name>[\w.%-]+)=(?P<value>[^&\s\"'#;,]*)")
_SHAPES = re.compile(
    r"eyJ[\w-]{4,}(?:(?:[.:]|%3[Aa])[\w-]*)+"  # JWT, Django signed value
    r"|\b(?:sk|rk)_(?:live|test)_\w+|\bwhsec_\w+|\b(?:pi|seti)_\w+?_secret_\w+"  # Stripe
)
_SHAPE_HINTS = ("eyj", "sk_", "rk_", "whsec_", "_secret_")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+")
_COOKIE = re.compile(r"(?i)\b((?:set-)?cookie:\s*)[^\r\n]+")
# A parameter is looked at only when the text names one (or percent-encodes some name).
_PARAMETER_HINTS = (*(f"{name}=" for name in sorted(CREDENTIAL_PARAMETERS)), "%")


def _parameter(match: re.Match[str]) -> str:
    name = match["name"]
    if unquote(name).lower() in CREDENTIAL_PARAMETERS and match["value"]:
        return f"{name}={REDACTED}"
    return match[0]


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[redacted]``. Each pattern runs
    only when a plain substring test says it could match (most log lines pass untouched)."""
    lowered = text.lower()
    if "cookie" in lowered:
        text = _COOKIE.sub(rf"\1{REDACTED}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if any(hint in lowered for hint in _SHAPE_HINTS):
        text = _SHAPES.sub(REDACTED, text)
    if "=" in text and any(hint in lowered for hint in _PARAMETER_HINTS):
        text = _PARAMETER.sub(_parameter, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value  # numbers keep their %d / %.2f formatting
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


def redact_record(record: logging.LogRecord) -> None:
    """Scrub a record in place: its message, arguments, traceback and stack text."""
    record.msg = _redact_value(record.msg)
    if isinstance(record.args, Mapping):
        record.args = {key: _redact_value(value) for key, value in record.args.items()}
    elif record.args:
        record.args = tuple(_redact_value(value) for value in record.args)
    if record.exc_info and not record.exc_text:
        # Formatters reuse ``exc_text`` when it is set: exception messages can hold URLs too.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_record_factory() -> None:
    """Make every record of this process through ``redact_record`` (idempotent)."""
    base = logging.getLogRecordFactory()
    if isinstance(base, RedactingRecordFactory):
        return
    logging.setLogRecordFactory(RedactingRecordFactory(base))


class RedactingRecordFactory:
    """The process's log record factory: ``base``'s records, scrubbed (``redact_record``)."""

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self.base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        redact_record(record)
        return record


def configure(config: dict[str, Any]) -> None:
    """``settings.LOGGING_CONFIG``: the redacting record factory, then ``dictConfig``; Python's
    warnings become log records too (one format for every line, JSON included)."""
    install_record_factory()
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
