"""System checks for push configuration (``manage.py check``; the warnings with ``--deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from . import fcm


def push_backend_valid(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.PUSH_BACKEND in fcm.BACKENDS:
        return []
    return [checks.Error(f"PUSH_BACKEND must be one of {', '.join(fcm.BACKENDS)}.", id="notifications.E001")]


def push_reaches_phones(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.PUSH_BACKEND == "log":
        return [
            checks.Warning(
                "PUSH_BACKEND is 'log': pushes are only written to the log.",
                hint="Set FIREBASE_CREDENTIALS (PUSH_BACKEND then defaults to fcm).",
                id="notifications.W001",
            )
        ]
    if settings.PUSH_BACKEND == "fcm" and not settings.FIREBASE_CREDENTIALS:
        return [
            checks.Warning(
                "PUSH_BACKEND is 'fcm' without FIREBASE_CREDENTIALS: FCM will refuse the requests.",
                id="notifications.W002",
            )
        ]
    return []


def register() -> None:
    checks.register(push_backend_valid, checks.Tags.compatibility)
    checks.register(push_reaches_phones, checks.Tags.compatibility, deploy=True)
