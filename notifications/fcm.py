"""The one adapter around firebase-admin messaging. Nothing else imports the SDK for push.

``send_batch`` takes neutral ``Push`` values (built by ``notifications.services``) and returns
one ``Result`` per push, in order. Backends (``PUSH_BACKEND``):

- ``fcm``: Firebase Cloud Messaging HTTP v1 through firebase-admin's ``send_each`` (one HTTP
  request per push, run concurrently; batches of at most ``BATCH_SIZE``). Credentials: the
  service account in ``FIREBASE_CREDENTIALS``, or anonymous credentials (tests, fakes).
- ``log``: the embedded default; each push is written to the log with its kind, collapse key,
  priority and data ids: never the title or body.

Errors are sorted into what the caller must do: prune the token (``UNREGISTERED``,
``INVALID_ARGUMENT`` naming the token), retry later (5xx, 429, timeouts, network), or give up
on this push and log it (any other rejection, e.g. ``SENDER_ID_MISMATCH``: a configuration
problem must never make us delete every token).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import logging
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import firebase_admin
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from firebase_admin import exceptions, messaging

from accounts.firebase import app_credential

logger = logging.getLogger("healthchat.push")

BACKENDS = ("log", "fcm")
BATCH_SIZE = 100  # send_each runs one thread per push: keep batches modest (FCM allows 500)
_APP_NAME = "healthchat-push"
_lock = threading.Lock()


class Outcome(enum.StrEnum):
    SENT = "sent"
    UNREGISTERED = "unregistered"  # the app instance is gone: prune the token
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an outcome name; the token is malformed: prune it
    TRANSIENT = "transient"  # retry later with backoff
    REJECTED = "rejected"  # FCM refused this push for another reason: give up, log


@dataclass(frozen=True)
class Push:
    """One push to one app instance: a registration ``token``, or else a Firebase ``fid``."""

    kind: str
    data: dict[str, str]
    token: str | None = None
    fid: str | None = None
    title: str | None = None  # no title and body: a data-only push
    body: str | None = None
    collapse_key: str | None = None
    tag: str | None = None  # Android: a later notification with this tag replaces the earlier
    priority: Literal["normal", "high"] = "normal"
    ttl_seconds: int = 86400
    badge: int | None = None
    channel_id: str | None = None

    @property
    def data_only(self) -> bool:
        return self.title is None and self.body is None


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message_id: str = ""
    code: str = ""  # the FCM / platform error code, for the outbox row and logs
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SENT


def backend() -> str:
    name = settings.PUSH_BACKEND
    if name not in BACKENDS:
        raise ImproperlyConfigured(f"PUSH_BACKEND must be one of {', '.join(BACKENDS)}, not {name!r}")
    return str(name)


def send_batch(pushes: Sequence[Push]) -> list[Result]:
    """Send every push; one result per push, in order. Never raises for a push's failure."""
    if not pushes:
        return []
    if backend() == "log":
        return [_log(push) for push in pushes]
    results: list[Result] = []
    for start in range(0, len(pushes), BATCH_SIZE):
        results.extend(_send_fcm(list(pushes[start : start + BATCH_SIZE])))
    return results


# --- log backend ----------------------------------------------------------------------------
def _log(push: Push) -> Result:
    logger.info(
        "push (log backend) kind=%s data_only=%s collapse=%s priority=%s ttl=%s badge=%s data=%s",
        push.kind,
        push.data_only,
        push.collapse_key,
        push.priority,
        push.ttl_seconds,
        push.badge,
        json.dumps(push.data, sort_keys=True),
    )
    return Result(Outcome.SENT, message_id=f"log:{uuid.uuid4().hex}")


# --- FCM backend ----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _app() -> firebase_admin.App:
    with _lock:
        try:
            return firebase_admin.get_app(_APP_NAME)
        except ValueError:
            pass
        cred = app_credential()
        options = {
            "projectId": settings.FIREBASE_PROJECT_ID,
            "httpTimeout": settings.PUSH_HTTP_TIMEOUT_SECONDS,
        }
        return firebase_admin.initialize_app(cred, options, name=_APP_NAME)


def reset_app() -> None:
    """Forget the firebase-admin app (tests that change credentials or project)."""
    with _lock:
        _app.cache_clear()
        with contextlib.suppress(ValueError):
            firebase_admin.delete_app(firebase_admin.get_app(_APP_NAME))


