"""Cancel and reschedule with the policy: early free, late fee (captured and settled in the
ledger), the doctor always free, too late after the start; moving to another free slot."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.tests.factories import PatientFactory
from appointments import selectors, services
from appointments.models import Appointment
from appointments.tests.factories import doctor_with_schedule
from payments import selectors as payment_selectors
from payments.tests.conftest import post_event

pytestmark = pytest.mark.django_db


def confirmed(stripe_fake, *, hours_ahead: float):
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    patient = PatientFactory.create()
    start = timezone.now() + dt.timedelta(hours=hours_ahead)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="chat")
    assert appointment.consultation is not None
    intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
    post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    return appointment, patient, doctor, schedule


def code(response, status: int) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["code"]


def test_early_patient_cancel_releases_everything(client_for, stripe_fake):
    appointment, patient, _, _ = confirmed(stripe_fake, hours_ahead=48)
    answer = client_for(patient).post(f"/api/v1/appointments/{appointment.pk}/cancel", {}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["state"] == "cancelled"
    consultation = Appointment.objects.get(pk=appointment.pk).consultation
    assert consultation is not None
    assert consultation.state == "cancelled"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"
    summary = payment_selectors.ledger_summary(consultation_id=consultation.pk)
    assert summary.charge == 0  # nothing was captured: nothing to refund
    # Repeating is harmless; the slot is free again.
    assert (
        client_for(patient)
        .post(f"/api/v1/appointments/{appointment.pk}/cancel", {}, format="json")
        .status_code
        == 200
    )
    assert Appointment.objects.filter(state__in=["held", "confirmed"]).count() == 0


def test_late_patient_cancel_keeps_the_fee_in_the_ledger(client_for, stripe_fake, settings):
    settings.APPOINTMENT_LATE_CANCEL_FEE_PERCENT = 50
    appointment, patient, _, _ = confirmed(stripe_fake, hours_ahead=3)
    answer = client_for(patient).post(f"/api/v1/appointments/{appointment.pk}/cancel", {}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["transitions"][-1]["note"] == "late cancellation, fee 1500"
    consultation = Appointment.objects.get(pk=appointment.pk).consultation
    assert consultation is not None
    capture = stripe_fake.calls("POST", f"/v1/payment_intents/{consultation.payment_intent_id}/capture")
    assert [c.params["amount_to_capture"] for c in capture] == ["1500"]
    assert consultation.state == "completed"
    summary = payment_selectors.ledger_summary(consultation_id=consultation.pk)
    # 1500 charged; the platform keeps 15 % of it, the doctor's share is held until they
    # can receive payouts.
    assert summary.charge == 1500
    assert summary.fee == 225
    assert summary.charge + summary.refunded == summary.fee + summary.transfer + summary.held


def test_doctor_cancel_is_always_free_for_the_patient(client_for, stripe_fake):
    appointment, _, doctor, _ = confirmed(stripe_fake, hours_ahead=3)
    answer = client_for(doctor).post(f"/api/v1/appointments/{appointment.pk}/cancel", {}, format="json")
    assert answer.status_code == 200, answer.content
    consultation = Appointment.objects.get(pk=appointment.pk).consultation
    assert consultation is not None
    assert consultation.state == "cancelled"
    assert stripe_fake.calls("POST", f"/v1/payment_intents/{consultation.payment_intent_id}/capture") == []
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"


def test_too_late_to_cancel_after_the_start_and_strangers_see_nothing(client_for, stripe_fake):
    appointment, patient, _, _ = confirmed(stripe_fake, hours_ahead=3)
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=timezone.now() - dt.timedelta(minutes=1), ends_at=timezone.now() + dt.timedelta(minutes=19)
    )
    url = f"/api/v1/appointments/{appointment.pk}/cancel"
    assert code(client_for(patient).post(url, {}, format="json"), 409) == "too_late_to_cancel"
    assert (
        code(client_for(PatientFactory.create()).post(url, {}, format="json"), 404) == "appointment_not_found"
    )
    assert Appointment.objects.get(pk=appointment.pk).state == "confirmed"


def test_reschedule_moves_to_a_free_slot(client_for, stripe_fake):
    appointment, patient, doctor, _ = confirmed(stripe_fake, hours_ahead=48)
    later = appointment.starts_at + dt.timedelta(hours=2)
    answer = client_for(patient).post(
        f"/api/v1/appointments/{appointment.pk}/reschedule", {"starts_at": later.isoformat()}, format="json"
    )
    assert answer.status_code == 200, answer.content
    appointment.refresh_from_db()
    assert appointment.starts_at == later
    assert appointment.state == "confirmed"
    assert appointment.transitions.last().note.startswith("rescheduled from")
    assert appointment.consultation is not None
    assert appointment.consultation.expires_at == appointment.ends_at + dt.timedelta(minutes=30)

    # Someone else's slot, a time off the grid, and too close to the start.
    other = services.appointment_book(
        patient=PatientFactory.create(),
        doctor_id=doctor.pk,
        starts_at=later + dt.timedelta(minutes=30),
        kind="chat",
    )
    url = f"/api/v1/appointments/{appointment.pk}/reschedule"
    api = client_for(patient)
    assert (
        code(api.post(url, {"starts_at": other.starts_at.isoformat()}, format="json"), 409)
        == "outside_availability"
    )
    assert code(
        api.post(url, {"starts_at": (later + dt.timedelta(minutes=7)).isoformat()}, format="json"), 409
    ) == ("outside_availability")
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=timezone.now() + dt.timedelta(hours=1),
        ends_at=timezone.now() + dt.timedelta(hours=1, minutes=20),
    )
    assert (
        code(api.post(url, {"starts_at": later.isoformat()}, format="json"), 409) == "too_late_to_reschedule"
    )
