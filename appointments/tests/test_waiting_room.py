"""The waiting room (appointments.waiting_room, appointments.queue): check-in (window, idempotent,
errors), the doctor's queue and the patients' positions and estimated waits, the frames published
after commit, admission in the doctor's order (consultation captured and opened), and what a
checked-in appointment may still do (the doctor cancels; nobody reschedules)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from accounts.tests.factories import PatientFactory
from appointments import queue, services, waiting_room
from appointments.models import Appointment
from appointments.tests.factories import confirmed_appointment
from messaging import frames as server_frames
from payments import selectors as payment_selectors
from payments.models import Consultation

pytestmark = pytest.mark.django_db

SOON = dt.timedelta(minutes=5)


def code(response: Any, status: int) -> str:
    assert response.status_code == status, response.content
    return str(response.json()["error"]["code"])


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], dict[str, Any]]]:
    """The waiting room's live frames (``queue.publish``), each checked against its frame model."""
    sent: list[tuple[list[int], dict[str, Any]]] = []

    def record(*, user_ids: list[int], frame: dict[str, Any], exclude_channel: str | None = None) -> None:
        server_frames.server_frame_adapter.validate_python(frame)
        sent.append((user_ids, frame))

    monkeypatch.setattr(queue, "fan_out", record)
    return sent


def test_check_in_by_rest_is_idempotent_and_logged(client_for, stripe_fake):
    appointment = confirmed_appointment(stripe_fake, starts_in=SOON)
    api = client_for(appointment.patient)
    url = f"/api/v1/appointments/{appointment.pk}/check-in"
    first = api.post(url, {}, format="json")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["appointment"]["state"] == "checked_in"
    assert body["appointment"]["checked_in_at"] is not None
    assert body["position"]["position"] == 1
    assert body["position"]["ahead"] == 0
    again = api.post(url, {}, format="json")
    assert again.status_code == 200
    assert again.json()["appointment"]["checked_in_at"] == body["appointment"]["checked_in_at"]
    states = [t.to_state for t in Appointment.objects.get(pk=appointment.pk).transitions.all()]
    assert states.count("checked_in") == 1
    assert code(api.post(url, {"extra": 1}, format="json"), 400) == "invalid"


def test_check_in_errors(client_for, stripe_fake, settings):
    settings.APPOINTMENT_CHECKIN_OPENS_MINUTES = 10
    settings.APPOINTMENT_PATIENT_GRACE_MINUTES = 10
    early = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=11))
    url = f"/api/v1/appointments/{early.pk}/check-in"
    answer = client_for(early.patient).post(url, {}, format="json")
    assert code(answer, 409) == "check_in_too_early"
    opens = dt.datetime.fromisoformat(answer.json()["error"]["opens_at"])
    assert opens == early.starts_at - dt.timedelta(minutes=10)
    assert code(client_for(early.doctor).post(url, {}, format="json"), 403) == "not_the_patient"
    assert (
        code(client_for(PatientFactory.create()).post(url, {}, format="json"), 404) == "appointment_not_found"
    )

    late = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=-10, seconds=-1))
    late_url = f"/api/v1/appointments/{late.pk}/check-in"
    assert code(client_for(late.patient).post(late_url, {}, format="json"), 409) == "check_in_closed"

    held = confirmed_appointment(stripe_fake, starts_in=SOON)
    Appointment.objects.filter(pk=held.pk).update(state="held")
    held_url = f"/api/v1/appointments/{held.pk}/check-in"
    assert (
        code(client_for(held.patient).post(held_url, {}, format="json"), 409) == "appointment_not_confirmed"
    )

    Appointment.objects.filter(pk=held.pk).update(state="cancelled")
    assert code(client_for(held.patient).post(held_url, {}, format="json"), 409) == "appointment_closed"

    admitted = confirmed_appointment(stripe_fake, starts_in=SOON)
    waiting_room.check_in(user=admitted.patient, appointment_id=admitted.pk)
    waiting_room.admit(user=admitted.doctor, appointment_id=admitted.pk)
    admitted_url = f"/api/v1/appointments/{admitted.pk}/check-in"
    assert code(client_for(admitted.patient).post(admitted_url, {}, format="json"), 409) == "already_admitted"


