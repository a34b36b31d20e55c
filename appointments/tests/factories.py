"""Helpers for appointments tests: doctors with schedules, built through the real services."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import DoctorFactory
from appointments import selectors, services
from appointments.models import Appointment, Schedule


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


def confirmed_appointment(
    stripe_fake: Any,
    *,
    starts_in: dt.timedelta,
    kind: str = "video",
    doctor: User | None = None,
    patient_name: str | None = None,
    minutes: int = 20,
) -> Appointment:
    """A booked appointment whose payment the fake Stripe authorised (webhook), then moved to
    start ``starts_in`` from now (negative: it started that long ago). A new doctor bookable all
    day unless ``doctor`` is given."""
    from accounts.tests.factories import DeviceFactory, PatientFactory
    from payments.tests.conftest import post_event

    if doctor is None:
        doctor, _ = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    schedule = selectors.bookable_schedule(doctor_id=doctor.pk)
    patient = PatientFactory.create(**({"display_name": patient_name} if patient_name else {}))
    DeviceFactory.create(user=patient)
    start = timezone.now() + dt.timedelta(days=2)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind=kind, reason="secret-reason: fever"
    )
    assert appointment.consultation is not None
    intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
    post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    return move_start(appointment, starts_in=starts_in, minutes=minutes)


def move_start(appointment: Appointment, *, starts_in: dt.timedelta, minutes: int = 20) -> Appointment:
    """Move an appointment in time (as if the clock had run): starts ``starts_in`` from now and
    lasts ``minutes``."""
    began = timezone.now() + starts_in
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=began, ends_at=began + dt.timedelta(minutes=minutes)
    )
    appointment.refresh_from_db()
    return appointment
