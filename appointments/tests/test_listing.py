"""The slot listing in one statement (``appointments.listing``): the same slots as the
schedule's prefetching queries, one query, and the same refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import DoctorProfile, User
from accounts.tests.factories import PatientFactory
from appointments import listing, selectors, services
from appointments.models import Appointment
from appointments.tests.factories import doctor_with_schedule
from core.errors import NotFound

pytestmark = pytest.mark.django_db
UTC = dt.UTC
NOW = dt.datetime(2027, 3, 20, tzinfo=UTC)


def _with_exceptions_and_bookings() -> User:
    doctor, _ = doctor_with_schedule(
        tz="Europe/London",
        weekly=[(0, "09:00", "12:00"), (2, "14:00", "17:30"), (5, "08:00", "10:00")],
    )
    services.schedule_set(
        doctor=doctor,
        exceptions=[
            {"date": "2027-03-22", "kind": "off", "start": "10:00", "end": "11:00"},
            {"date": "2027-03-28", "kind": "extra", "start": "01:00", "end": "04:00"},  # spring forward
            {"date": "2027-03-31", "kind": "off"},
        ],
    )
    patient = PatientFactory.create()
    first = selectors.free_slots(
        schedule=selectors.bookable_schedule(doctor_id=doctor.pk),
        start=NOW,
        end=NOW + dt.timedelta(days=14),
        now=NOW,
    )
    for start, end in first[::4]:
        Appointment.objects.create(
            doctor=doctor, patient=patient, kind="chat", starts_at=start, ends_at=end, state="confirmed"
        )
    start, end = first[1]
    Appointment.objects.create(  # a released hold does not block
        doctor=doctor, patient=patient, kind="chat", starts_at=start, ends_at=end, state="released"
    )
    return doctor


def test_one_statement_gives_the_same_slots_as_the_separate_queries():
    doctor = _with_exceptions_and_bookings()
    end = NOW + dt.timedelta(days=30)
    reference = selectors.free_slots(
        schedule=selectors.bookable_schedule(doctor_id=doctor.pk), start=NOW, end=end, now=NOW
    )
    with CaptureQueriesContext(connection) as captured:
        found = listing.free_slots(doctor_id=doctor.pk, start=NOW, end=end, now=NOW)
    assert len(captured.captured_queries) == 1
    assert found == reference
    assert len(found) > 20
    # The extra hours on the spring-forward night, the day off and the booked slots are honoured.
    assert dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC) in [s for s, _ in found]
    assert not [s for s, _ in found if s.date() == dt.date(2027, 3, 31)]
    booked = set(
        Appointment.objects.filter(doctor=doctor, state="confirmed").values_list("starts_at", flat=True)
    )
    assert booked
    assert not booked & {s for s, _ in found}


def test_rest_listing_runs_one_query_besides_authentication(client_for):
    doctor = _with_exceptions_and_bookings()
    api = client_for(PatientFactory.create())
    api.get("/api/v1/me")  # the caller's account is now known
    with CaptureQueriesContext(connection) as captured:
        answer = api.get(
            f"/api/v1/doctors/{doctor.pk}/slots", {"start": "2027-04-05", "end": "2027-05-04", "tz": "UTC"}
        )
    assert answer.status_code == 200, answer.content
    assert answer.json()
    slot_queries = [q for q in captured.captured_queries if "appointments_schedule" in q["sql"]]
    assert len(slot_queries) == 1


@pytest.mark.parametrize("change", ["unverified", "inactive", "not_bookable", "no_schedule"])
def test_refusals_are_doctor_not_found(change):
    doctor, _ = doctor_with_schedule()
    if change == "unverified":
        DoctorProfile.objects.filter(user=doctor).update(verification_status="pending")
    elif change == "inactive":
        User.objects.filter(pk=doctor.pk).update(is_active=False)
    elif change == "not_bookable":
        services.schedule_set(doctor=doctor, bookable=False)
    else:
        doctor.schedule.delete()
    with pytest.raises(NotFound) as refused:
        listing.free_slots(doctor_id=doctor.pk, start=NOW, end=NOW + dt.timedelta(days=7), now=NOW)
    assert refused.value.code == "doctor_not_found"


def test_the_written_out_statement_names_the_models_tables():
    from appointments.models import Schedule, ScheduleException, WeeklyWindow

    for model in (User, DoctorProfile, Schedule, WeeklyWindow, ScheduleException, Appointment):
        assert f" {model._meta.db_table} " in listing._LISTING_SQL