def two_waiting(stripe_fake: Any, settings: Any) -> tuple[Appointment, Appointment]:
    """Two patients of one doctor checked in: A's appointment starts in 5 min, B's in 30."""
    settings.APPOINTMENT_CHECKIN_OPENS_MINUTES = 60
    a = confirmed_appointment(stripe_fake, starts_in=SOON, patient_name="Ana")
    b = confirmed_appointment(
        stripe_fake, starts_in=dt.timedelta(minutes=30), doctor=a.doctor, patient_name="Ben"
    )
    waiting_room.check_in(user=b.patient, appointment_id=b.pk)  # B first: the order is by start
    waiting_room.check_in(user=a.patient, appointment_id=a.pk)
    return a, b


def test_the_doctors_queue_and_the_patients_positions(client_for, stripe_fake, settings):
    a, b = two_waiting(stripe_fake, settings)
    answer = client_for(a.doctor).get("/api/v1/waiting-room")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["doctor_id"] == a.doctor_id
    assert [
        (e["appointment_id"], e["patient_id"], e["display_name"], e["position"]) for e in body["queue"]
    ] == [
        (a.pk, a.patient_id, "Ana", 1),
        (b.pk, b.patient_id, "Ben", 2),
    ]
    assert set(body["queue"][0]) == {
        "appointment_id",
        "patient_id",
        "display_name",
        "checked_in_at",
        "starts_at",
        "position",
        "estimated_wait_seconds",
    }
    assert "fever" not in answer.content.decode()
    # The estimate: A waits for their start (5 min); B for the larger of their start (30 min)
    # and one consult (the slot length, 20 min: no consultation has completed yet).
    a_wait, b_wait = (e["estimated_wait_seconds"] for e in body["queue"])
    assert 280 <= a_wait <= 300
    assert 1780 <= b_wait <= 1800
    mine = client_for(b.patient).get(f"/api/v1/appointments/{b.pk}/position")
    assert mine.status_code == 200, mine.content
    assert mine.json()["position"] == 2
    assert mine.json()["ahead"] == 1
    assert code(client_for(b.doctor).get(f"/api/v1/appointments/{b.pk}/position"), 403) == "not_the_patient"
    assert (
        code(client_for(a.patient).get(f"/api/v1/appointments/{b.pk}/position"), 404)
        == "appointment_not_found"
    )
    assert code(client_for(a.patient).get("/api/v1/waiting-room"), 403) == "doctors_only"


def test_the_estimate_counts_consults_ahead_and_the_current_one(stripe_fake, settings):
    """Three one-minute appointments back to back; the doctor admits the first: the others wait
    for what is left of it (one consult: the slot length, 20 min) plus one consult per patient
    ahead of them, more than the time until their own start."""
    first = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=1), minutes=1)
    doctor = first.doctor
    others = [
        confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=1 + i), doctor=doctor, minutes=1)
        for i in (1, 2)
    ]
    for appointment in (first, *others):
        waiting_room.check_in(user=appointment.patient, appointment_id=appointment.pk)
    waiting_room.admit(user=doctor, appointment_id=first.pk)
    entries = queue.waiting(doctor_id=doctor.pk)
    assert [(e.appointment_id, e.position) for e in entries] == [(others[0].pk, 1), (others[1].pk, 2)]
    assert 1190 <= entries[0].estimated_wait_seconds <= 1200
    assert 2390 <= entries[1].estimated_wait_seconds <= 2400


