"""Helpers for appointments tests: doctors with schedules, built through the real services."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from accounts.tests.factories import DoctorFactory
from appointments import services
from appointments.models import Schedule


def doctor_with_schedule(
    *, tz: str = "Europe/London", weekly: list[tuple[int, str, str]] | None = None, **options: Any
) -> tuple[User, Schedule]:
    """A verified doctor (fee 3000) bookable every day 09:00-12:00 local unless told."""
    doctor: User = DoctorFactory.create(
        profile__verification_status="verified", profile__consultation_fee=3000, profile__currency="GBP"
    )
    hours = weekly if weekly is not None else [(d, "09:00", "12:00") for d in range(7)]
    schedule = services.schedule_set(
        doctor=doctor,
        timezone_name=tz,
        weekly_hours=[{"weekday": d, "start": s, "end": e} for d, s, e in hours],
        **{"slot_minutes": 20, "buffer_minutes": 10, "min_notice_minutes": 0, "horizon_days": 365, **options},
    )
    return doctor, schedule
