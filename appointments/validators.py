"""Appointment vocabulary and input checks (schedules, slot queries, bookings)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from core.errors import ApplicationError

HELD, CONFIRMED, RELEASED, CANCELLED = "held", "confirmed", "released", "cancelled"
NO_SHOW_DOCTOR = "no_show_doctor"
# The waiting room (appointments.waiting_room): the patient checked in, the doctor admitted them;
# the patient never checked in (appointments.no_shows).
CHECKED_IN, ADMITTED, NO_SHOW_PATIENT = "checked_in", "admitted", "no_show_patient"
STATES = (HELD, CONFIRMED, RELEASED, CANCELLED, NO_SHOW_DOCTOR, CHECKED_IN, ADMITTED, NO_SHOW_PATIENT)
# The states that occupy the doctor's time: the exclusion constraint covers exactly these.
BLOCKING_STATES = (HELD, CONFIRMED, CHECKED_IN, ADMITTED)
# Who may still cancel (an admitted appointment's consultation is cancelled or refunded instead)
# and move (a checked-in patient is in the waiting room: cancel instead).
CANCELLABLE_STATES = (HELD, CONFIRMED, CHECKED_IN)
RESCHEDULABLE_STATES = (HELD, CONFIRMED)
# Ended: nothing more happens to the appointment itself.
ENDED_STATES = (RELEASED, CANCELLED, NO_SHOW_DOCTOR, NO_SHOW_PATIENT)
START_CALL_MEDIA = ("audio", "video")
EXCEPTION_KINDS = ("off", "extra")
# On-demand requests (the first available doctor of a specialty).
OD_OPEN, OD_ACCEPTED, OD_CANCELLED, OD_EXPIRED = "open", "accepted", "cancelled", "expired"
OD_STATES = (OD_OPEN, OD_ACCEPTED, OD_CANCELLED, OD_EXPIRED)

SLOT_MINUTES_RANGE = (5, 240)
BUFFER_MINUTES_RANGE = (0, 120)
HORIZON_DAYS_RANGE = (1, 365)
MIN_NOTICE_MINUTES_RANGE = (0, 7 * 24 * 60)
MAX_QUERY_DAYS = 31
MAX_EXCEPTIONS = 366


def zone(value: Any, *, field: str = "timezone") -> zoneinfo.ZoneInfo:
    """An IANA time zone, or ``400 invalid_time_zone``."""
    try:
        if not isinstance(value, str) or not value or len(value) > 64:
            raise ValueError(value)
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ApplicationError(
            "invalid_time_zone",
            "Unknown time zone (use an IANA name such as Europe/London).",
            fields={field: ["invalid"]},
        ) from exc


def validate_time_zone(value: Any) -> str:
    zone(value)
    return str(value)


def _time(value: Any, field: str) -> dt.time:
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError as exc:
        raise ApplicationError("invalid_exceptions", "Times are HH:MM.", fields={field: ["invalid"]}) from exc


def validate_exceptions(value: Any) -> list[tuple[dt.date, str, dt.time | None, dt.time | None]]:
    """``[{date, kind: off|extra, start?, end?}]``: ``off`` without times is the whole day."""
    if not isinstance(value, list) or len(value) > MAX_EXCEPTIONS:
        raise ApplicationError("invalid_exceptions", f"A list of at most {MAX_EXCEPTIONS} exceptions.")
    out: list[tuple[dt.date, str, dt.time | None, dt.time | None]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"date", "kind", "start", "end"}:
            raise ApplicationError("invalid_exceptions", "Each exception is {date, kind, start?, end?}.")
        try:
            day = dt.date.fromisoformat(str(item.get("date")))
        except ValueError as exc:
            raise ApplicationError("invalid_exceptions", "Dates are YYYY-MM-DD.") from exc
        kind = item.get("kind")
        if kind not in EXCEPTION_KINDS:
            raise ApplicationError("invalid_exceptions", "kind is off or extra.")
        start = _time(item["start"], "start") if item.get("start") is not None else None
        end = _time(item["end"], "end") if item.get("end") is not None else None
        if (start is None) != (end is None) or (kind == "extra" and start is None):
            raise ApplicationError("invalid_exceptions", "Give both start and end (extra hours need them).")
        if start is not None and end is not None and start >= end:
            raise ApplicationError("invalid_exceptions", "start must be before end.")
        out.append((day, kind, start, end))
    return out


def check_range(start: dt.date, end: dt.date) -> None:
    if end < start or (end - start).days >= MAX_QUERY_DAYS:
        raise ApplicationError(
            "invalid_range", f"to must be on or after from, at most {MAX_QUERY_DAYS} days in all."
        )
