"""Structured logs: who and what a log line is about, without saying who anyone is.

``LOG_FORMAT=json`` (production) writes one JSON object per line (python-json-logger's
formatter over the standard library's logging, so the redacting record factory of
``core/logs.py`` still sees every record first): ``timestamp``, ``level``, ``logger``, ``event``
(the message), and, where known, ``request_id`` (an HTTP request or a Celery task),
``conn_id`` (a WebSocket), ``user`` (a pseudonym: an HMAC of the user id under SECRET_KEY, the
same for one user across lines and processes, not reversible without the key), ``route`` (the
URL route template or the task name), ``method``, ``status``, ``duration_ms``, ``outcome``.
``LOG_FORMAT=plain`` (the default, ``make run``) is the human-readable line.

The context lives in context variables: set once where a request, socket or task starts
(``RequestLogMiddleware``, the consumer's ``connect``/auth, Celery's ``task_prerun``) and read
by ``ContextFilter`` for every record written meanwhile.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter as JsonLogFormatter

from core.logs import scrub_traceback

logger = logging.getLogger("healthchat.request")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
conn_id: ContextVar[str | None] = ContextVar("conn_id", default=None)
user: ContextVar[str | None] = ContextVar("user", default=None)
route: ContextVar[str | None] = ContextVar("route", default=None)

CONTEXT = {"request_id": request_id, "conn_id": conn_id, "user": user, "route": route}
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def pseudonym(user_id: int) -> str:
    """A stable, keyed pseudonym of a user id (16 hex digits)."""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


def bind_user(user_id: int | None) -> None:
    user.set(pseudonym(user_id) if user_id is not None else None)


def bind_socket(value: str) -> None:
    """A new WebSocket's id (its log lines carry it); the user is bound after ``auth``."""
    conn_id.set(value)
    user.set(None)


# The websockets library logs every frame's content at debug level ("< TEXT '{...}' [n bytes]"):
# message text, tokens, SDP. Those records are dropped whatever the level.
FRAME_CONTENT_FORMATS = frozenset({"< %s", "> %s"})


class ContextFilter(logging.Filter):
    """Copies the context variables onto every record, drops the records that would write a
    WebSocket frame's content, and keeps only ids of Celery's task lines (a handler's filter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in FRAME_CONTENT_FORMATS:
            return False
        if record.name.startswith("celery."):
            task_ids_only(record)
        for name, var in CONTEXT.items():
            if not hasattr(record, name):
                value = var.get()
                if value is not None:
                    setattr(record, name, value)
        return True


# Celery's task lines ("Task x[id] received", "... succeeded in 0.1s: <return value>", failures)
# pass the task's arguments and return value as the record's arguments and as ``extra={"data":
# ...}`` (which a JSON formatter writes out): only these fields are kept.
TASK_LINE_FIELDS = frozenset({"id", "name", "runtime", "eta", "hostname", "description", "exc", "traceback"})
_RETURN_VALUE = ": %(return_value)s"


def task_ids_only(record: logging.LogRecord) -> None:
    """A Celery record without task arguments or return values (message, arguments, ``data``)."""
    data = getattr(record, "data", None)
    if isinstance(data, Mapping):
        record.data = {key: value for key, value in data.items() if key in TASK_LINE_FIELDS}
    if isinstance(record.args, Mapping) and {"args", "kwargs", "return_value"} & set(record.args):
        if isinstance(record.msg, str):
            record.msg = record.msg.replace(_RETURN_VALUE, "")
        record.args = {key: value for key, value in record.args.items() if key in TASK_LINE_FIELDS}


FIELDS = ("request_id", "conn_id", "user", "route", "method", "status", "duration_ms", "outcome")


class PlainFormatter(logging.Formatter):
    """The human-readable line, with the context fields a record has as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS if hasattr(record, name))
        return f"{line} [{fields}]" if fields else line


