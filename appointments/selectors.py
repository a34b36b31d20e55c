"""Reads: schedules, free slots, appointments (each scoped to who may see them)."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import DoctorProfile, User
from core.errors import NotFound

from . import listing, slots
from . import validators as v
from .models import Appointment, Schedule


def schedule_get(*, doctor_id: int) -> Schedule | None:
    return Schedule.objects.prefetch_related("windows", "exceptions").filter(doctor_id=doctor_id).first()


def rules_for(schedule: Schedule) -> slots.Rules:
    return slots.Rules(
        timezone=schedule.timezone,
        slot_minutes=schedule.slot_minutes,
        buffer_minutes=schedule.buffer_minutes,
        horizon_days=schedule.horizon_days,
        min_notice_minutes=schedule.min_notice_minutes,
        weekly=tuple((w.weekday, w.start, w.end) for w in schedule.windows.all()),
        exceptions=tuple((e.date, e.kind, e.start, e.end) for e in schedule.exceptions.all()),
    )


def bookable_schedule(*, doctor_id: int) -> Schedule:
    """A verified, active doctor's bookable schedule, or ``404 doctor_not_found``."""
    verified = DoctorProfile.objects.filter(
        user_id=doctor_id,
        verification_status=DoctorProfile.Verification.VERIFIED,
        user__is_active=True,
        user__deleted_at__isnull=True,
    ).exists()
    schedule = schedule_get(doctor_id=doctor_id) if verified else None
    if schedule is None or not schedule.bookable:
        raise NotFound("No such doctor, or they take no bookings.", code="doctor_not_found")
    return schedule


def busy(*, doctor_id: int, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    return list(
        Appointment.objects.filter(
            doctor_id=doctor_id, state__in=v.BLOCKING_STATES, starts_at__lt=end, ends_at__gt=start
        ).values_list("starts_at", "ends_at")
    )


def free_slots(
    *, schedule: Schedule, start: dt.datetime, end: dt.datetime, now: dt.datetime | None = None
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Free slots starting in ``[start, end)`` (two queries: the schedule is prefetched)."""
    rules = rules_for(schedule)
    taken = busy(doctor_id=schedule.doctor_id, start=start, end=end + dt.timedelta(days=1))
    return list(slots.compute(rules, start=start, end=end, now=now or timezone.now(), busy=taken))


def slots_for_dates(
    *, doctor_id: int, first: dt.date, last: dt.date, tz_name: str
) -> tuple[list[tuple[dt.datetime, dt.datetime]], dt.tzinfo]:
    """Free slots from ``first`` 00:00 to the end of ``last`` in the patient's zone (one query
    on PostgreSQL: ``appointments.listing``)."""
    tz = v.zone(tz_name, field="tz")
    v.check_range(first, last)
    start = dt.datetime.combine(first, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.UTC)
    return listing.free_slots(doctor_id=doctor_id, start=start, end=end), tz


def appointment_list(*, user: User) -> QuerySet[Appointment]:
    return (
        Appointment.objects.filter(Q(patient=user) | Q(doctor=user))
        .select_related("consultation")
        .order_by("-starts_at", "-id")
    )


def appointment_get(*, user: User, appointment_id: int) -> Appointment:
    """Only the patient and the doctor see an appointment; anyone else gets a 404."""
    appointment = (
        Appointment.objects.select_related("consultation")
        .prefetch_related("transitions")
        .filter(Q(patient=user) | Q(doctor=user), pk=appointment_id)
        .first()
    )
    if appointment is None:
        raise NotFound("No such appointment.", code="appointment_not_found")
    return appointment
