"""Every view of an appointment's health context writes an audit entry: the list, one
appointment, its .ics, the doctor's feed, the on-demand list and one request."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Specialty
from accounts.tests.factories import DoctorFactory, PatientFactory
from appointments import selectors, services
from appointments.tests.factories import doctor_with_schedule
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_each_read_of_an_appointment_is_audited(client_for):
    doctor, schedule = doctor_with_schedule()
    patient = PatientFactory.create()
    start = timezone.now() + dt.timedelta(days=3)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="chat")
    api = client_for(patient)
    before = AuditEntry.objects.count()
    assert api.get("/api/v1/appointments").status_code == 200
    assert api.get(f"/api/v1/appointments/{appointment.pk}").status_code == 200
    assert api.get(f"/api/v1/appointments/{appointment.pk}/ics").status_code == 200
    rows = list(
        AuditEntry.objects.order_by("id")[before:].values_list(
            "action", "actor_id", "object_type", "object_id"
        )
    )
    assert ("appointment.list", patient.pk, "", "") in rows
    assert ("appointment.read", patient.pk, "appointment", str(appointment.pk)) in rows
    assert ("appointment.ics", patient.pk, "appointment", str(appointment.pk)) in rows

    # Someone else's appointment: no read entry (a refusal is audited as authz.denied).
    stranger = client_for(PatientFactory.create())
    assert stranger.get(f"/api/v1/appointments/{appointment.pk}").status_code == 404
    assert AuditEntry.objects.filter(action="appointment.read").count() == 1

    url = client_for(doctor).post("/api/v1/calendar/feed", {}, format="json").json()["url"]
    from rest_framework.test import APIClient

    assert APIClient().get(url).status_code == 200
    feed = AuditEntry.objects.get(action="calendar_feed.read")
    assert (feed.actor_id, feed.object_type, feed.object_id, feed.channel) == (
        doctor.pk,
        "calendar_feed",
        str(doctor.pk),
        "rest",
    )


def test_on_demand_reads_are_audited(client_for):
    Specialty.objects.get_or_create(slug="gp", defaults={"name": "GP"})
    patient = PatientFactory.create()
    doctor = DoctorFactory.create(profile__specialty=Specialty.objects.get(slug="gp"))
    created = client_for(patient).post(
        "/api/v1/on-demand", {"specialty": "gp", "kind": "chat"}, format="json"
    )
    request_id = created.json()["id"]
    assert client_for(doctor).get("/api/v1/on-demand").status_code == 200
    assert client_for(doctor).get(f"/api/v1/on-demand/{request_id}").status_code == 200
    assert AuditEntry.objects.filter(action="on_demand.list", actor_id=doctor.pk).count() == 1
    assert AuditEntry.objects.filter(
        action="on_demand.read", actor_id=doctor.pk, object_type="on_demand", object_id=str(request_id)
    ).exists()
