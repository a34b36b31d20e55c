"""iCalendar: the appointment's .ics for its participants, the doctor's revocable feed."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from icalendar import Calendar
from rest_framework.test import APIClient

from accounts.tests.factories import PatientFactory
from appointments import selectors, services
from appointments.tests.factories import doctor_with_schedule

pytestmark = pytest.mark.django_db


def booked(settings):
    settings.PAYMENTS_PROVIDER = "development"
    doctor, schedule = doctor_with_schedule(tz="America/New_York")
    patient = PatientFactory.create(display_name="Patty Private")
    start = timezone.now() + dt.timedelta(days=3)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="video", reason="secret-reason: rash"
    )
    return appointment, patient, doctor


def events(body: bytes) -> list:
    return list(Calendar.from_ical(body).walk("VEVENT"))


def test_appointment_ics_for_participants_only(client_for, settings):
    appointment, patient, doctor = booked(settings)
    url = f"/api/v1/appointments/{appointment.pk}/ics"
    answer = client_for(patient).get(url)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/calendar")
    (event,) = events(answer.content)
    assert event.decoded("dtstart") == appointment.starts_at
    assert event.decoded("dtend") == appointment.ends_at
    assert str(event["uid"]) == f"appointment-{appointment.pk}@healthchat"
    assert str(event["status"]) == "CONFIRMED"
    assert doctor.display_name in str(event["summary"])
    assert b"secret-reason" not in answer.content
    doctors = client_for(doctor).get(url)
    assert b"Patty" not in doctors.content
    stranger = client_for(PatientFactory.create()).get(url)
    assert stranger.status_code == 404


def test_doctor_feed_is_private_and_revocable(client_for, settings):
    appointment, patient, doctor = booked(settings)
    created = client_for(doctor).post("/api/v1/calendar/feed", {}, format="json")
    assert created.status_code == 201, created.content
    url = created.json()["url"]
    path = url[url.index("/api/v1/") :]
    feed = APIClient().get(path)  # no credentials: the token is the credential
    assert feed.status_code == 200
    (event,) = events(feed.content)
    assert event.decoded("dtstart") == appointment.starts_at
    assert b"Patty" not in feed.content
    assert b"secret-reason" not in feed.content

    # A cancel shows as CANCELLED (calendar apps remove it).
    services.appointment_cancel(user=doctor, appointment_id=appointment.pk)
    (event,) = events(APIClient().get(path).content)
    assert str(event["status"]) == "CANCELLED"

    # Rotating revokes the old URL; deleting revokes the new one.
    rotated = client_for(doctor).post("/api/v1/calendar/feed", {}, format="json").json()["url"]
    assert APIClient().get(path).status_code == 404
    new_path = rotated[rotated.index("/api/v1/") :]
    assert APIClient().get(new_path).status_code == 200
    assert client_for(doctor).delete("/api/v1/calendar/feed").status_code == 204
    gone = APIClient().get(new_path)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "feed_not_found"
    assert client_for(patient).post("/api/v1/calendar/feed", {}, format="json").status_code == 403
