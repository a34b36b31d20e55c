"""No-shows (appointments.no_shows, swept by the beat task):

- the doctor never admits a checked-in patient: no_show_doctor, the authorisation released in
  full at Stripe, an apology push without medical content; an admitted appointment (admission
  or the consultation accepted the old way) is not a no-show;
- the patient never checks in: no_show_patient, the policy's fee captured and settled in the
  ledger (or everything released at 0 %), a push without medical content, the transition logged.
"""

from __future__ import annotations

import datetime as dt

import pytest

from appointments import no_shows, tasks, waiting_room
from appointments.models import Appointment
from appointments.tests.factories import confirmed_appointment, move_start
from notifications.tests.conftest import run_queued
from payments import selectors as payment_selectors
from payments import services as payment_services

pytestmark = pytest.mark.django_db


def checked_in(stripe_fake, *, started_ago: int = 20) -> Appointment:
    """Checked in 5 minutes before the start; the start was ``started_ago`` minutes ago."""
    appointment = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=5))
    waiting_room.check_in(user=appointment.patient, appointment_id=appointment.pk)
    return move_start(appointment, starts_in=dt.timedelta(minutes=-started_ago))


def test_doctor_no_show_releases_in_full_and_apologises(
    stripe_fake, enqueued, fake_fcm, django_capture_on_commit_callbacks
):
    appointment = checked_in(stripe_fake)
    assert appointment.state == "checked_in"
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
    appointment = checked_in(stripe_fake)
    waiting_room.admit(user=appointment.doctor, appointment_id=appointment.pk)
    assert tasks.sweep_no_shows() == 0
    assert no_shows.doctor_no_show(appointment_id=appointment.pk) is None
    assert Appointment.objects.get(pk=appointment.pk).state == "admitted"


def test_accepting_the_consultation_still_admits(stripe_fake):
    """The way before the waiting room: the doctor accepts the consultation itself."""
    appointment = checked_in(stripe_fake)
    assert appointment.consultation is not None
    payment_services.consultation_accept(user=appointment.doctor, consultation_id=appointment.consultation.pk)
    appointment.refresh_from_db()
    assert appointment.state == "admitted"
    assert appointment.admitted_at is not None
    assert tasks.sweep_no_shows() == 0


def test_not_yet_past_the_grace(stripe_fake):
    appointment = checked_in(stripe_fake, started_ago=5)
    assert tasks.sweep_no_shows() == 0
    assert Appointment.objects.get(pk=appointment.pk).state == "checked_in"


def test_patient_no_show_keeps_the_policy_fee(
    stripe_fake, enqueued, fake_fcm, settings, django_capture_on_commit_callbacks
):
    settings.APPOINTMENT_PATIENT_GRACE_MINUTES = 10
    settings.APPOINTMENT_NO_SHOW_FEE_PERCENT = 40
    appointment = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=-11))
    assert appointment.state == "confirmed"
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_no_shows() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_no_shows() == 0  # once
    appointment.refresh_from_db()
    assert appointment.state == "no_show_patient"
    transition = appointment.transitions.last()
    assert transition is not None
    assert (transition.from_state, transition.to_state, transition.source) == (
        "confirmed",
        "no_show_patient",
        "task",
    )
    assert transition.note == "patient did not check in, fee 1200"
    consultation = appointment.consultation
    assert consultation is not None
    consultation.refresh_from_db()
    capture = stripe_fake.calls("POST", f"/v1/payment_intents/{consultation.payment_intent_id}/capture")
    assert [c.params["amount_to_capture"] for c in capture] == ["1200"]  # 40 % of 3000
    assert consultation.state == "completed"
    summary = payment_selectors.ledger_summary(consultation_id=consultation.pk)
    assert summary.charge == 1200
    assert summary.fee == 180  # the platform's 15 %
    assert summary.charge + summary.refunded == summary.fee + summary.transfer + summary.held
    run_queued(enqueued)
    (message,) = fake_fcm.messages
    assert message["data"]["type"] == "appointment.missed"
    assert message["data"]["appointment_id"] == str(appointment.pk)
    assert "secret-reason" not in fake_fcm.raw
    assert "fever" not in fake_fcm.raw


def test_patient_no_show_at_zero_percent_releases_everything(stripe_fake, settings):
    settings.APPOINTMENT_NO_SHOW_FEE_PERCENT = 0
    appointment = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=-30))
    assert no_shows.patient_no_show(appointment_id=appointment.pk) is not None
    appointment.refresh_from_db()
    assert appointment.state == "no_show_patient"
    consultation = appointment.consultation
    assert consultation is not None
    assert consultation.state == "expired"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"
    assert payment_selectors.ledger_summary(consultation_id=consultation.pk).charge == 0


def test_patient_within_the_grace_or_checked_in_is_not_a_no_show(stripe_fake, settings):
    settings.APPOINTMENT_PATIENT_GRACE_MINUTES = 10
    early = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=-9))
    waiting = checked_in(stripe_fake, started_ago=12)
    settings.APPOINTMENT_DOCTOR_NO_SHOW_MINUTES = 15
    assert tasks.sweep_no_shows() == 0
    assert Appointment.objects.get(pk=early.pk).state == "confirmed"
    assert Appointment.objects.get(pk=waiting.pk).state == "checked_in"
    assert no_shows.patient_no_show(appointment_id=waiting.pk) is None