class JsonFormatter(JsonLogFormatter):
    """python-json-logger's formatter with the traceback scrubbed (``core.logs.scrub_traceback``):
    it formats a record's ``exc_info`` anew instead of reusing the ``exc_text`` the redacting
    record factory made, so an exception's message (a URL with a token, a phone number, the text
    a socket handler was given) would otherwise reach the JSON line as it is."""

    def formatException(self, ei: Any) -> str:
        formatted = super().formatException(ei)  # a list of lines with ``exc_info_as_array`` (unused)
        return scrub_traceback(formatted if isinstance(formatted, str) else "\n".join(formatted))


JSON_FORMAT = "%(levelname)s %(name)s %(message)s"
JSON_RENAME = {"levelname": "level", "name": "logger", "message": "event"}


class RequestLogMiddleware:
    """One ``request`` line per HTTP request (method, route template, status, duration,
    outcome, the user's pseudonym), and the request id for every line written meanwhile. The
    path is not logged (it may hold ids or a signed link); ``X-Request-ID`` is taken when it
    looks like an id, else one is made, and it is echoed in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-ID", "")
        rid = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        tokens = (request_id.set(rid), user.set(None), route.set(None))
        try:
            response = self.get_response(request)
            match = request.resolver_match
            route.set(match.route if match is not None else "unmatched")
            account = getattr(request, "user", None)
            if account is not None and getattr(account, "is_authenticated", False):
                bind_user(account.pk)
            status = response.status_code
            outcome = "ok" if status < 400 else "refused" if status < 500 else "error"
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "outcome": outcome,
                },
            )
            response["X-Request-ID"] = rid
            return response
        finally:
            for var, token in zip((request_id, user, route), tokens, strict=True):
                var.reset(token)


def connect_celery() -> None:
    """Each task's log lines carry its id (``request_id``) and name (``route``); what the worker
    prints outside logging (``worker: Warm shutdown (MainProcess)`` when it is stopped) is a log
    record too, so under ``LOG_FORMAT=json`` every line of a worker is JSON."""
    from celery import signals
    from celery.apps import worker

    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_ended, weak=False)
    printed = getattr(worker, _WORKER_SAY)  # not in the module's __all__
    if not isinstance(printed, WorkerSay):
        setattr(worker, _WORKER_SAY, WorkerSay(printed))


_WORKER_SAY = "safe_say"


class WorkerSay:
    """``celery.apps.worker.safe_say`` (what the worker's signal handlers print straight to a
    stream): a log record of ``celery.worker`` under ``LOG_FORMAT=json``, Celery's own print
    otherwise."""

    def __init__(self, printed: Callable[..., None]) -> None:
        self.printed = printed

    def __call__(self, msg: str, f: Any = None) -> None:
        if getattr(settings, "LOG_FORMAT", "plain") == "json":
            logging.getLogger("celery.worker").warning(str(msg).strip())
            return
        if f is None:
            self.printed(msg)
        else:
            self.printed(msg, f)


_task_tokens: dict[str, tuple[Any, ...]] = {}


def _task_started(task_id: str = "", task: Any = None, **_: Any) -> None:
    # An eager task runs inside a request: its context is put back when it ends.
    _task_tokens[task_id] = (
        request_id.set(task_id or None),
        route.set(getattr(task, "name", None)),
        user.set(None),
    )


def _task_ended(task_id: str = "", **_: Any) -> None:
    tokens = _task_tokens.pop(task_id, None)
    if tokens is not None:
        for var, token in zip((request_id, route, user), tokens, strict=True):
            var.reset(token)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """``settings.LOGGING`` for ``plain`` (human-readable) or ``json`` lines."""
    formatter: dict[str, Any]
    if log_format == "json":
        formatter = {
            "()": "core.log_context.JsonFormatter",
            "fmt": JSON_FORMAT,
            "rename_fields": JSON_RENAME,
            "timestamp": True,  # ISO 8601, UTC, milliseconds
        }
    else:
        formatter = {"()": PlainFormatter, "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "core.log_context.ContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["context"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            "daphne": {"level": "WARNING"},
            # uvicorn's own handlers write plain lines: route them through the root handler.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Its access lines carry the path (ids, perhaps a file's name): in JSON, the
            # ``request`` line (route template) replaces them.
            "uvicorn.access": {
                "handlers": [],
                "propagate": True,
                "level": "WARNING" if log_format == "json" else "INFO",
            },
        },
    }