def test_consult_length_is_the_recent_average_once_there_are_enough(stripe_fake):
    appointment = confirmed_appointment(stripe_fake, starts_in=SOON)
    doctor = appointment.doctor
    assert queue.consult_seconds(doctor_id=doctor.pk) == 20 * 60  # the slot length
    now = timezone.now()
    for k, minutes in enumerate((6, 8, 10)):
        done = confirmed_appointment(
            stripe_fake, starts_in=dt.timedelta(days=-1, minutes=30 * k), doctor=doctor
        )
        assert done.consultation is not None
        Consultation.objects.filter(pk=done.consultation.pk).update(
            state="completed",
            accepted_at=now - dt.timedelta(minutes=minutes),
            completed_at=now,
            closes_at=now + dt.timedelta(days=7),
        )
        Appointment.objects.filter(pk=done.pk).update(state="admitted")
    assert queue.consult_seconds(doctor_id=doctor.pk) == 8 * 60


def test_check_in_and_admission_publish_the_queue_after_commit(
    stripe_fake, settings, published, django_capture_on_commit_callbacks
):
    settings.APPOINTMENT_CHECKIN_OPENS_MINUTES = 60
    a = confirmed_appointment(stripe_fake, starts_in=SOON)
    b = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=30), doctor=a.doctor)
    with django_capture_on_commit_callbacks(execute=True):
        waiting_room.check_in(user=a.patient, appointment_id=a.pk)
    with django_capture_on_commit_callbacks(execute=True):
        waiting_room.check_in(user=b.patient, appointment_id=b.pk)
    (to_doctor, queue_frame), (to_a, a_frame), (to_b, b_frame) = published[-3:]
    assert to_doctor == [a.doctor_id]
    assert queue_frame["type"] == "waiting_room.updated"
    assert [e["appointment_id"] for e in queue_frame["data"]["queue"]] == [a.pk, b.pk]
    assert (to_a, a_frame["type"], a_frame["data"]["position"]) == (
        [a.patient_id],
        "waiting_room.position",
        1,
    )
    assert (to_b, b_frame["data"]["appointment_id"], b_frame["data"]["position"]) == ([b.patient_id], b.pk, 2)
    published.clear()
    # The doctor admits B first (any order): A is told they are still first; the queue shrinks.
    with django_capture_on_commit_callbacks(execute=True):
        waiting_room.admit(user=a.doctor, appointment_id=b.pk)
    (to_doctor, queue_frame), (to_a, a_frame) = published
    assert [e["appointment_id"] for e in queue_frame["data"]["queue"]] == [a.pk]
    assert (to_a, a_frame["data"]["position"]) == ([a.patient_id], 1)
    # Nothing is sent while the transaction is still open.
    published.clear()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.appointment_cancel(user=a.doctor, appointment_id=a.pk)
    assert published == []
    for callback in callbacks:
        callback()
    assert [frame["data"]["queue"] for _, frame in published if frame["type"] == "waiting_room.updated"] == [
        []
    ]


