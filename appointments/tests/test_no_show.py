"""The doctor never admits: no_show_doctor, the authorisation released in full at Stripe, an
apology push without medical content; an admitted (accepted) appointment is not a no-show."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.tests.factories import DeviceFactory, PatientFactory
from appointments import selectors, services, tasks
from appointments.models import Appointment
from appointments.tests.factories import doctor_with_schedule
from notifications.tests.conftest import run_queued
from payments import selectors as payment_selectors
from payments import services as payment_services
from payments.tests.conftest import post_event

pytestmark = pytest.mark.django_db


def started_appointment(stripe_fake):
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    patient = PatientFactory.create()
    DeviceFactory.create(user=patient)
    start = timezone.now() + dt.timedelta(days=2)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="video", reason="secret-reason: fever"
    )
    assert appointment.consultation is not None
    intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
    post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    # The appointment started 20 minutes ago (the sweep's threshold is 15).
    began = timezone.now() - dt.timedelta(minutes=20)
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=began, ends_at=began + dt.timedelta(minutes=20)
    )
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    return appointment, patient, doctor


def test_doctor_no_show_releases_in_full_and_apologises(
    stripe_fake, enqueued, fake_fcm, django_capture_on_commit_callbacks
):
    appointment, _, _ = started_appointment(stripe_fake)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_no_shows() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_no_shows() == 0  # once
    appointment.refresh_from_db()
    assert appointment.state == "no_show_doctor"
    consultation = appointment.consultation
    assert consultation is not None
    assert consultation.state == "expired"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"
    assert payment_selectors.ledger_summary(consultation_id=consultation.pk).charge == 0
    run_queued(enqueued)
    (message,) = fake_fcm.messages
    assert message["data"]["type"] == "appointment.apology"
    assert "secret-reason" not in fake_fcm.raw
    assert [t.to_state for t in appointment.transitions.all()][-1] == "no_show_doctor"


def test_an_admitted_appointment_is_not_a_no_show(stripe_fake):
    appointment, _, doctor = started_appointment(stripe_fake)
    assert appointment.consultation is not None
    payment_services.consultation_accept(user=doctor, consultation_id=appointment.consultation.pk)
    assert tasks.sweep_no_shows() == 0
    assert services.doctor_no_show(appointment_id=appointment.pk).state == "confirmed"


def test_not_yet_past_the_grace(stripe_fake):
    appointment, _, _ = started_appointment(stripe_fake)
    Appointment.objects.filter(pk=appointment.pk).update(starts_at=timezone.now() - dt.timedelta(minutes=5))
    assert tasks.sweep_no_shows() == 0
    assert Appointment.objects.get(pk=appointment.pk).state == "confirmed"
