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
- Stripe secret and restricted keys, webhook secrets and PaymentIntent client secrets;
- the credential of a path that is one (``CREDENTIAL_PATHS``: ``/prescriptions/verify/<code>``,
  ``/calendar/feeds/<token>/``);
- while ``hiding(strings)`` is on (a socket frame's handler failed: the client's strings, such as
  a message's text, that the error's message may quote), each of those strings.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
# Credentials that are a path segment, the only credential of a public endpoint: a prescription's
# verification code (records/urls.py) and a calendar feed's token (appointments/urls.py).
CREDENTIAL_PATHS = ("/prescriptions/verify/", "/calendar/feeds/")
_PATH_CREDENTIAL = re.compile(
    "(" + "|".join(re.escape(prefix) for prefix in CREDENTIAL_PATHS) + r")[^/?#\s\"']+"
)


def _parameter(match: re.Match[str]) -> str:
    name = match["name"]
    if unquote(name).lower() in CREDENTIAL_PARAMETERS and match["value"]:
        return f"{name}={REDACTED}"
    return match[0]


# Strings shorter than this are not hidden: replacing "ok" everywhere would garble the line
# and protect nothing.
HIDDEN_MIN_LENGTH = 4
_hidden: ContextVar[tuple[str, ...]] = ContextVar("healthchat_hidden_strings", default=())


@contextmanager
def hiding(strings: Iterable[str]) -> Iterator[None]:
    """While in this block (this task or thread), ``redact`` also replaces each of ``strings``
    (the longest first), so a record or an error report made here does not quote them: a socket
    handler's failure is logged, and reported to Sentry, inside ``hiding`` its frame's strings."""
    kept = sorted({s for s in strings if len(s) >= HIDDEN_MIN_LENGTH}, key=len, reverse=True)
    token = _hidden.set((*_hidden.get(), *kept))
    try:
        yield
    finally:
        _hidden.reset(token)


def strings_in(value: Any) -> Iterator[str]:
    """Every string in ``value`` (a parsed frame's data: a model, dicts, lists), keys excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from strings_in(item)
    elif hasattr(value, "model_dump"):  # a pydantic model (a frame's data)
        yield from strings_in(value.model_dump())


FILTERED = "[filtered]"
_PHONE = re.compile(r"\+?\d[\d ().-]{6,}\d")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")
_FILE_NAME = re.compile(
    r"[\w.() -]*\.(?:jpe?g|png|gif|webp|heic|pdf|mp4|mov|m4a|mp3|ogg|wav|docx?|xlsx?|txt|zip)\b", re.I
)


def scrub_text(text: str) -> str:
    """``redact``, then personal data shapes: long base64 runs (ciphertexts, keys), file names
    and phone numbers become ``[filtered]`` (every string of a Sentry event: core/sentry.py)."""
    text = redact(text)
    text = _BASE64.sub(FILTERED, text)
    text = _FILE_NAME.sub(FILTERED, text)
    return _PHONE.sub(FILTERED, text)


def scrub_traceback(text: str) -> str:
    """A formatted traceback for a log line: ``redact`` on every line, and ``scrub_text`` on
    every line but the ``File "...", line N`` ones (an exception's message may quote a phone
    number or a file name; a source path is neither, and must stay readable)."""
    return "\n".join(
        redact(line) if line.lstrip().startswith('File "') else scrub_text(line) for line in text.split("\n")
    )


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[redacted]`` (and the strings of an
    enclosing ``hiding``). Each pattern runs only when a plain substring test says it could match
    (most log lines pass untouched)."""
    for hidden in _hidden.get():
        if hidden in text:
            text = text.replace(hidden, REDACTED)
    lowered = text.lower()
    if "cookie" in lowered:
        text = _COOKIE.sub(rf"\1{REDACTED}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if any(hint in lowered for hint in _SHAPE_HINTS):
        text = _SHAPES.sub(REDACTED, text)
    if "=" in text and any(hint in lowered for hint in _PARAMETER_HINTS):
        text = _PARAMETER.sub(_parameter, text)
    if any(prefix in text for prefix in CREDENTIAL_PATHS):
        text = _PATH_CREDENTIAL.sub(rf"\1{REDACTED}", text)
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
        # Formatters reuse ``exc_text`` when it is set: exception messages can hold URLs too,
        # and the data an error quotes (a phone number, a file name).
        record.exc_text = scrub_traceback(logging.Formatter().formatException(record.exc_info))
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