def test_admission_in_the_doctors_order_opens_the_consultation(client_for, stripe_fake, settings):
    a, b = two_waiting(stripe_fake, settings)
    doctor_api = client_for(a.doctor)
    answer = doctor_api.post(f"/api/v1/appointments/{b.pk}/admit", {}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["appointment"]["state"] == "admitted"
    assert body["appointment"]["admitted_at"] is not None
    assert body["consultation"]["state"] == "in_progress"
    assert body["consultation"]["id"] == b.consultation_id
    assert b.consultation is not None
    assert payment_selectors.ledger_summary(consultation_id=b.consultation.pk).charge == 3000
    capture = stripe_fake.calls("POST", f"/v1/payment_intents/{b.consultation.payment_intent_id}/capture")
    assert len(capture) == 1
    # Idempotent: no second capture.
    assert doctor_api.post(f"/api/v1/appointments/{b.pk}/admit", {}, format="json").status_code == 200
    assert (
        len(stripe_fake.calls("POST", f"/v1/payment_intents/{b.consultation.payment_intent_id}/capture")) == 1
    )
    queue_now = doctor_api.get("/api/v1/waiting-room").json()["queue"]
    assert [(e["appointment_id"], e["position"]) for e in queue_now] == [(a.pk, 1)]
    # Then A.
    assert doctor_api.post(f"/api/v1/appointments/{a.pk}/admit", {}, format="json").status_code == 200
    assert doctor_api.get("/api/v1/waiting-room").json()["queue"] == []
    transitions = [
        (t.from_state, t.to_state, t.actor_id) for t in Appointment.objects.get(pk=a.pk).transitions.all()
    ]
    assert transitions[-2:] == [
        ("confirmed", "checked_in", a.patient_id),
        ("checked_in", "admitted", a.doctor_id),
    ]


def test_admission_errors(client_for, stripe_fake, settings):
    appointment = confirmed_appointment(stripe_fake, starts_in=SOON)
    url = f"/api/v1/appointments/{appointment.pk}/admit"
    doctor_api = client_for(appointment.doctor)
    assert code(doctor_api.post(url, {}, format="json"), 409) == "patient_not_waiting"
    assert code(client_for(appointment.patient).post(url, {}, format="json"), 403) == "not_the_doctor"
    assert (
        code(client_for(PatientFactory.create()).post(url, {}, format="json"), 404) == "appointment_not_found"
    )
    assert code(doctor_api.post(url, {"start_call": "video"}, format="json"), 400) == "invalid"
    services.appointment_cancel(user=appointment.doctor, appointment_id=appointment.pk)
    assert code(doctor_api.post(url, {}, format="json"), 409) == "appointment_closed"
    with pytest.raises(Exception) as refused:
        waiting_room.validate_call("video", None)
    assert getattr(refused.value, "code", None) == "invalid_sdp"
    with pytest.raises(Exception) as refused:
        waiting_room.validate_call("fax", "v=0\r\n")
    assert getattr(refused.value, "code", None) == "invalid_media"


def test_a_checked_in_appointment_is_cancelled_by_the_doctor_not_moved(client_for, stripe_fake):
    appointment = confirmed_appointment(stripe_fake, starts_in=SOON)
    waiting_room.check_in(user=appointment.patient, appointment_id=appointment.pk)
    moved = client_for(appointment.doctor).post(
        f"/api/v1/appointments/{appointment.pk}/reschedule",
        {"starts_at": (appointment.starts_at + dt.timedelta(days=1)).isoformat()},
        format="json",
    )
    assert code(moved, 409) == "invalid_transition"
    cancelled = client_for(appointment.doctor).post(
        f"/api/v1/appointments/{appointment.pk}/cancel", {}, format="json"
    )
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["state"] == "cancelled"
    assert appointment.consultation is not None
    assert stripe_fake.payment_intent(appointment.consultation.payment_intent_id)["status"] == "canceled"


def test_a_consultation_ended_on_its_side_takes_the_patient_out_of_the_queue(client_for, stripe_fake):
    """The doctor declines the consultation itself (the payments API) while the patient waits:
    the appointment is cancelled (not left waiting forever) and the queue is empty."""
    appointment = confirmed_appointment(stripe_fake, starts_in=SOON)
    waiting_room.check_in(user=appointment.patient, appointment_id=appointment.pk)
    assert appointment.consultation is not None
    declined = client_for(appointment.doctor).post(
        f"/api/v1/consultations/{appointment.consultation.pk}/decline", {}, format="json"
    )
    assert declined.status_code == 200, declined.content
    fresh = Appointment.objects.get(pk=appointment.pk)
    assert fresh.state == "cancelled"
    last = fresh.transitions.last()
    assert last is not None
    assert (last.from_state, last.note) == ("checked_in", "consultation declined")
    assert queue.waiting(doctor_id=appointment.doctor_id) == []
