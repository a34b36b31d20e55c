"""Appointments in the data export (``GET /api/v1/me/export``) and in account erasure."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts import services as account_services
from accounts.actors import Operator
from accounts.models import Specialty
from accounts.tests.factories import DoctorFactory, PatientFactory
from appointments import calendar, on_demand, selectors, services
from appointments.models import Appointment, CalendarFeed, OnDemandRequest, Schedule
from appointments.tests.factories import doctor_with_schedule
from payments.tests.conftest import post_event

pytestmark = pytest.mark.django_db


def confirmed(stripe_fake, doctor, schedule, patient, days: int = 3) -> Appointment:
    start = timezone.now() + dt.timedelta(days=days)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="video", reason="my secret reason"
    )
    assert appointment.consultation is not None
    intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
    post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    return appointment


def test_export_has_appointments_schedule_and_requests(stripe_fake):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    appointment = confirmed(stripe_fake, doctor, schedule, patient)
    calendar.feed_rotate(doctor=doctor)
    Specialty.objects.get_or_create(slug="gp", defaults={"name": "GP"})
    on_demand.request_create(patient=patient, specialty="gp", kind="chat", reason="sore throat")
    assert "appointments" in account_services.export_section_names()

    mine = account_services.user_export(user=patient)["appointments"]
    (row,) = mine["appointments"]
    assert (row["id"], row["role"], row["state"]) == (appointment.pk, "patient", "confirmed")
    assert [t["to"] for t in row["transitions"]] == ["held", "confirmed"]
    assert mine["schedule"] is None
    assert mine["on_demand"][0]["reason"] == "sore throat"

    theirs = account_services.user_export(user=doctor)["appointments"]
    assert theirs["appointments"][0]["role"] == "doctor"
    assert theirs["schedule"]["timezone"] == "Europe/London"
    assert len(theirs["schedule"]["weekly_hours"]) == 7
    assert theirs["calendar_feed"] is True
    assert theirs["on_demand"] == []
    # Nothing of the other person beyond ids, no token hash.
    assert CalendarFeed.objects.get(doctor=doctor).token_hash not in str(theirs)


def test_erasing_a_patient_cancels_their_open_appointments_and_requests(stripe_fake, firebase_admin_api):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    appointment = confirmed(stripe_fake, doctor, schedule, patient)
    Specialty.objects.get_or_create(slug="gp", defaults={"name": "GP"})
    request = on_demand.request_create(patient=patient, specialty="gp", kind="chat", reason="sore throat")
    account_services.user_delete(user=patient, actor=Operator(command="test"))
    appointment.refresh_from_db()
    assert appointment.state == "cancelled"
    assert appointment.transitions.last().note == "account erased, refunded in full"
    assert appointment.consultation.state == "cancelled"
    assert stripe_fake.payment_intent(appointment.consultation.payment_intent_id)["status"] == "canceled"
    assert not appointment.reminders.filter(sent_at__isnull=True).exists()
    request.refresh_from_db()
    assert (request.state, request.reason) == ("cancelled", "")
    # The slot is free again.
    free = selectors.free_slots(
        schedule=schedule, start=appointment.starts_at, end=appointment.starts_at + dt.timedelta(minutes=1)
    )
    assert free[0][0] == appointment.starts_at


def test_erasing_a_doctor_refunds_their_patients_and_removes_schedule_and_feed(
    stripe_fake, firebase_admin_api
):
    doctor, schedule = doctor_with_schedule()
    patients = [PatientFactory.create() for _ in range(2)]
    appointments = [confirmed(stripe_fake, doctor, schedule, p, days=3 + i) for i, p in enumerate(patients)]
    calendar.feed_rotate(doctor=doctor)
    other_doctor = DoctorFactory.create()
    account_services.user_delete(user=doctor, actor=Operator(command="test"))
    for appointment in appointments:
        appointment.refresh_from_db()
        assert appointment.state == "cancelled"
        assert appointment.consultation.state == "cancelled"
    assert not Schedule.objects.filter(doctor=doctor).exists()
    assert not CalendarFeed.objects.filter(doctor=doctor).exists()
    assert Schedule.objects.filter(doctor=other_doctor).count() == 0  # nobody else touched
    assert OnDemandRequest.objects.count() == 0
