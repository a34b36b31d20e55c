"""Validation rules and the consultation state machine, shared by serializers, services and models."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import zoneinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings

from accounts.validators import CURRENCY_REGEX as ACCOUNTS_CURRENCY_REGEX
from core.errors import ApplicationError

CURRENCY_REGEX = ACCOUNTS_CURRENCY_REGEX
KINDS = ("chat", "voice", "video")
STATES = (
    "requested",
    "paid",
    "accepted",
    "in_progress",
    "completed",
    "declined",
    "cancelled",
    "expired",
    "refunded",
)
# A patient has at most one of these with a given doctor at a time.
OPEN_STATES = ("accepted", "in_progress", "paid", "requested")
# The money was captured and the doctor took the consultation.
TAKEN_STATES = ("accepted", "completed", "in_progress")
ENDED_STATES = ("cancelled", "declined", "expired", "refunded")
PROVIDERS = ("development", "stripe")
PAYOUT_STATUSES = ("none", "not_due", "pending", "transferred")
LEDGER_KINDS = ("charge", "fee", "refund", "transfer")
# Who caused a transition or a ledger entry.
SOURCES = ("admin", "api", "command", "reconcile", "system", "task", "webhook")
OUTSIDE_HOURS = ("queue", "refuse")
REASON_MAX = 2000

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pay": (("requested",), "paid"),
    "accept": (("paid",), "accepted"),
    "start": (("accepted",), "in_progress"),
    "complete": (("accepted", "in_progress"), "completed"),
    "decline": (("paid", "requested"), "declined"),
    "cancel": (("paid", "requested"), "cancelled"),
    "expire": (("paid", "requested"), "expired"),
    "refund": (("accepted", "completed", "in_progress"), "refunded"),
}
# Actions a participant may take through the API, and who.
DOCTOR_ACTIONS = ("accept", "cancel", "complete", "decline", "start")
PATIENT_ACTIONS = ("cancel",)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def check_transition(*, state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``; ``invalid_transition`` (409) otherwise."""
    sources, target = TRANSITIONS[action]
    if state not in sources:
        raise ApplicationError(
            "invalid_transition",
            f"A consultation that is {state.replace('_', ' ')} cannot be {_past(action)}.",
            status=409,
            extra={"state": state},
        )
    return target


def _past(action: str) -> str:
    return {"pay": "paid", "start": "started", "expire": "expired"}.get(
        action, action + ("d" if action.endswith("e") else "ed")
    )


def validate_kind(value: Any) -> str:
    if value not in KINDS:
        raise ApplicationError(
            "invalid_kind", "kind must be chat, voice or video.", fields={"kind": ["invalid_choice"]}
        )
    return str(value)


def validate_reason(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApplicationError("invalid_reason", "reason must be text.", fields={"reason": ["invalid"]})
    text = value.strip()
    if len(text) > REASON_MAX:
        raise ApplicationError(
            "reason_too_long",
            f"reason may have at most {REASON_MAX} characters.",
            fields={"reason": ["max_length"]},
        )
    if _CONTROL.search(text):
        raise ApplicationError(
            "invalid_reason", "reason contains control characters.", fields={"reason": ["invalid"]}
        )
    return text


def validate_timezone(value: Any) -> str:
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ApplicationError(
            "invalid_timezone", "Unknown time zone.", fields={"timezone": ["invalid"]}
        ) from exc
    return str(value)


def validate_outside_hours(value: Any) -> str:
    if value not in OUTSIDE_HOURS:
        raise ApplicationError(
            "invalid_outside_hours",
            "outside_hours must be refuse or queue.",
            fields={"outside_hours": ["invalid_choice"]},
        )
    return str(value)


def validate_weekly_hours(value: Any) -> list[tuple[int, dt.time, dt.time]]:
    """``[{weekday: 0-6, start: "HH:MM", end: "HH:MM"}]``: start before end, no overlaps."""
    if not isinstance(value, list) or len(value) > 7 * 8:
        raise ApplicationError(
            "invalid_weekly_hours",
            "weekly_hours must be a list of windows.",
            fields={"weekly_hours": ["invalid"]},
        )
    windows: list[tuple[int, dt.time, dt.time]] = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"weekday", "start", "end"}
            or not isinstance(item["weekday"], int)
            or isinstance(item["weekday"], bool)
            or not 0 <= item["weekday"] <= 6
            or not isinstance(item["start"], str)
            or not isinstance(item["end"], str)
            or not _TIME.match(item["start"])
            or not _TIME.match(item["end"])
        ):
            raise ApplicationError(
                "invalid_weekly_hours",
                'Each window is {"weekday": 0-6 (Monday = 0), "start": "HH:MM", "end": "HH:MM"}.',
                fields={"weekly_hours": ["invalid"]},
            )
        start, end = dt.time.fromisoformat(item["start"]), dt.time.fromisoformat(item["end"])
        if start >= end:
            raise ApplicationError(
                "invalid_weekly_hours",
                "A window must start before it ends.",
                fields={"weekly_hours": ["invalid"]},
            )
        windows.append((item["weekday"], start, end))
    windows.sort()
    for (day_a, _, end_a), (day_b, start_b, _) in itertools.pairwise(windows):
        if day_a == day_b and start_b < end_a:
            raise ApplicationError(
                "invalid_weekly_hours",
                "Windows of one day must not overlap.",
                fields={"weekly_hours": ["overlap"]},
            )
    return windows


def validate_refund_amount(*, amount: int | None, refundable: int) -> int:
    """A refund of ``amount`` minor units (None: everything still refundable)."""
    if refundable <= 0:
        raise ApplicationError("nothing_to_refund", "Nothing is left to refund.", status=409)
    if amount is None:
        return refundable
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ApplicationError(
            "invalid_amount",
            "amount must be a positive whole number of minor units.",
            fields={"amount": ["invalid"]},
        )
    if amount > refundable:
        raise ApplicationError(
            "refund_too_large",
            f"At most {refundable} can still be refunded.",
            fields={"amount": ["max_value"]},
        )
    return amount


def platform_fee_for(price: int) -> int:
    """The platform's part of ``price`` (PLATFORM_FEE_PERCENT, rounded half to even)."""
    percent = Decimal(str(settings.PLATFORM_FEE_PERCENT))
    if not Decimal(0) <= percent <= Decimal(100):
        raise ApplicationError("misconfigured", "PLATFORM_FEE_PERCENT must be within 0-100.", status=500)
    return int((Decimal(price) * percent / Decimal(100)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def proportional(amount: int, numerator: int, denominator: int) -> int:
    """``amount * numerator / denominator`` rounded half to even (0 when the denominator is 0)."""
    if denominator == 0:
        return 0
    return int(
        (Decimal(amount) * Decimal(numerator) / Decimal(denominator)).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
    )
