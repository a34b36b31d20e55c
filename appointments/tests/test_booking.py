"""Booking: the hold, the payment (Stripe faked at the HTTP boundary), confirmation, release,
50 concurrent bookings of one slot, who sees what."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from accounts.tests.factories import PatientFactory
from appointments import selectors, services, tasks
from appointments.models import Appointment
from appointments.tests.factories import doctor_with_schedule
from core.errors import ApplicationError
from payments.models import Consultation
from payments.tests.conftest import post_event


def first_slot(schedule, days_ahead: int = 2) -> dt.datetime:
    start = timezone.now() + dt.timedelta(days=days_ahead)
    return selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]


def error_code(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.content)
    return response.json()["error"]["code"]


@pytest.mark.django_db
def test_book_hold_authorise_confirm(client_for, stripe_fake):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    start = first_slot(schedule)
    answer = client_for(patient).post(
        "/api/v1/appointments",
        {"doctor_id": doctor.pk, "starts_at": start.isoformat(), "kind": "video", "reason": "Rash"},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["appointment"]["state"] == "held"
    assert body["payment"]["client_secret"]
    pi_id = body["payment"]["payment_intent_id"]
    # The PaymentIntent is for manual capture, with the consultation's idempotency key.
    created = stripe_fake.calls("POST", "/v1/payment_intents")
    assert len(created) == 1
    assert created[0].params["capture_method"] == "manual"
    appointment = Appointment.objects.get(pk=body["appointment"]["id"])
    assert appointment.starts_at == start
    assert appointment.ends_at == start + dt.timedelta(minutes=20)
    consultation = appointment.consultation
    assert consultation is not None
    assert consultation.state == "requested"
    # The booked consultation waits until after the slot, not the request TTL.
    assert consultation.expires_at == appointment.ends_at + dt.timedelta(minutes=30)

    # The card is authorised; Stripe's webhook confirms the appointment.
    intent = stripe_fake.authorize(pi_id)
    assert (
        post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent)).status_code == 200
    )
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    assert appointment.hold_expires_at is None
    assert [(t.from_state, t.to_state) for t in appointment.transitions.all()] == [
        ("", "held"),
        ("held", "confirmed"),
    ]
    # The slot is gone from the listing; the same slot cannot be booked again.
    assert start not in [
        s for s, _ in selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(hours=1))
    ]
    other = PatientFactory.create()
    again = client_for(other).post(
        "/api/v1/appointments",
        {"doctor_id": doctor.pk, "starts_at": start.isoformat(), "kind": "chat"},
        format="json",
    )
    assert error_code(again, 409) == "slot_taken"
    assert len(stripe_fake.calls("POST", "/v1/payment_intents")) == 1  # no money asked of the loser

    # Only the two participants see it.
    url = f"/api/v1/appointments/{appointment.pk}"
    assert client_for(patient).get(url).status_code == 200
    assert client_for(doctor).get(url).json()["transitions"][-1]["to_state"] == "confirmed"
    assert error_code(client_for(other).get(url), 404) == "appointment_not_found"
    assert [a["id"] for a in client_for(other).get("/api/v1/appointments").json()["results"]] == []


@pytest.mark.django_db
def test_not_a_slot_is_outside_availability(client_for, stripe_fake):
    doctor, schedule = doctor_with_schedule(min_notice_minutes=24 * 60)
    patient = PatientFactory.create()
    api = client_for(patient)
    slot = first_slot(schedule)
    for starts_at in (
        slot + dt.timedelta(minutes=5),  # not on the slot grid
        slot.replace(hour=3),  # outside the hours
        timezone.now() + dt.timedelta(hours=1),  # inside the notice
        slot + dt.timedelta(days=400),  # beyond the horizon
    ):
        answer = api.post(
            "/api/v1/appointments",
            {"doctor_id": doctor.pk, "starts_at": starts_at.isoformat(), "kind": "chat"},
            format="json",
        )
        assert error_code(answer, 409) == "outside_availability"
    assert (
        error_code(
            client_for(doctor).post(
                "/api/v1/appointments",
                {"doctor_id": doctor.pk, "starts_at": slot.isoformat(), "kind": "chat"},
                format="json",
            ),
            403,
        )
        == "patients_only"
    )
    assert Appointment.objects.count() == 0
    assert stripe_fake.calls("POST", "/v1/payment_intents") == []


@pytest.mark.django_db
def test_a_start_without_its_utc_offset_is_refused_not_read_as_utc(client_for, stripe_fake):
    """docs/protocol.md: ``invalid_time_zone`` for a ``starts_at`` without a UTC offset (a free
    slot written without its offset was booked as if it were UTC)."""
    doctor, schedule = doctor_with_schedule()
    api = client_for(PatientFactory.create())
    naive = first_slot(schedule).astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    answer = api.post(
        "/api/v1/appointments", {"doctor_id": doctor.pk, "starts_at": naive, "kind": "chat"}, format="json"
    )
    assert error_code(answer, 400) == "invalid_time_zone"
    assert answer.json()["error"]["fields"] == {"starts_at": ["invalid_time_zone"]}
    assert Appointment.objects.count() == 0
    assert stripe_fake.calls("POST", "/v1/payment_intents") == []


@pytest.mark.django_db
def test_provider_failure_releases_the_hold(stripe_fake):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    start = first_slot(schedule)
    stripe_fake.fail_next(3)  # stripe-python's own retries (2) fail too
    with pytest.raises(ApplicationError) as caught:
        services.appointment_book(patient=patient, doctor_id=doctor.pk, starts_at=start, kind="chat")
    assert caught.value.code == "payment_provider_error"
    appointment = Appointment.objects.get()
    assert appointment.state == "released"
    assert Consultation.objects.count() == 0
    # The slot is free again.
    again = services.appointment_book(patient=patient, doctor_id=doctor.pk, starts_at=start, kind="chat")
    assert again.state == "held"


@pytest.mark.django_db
def test_declined_card_then_hold_timeout_releases_and_cancels_the_intent(stripe_fake, settings):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    start = first_slot(schedule)
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=start, kind="chat"
    )
    assert appointment.consultation is not None
    stripe_fake.decline_card(appointment.consultation.payment_intent_id)
    assert tasks.expire_holds() == 0  # not due yet
    Appointment.objects.filter(pk=appointment.pk).update(
        hold_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert tasks.expire_holds() == 1
    appointment.refresh_from_db()
    assert appointment.state == "released"
    assert appointment.consultation is not None
    assert appointment.consultation.state == "expired"
    pi = stripe_fake.payment_intent(appointment.consultation.payment_intent_id)
    assert pi["status"] == "canceled"  # the authorisation attempt is released at Stripe
    assert tasks.expire_holds() == 0


@pytest.mark.django_db
def test_late_authorisation_confirms_at_hold_timeout(stripe_fake):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=first_slot(schedule), kind="chat"
    )
    assert appointment.consultation is not None
    stripe_fake.authorize(appointment.consultation.payment_intent_id)  # the webhook never came
    Appointment.objects.filter(pk=appointment.pk).update(
        hold_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    tasks.expire_holds()
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    assert appointment.consultation.state == "paid"


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_bookings_of_one_slot(stripe_fake):
    doctor, schedule = doctor_with_schedule()
    patients = [PatientFactory.create() for _ in range(50)]
    start = first_slot(schedule)
    barrier = threading.Barrier(len(patients))
    outcomes: list[str] = []
    lock = threading.Lock()

    def book(patient) -> None:
        barrier.wait(timeout=180)
        for _attempt in range(3):
            try:
                services.appointment_book(patient=patient, doctor_id=doctor.pk, starts_at=start, kind="chat")
                result = "booked"
            except ApplicationError as exc:
                result = exc.code
            except OperationalError as exc:
                # 50 threads share this process's pool of connections; on a loaded machine one
                # may wait past the pool's timeout. A client would try again: so does the test.
                result = f"unexpected {type(exc).__name__}: {exc}"
                continue
            except Exception as exc:  # recorded, so a failure names it
                result = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                connection.close()
            break
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=book, args=(p,)) for p in patients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(outcomes) == 50, outcomes
    assert sorted(set(outcomes)) == ["booked", "slot_taken"], outcomes
    assert outcomes.count("booked") == 1
    assert outcomes.count("slot_taken") == 49
    assert Appointment.objects.filter(state__in=["held", "confirmed"]).count() == 1
    assert Appointment.objects.count() == 1  # the losers wrote nothing
    # Exactly one PaymentIntent: no money was authorised (or even asked) for a loser.
    assert len(stripe_fake.calls("POST", "/v1/payment_intents")) == 1
    assert Consultation.objects.count() == 1