def _to_message(push: Push) -> messaging.Message:
    ttl = dt.timedelta(seconds=push.ttl_seconds)
    notification = None if push.data_only else messaging.Notification(title=push.title, body=push.body)
    android_notification = None
    if not push.data_only:
        android_notification = messaging.AndroidNotification(
            tag=push.tag,
            channel_id=push.channel_id,
            notification_count=push.badge,
            visibility="private",  # the lock screen shows a redacted version
        )
    android = messaging.AndroidConfig(
        collapse_key=push.collapse_key,
        priority=push.priority,
        ttl=ttl,
        notification=android_notification,
    )
    apns_headers = {
        "apns-priority": "10" if push.priority == "high" and not push.data_only else "5",
        "apns-push-type": "background" if push.data_only else "alert",
        "apns-expiration": str(int(dt.datetime.now(dt.UTC).timestamp()) + push.ttl_seconds),
    }
    if push.collapse_key:
        apns_headers["apns-collapse-id"] = push.collapse_key[:64]
    aps = (
        messaging.Aps(content_available=True)
        if push.data_only
        else messaging.Aps(badge=push.badge, sound="default", thread_id=push.tag)
    )
    apns = messaging.APNSConfig(headers=apns_headers, payload=messaging.APNSPayload(aps=aps))
    with warnings.catch_warnings():
        # firebase-admin 7.5+ prefers ``fid``; registration tokens are what most clients have.
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(
            data=push.data,
            notification=notification,
            android=android,
            apns=apns,
            token=push.token if push.token else None,
            fid=None if push.token else push.fid,
        )


def _send_fcm(pushes: list[Push]) -> list[Result]:
    results: list[Result | None] = [None] * len(pushes)
    messages: list[messaging.Message] = []
    positions: list[int] = []
    for index, push in enumerate(pushes):
        try:
            messages.append(_to_message(push))
            positions.append(index)
        except ValueError as exc:  # our payload is wrong: a bug to log, not a token to prune
            logger.error("push payload refused by the SDK (kind=%s): %s", push.kind, exc)
            results[index] = Result(Outcome.REJECTED, code="invalid_payload")
    if messages:
        try:
            batch = messaging.send_each(messages, app=_app())
        except exceptions.FirebaseError as exc:
            logger.warning("FCM batch failed: %s", exc.code)
            for index in positions:
                results[index] = Result(Outcome.TRANSIENT, code=str(exc.code))
        else:
            for index, response in zip(positions, batch.responses, strict=True):
                if response.success:
                    results[index] = Result(Outcome.SENT, message_id=str(response.message_id))
                else:
                    results[index] = classify(response.exception)
    return [r if r is not None else Result(Outcome.TRANSIENT, code="unknown") for r in results]


def _error_details(exc: exceptions.FirebaseError) -> tuple[str, list[dict[str, Any]]]:
    """The FCM error code and the ``details`` of the error body, when there is one."""
    response = exc.http_response
    if response is None:
        return "", []
    try:
        body = response.json()
    except ValueError:
        return "", []
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details", []) if isinstance(error, dict) else []
    details = [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    fcm_code = next(
        (
            str(d.get("errorCode"))
            for d in details
            if d.get("@type") == "type.googleapis.com/google.firebase.fcm.v1.FcmError"
        ),
        "",
    )
    return fcm_code, details


def _names_target(details: list[dict[str, Any]], message: str) -> bool:
    """Does a 400 INVALID_ARGUMENT blame the registration token (or fid) itself?"""
    for detail in details:
        for violation in detail.get("fieldViolations", []) or []:
            if isinstance(violation, dict) and violation.get("field") in ("message.token", "message.fid"):
                return True
    return "registration token" in message.lower()


def classify(exc: BaseException | None) -> Result:
    """Turn a per-push FirebaseError into what the caller must do about it."""
    if not isinstance(exc, exceptions.FirebaseError):
        return Result(Outcome.TRANSIENT, code="unknown")
    fcm_code, details = _error_details(exc)
    code = fcm_code or str(exc.code)
    status = exc.http_response.status_code if exc.http_response is not None else None
    if isinstance(exc, messaging.UnregisteredError):
        return Result(Outcome.UNREGISTERED, code="UNREGISTERED")
    if isinstance(exc, exceptions.InvalidArgumentError):
        if _names_target(details, str(exc)):
            return Result(Outcome.INVALID_TOKEN, code=code)
        return Result(Outcome.REJECTED, code=code)
    if status is None or status >= 500 or status in (401, 408, 429):
        return Result(Outcome.TRANSIENT, code=code)
    # SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, PERMISSION_DENIED, NOT_FOUND without a code:
    # a configuration problem or a refusal; retrying will not help, pruning would be wrong.
    return Result(Outcome.REJECTED, code=code)
