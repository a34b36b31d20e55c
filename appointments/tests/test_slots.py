"""Slots computed from schedules: DST weeks in Europe/London and America/New_York, a zone
without DST (Africa/Nairobi), exceptions, notice and horizon, the REST listing."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from appointments import slots
from appointments.tests.factories import doctor_with_schedule

UTC = dt.UTC
EVERY_DAY_9_TO_12 = tuple((d, dt.time(9), dt.time(12)) for d in range(7))


def rules(tz: str, **kw: object) -> slots.Rules:
    base: dict[str, object] = {
        "timezone": tz,
        "slot_minutes": 20,
        "buffer_minutes": 10,
        "horizon_days": 365,
        "min_notice_minutes": 0,
        "weekly": EVERY_DAY_9_TO_12,
    }
    base.update(kw)
    return slots.Rules(**base)  # type: ignore[arg-type]


def week(r: slots.Rules, first: dt.date, days: int = 7) -> list[tuple[dt.datetime, dt.datetime]]:
    tz = zoneinfo.ZoneInfo(r.timezone)
    start = dt.datetime.combine(first, dt.time(), tzinfo=tz).astimezone(UTC)
    end = dt.datetime.combine(first + dt.timedelta(days=days), dt.time(), tzinfo=tz).astimezone(UTC)
    return list(slots.compute(r, start=start, end=end, now=dt.datetime(2026, 1, 1, tzinfo=UTC)))


def by_local_day(found: list[tuple[dt.datetime, dt.datetime]], tz: str) -> dict[dt.date, list[str]]:
    zone = zoneinfo.ZoneInfo(tz)
    out: dict[dt.date, list[str]] = {}
    for s, _ in found:
        local = s.astimezone(zone)
        out.setdefault(local.date(), []).append(local.strftime("%H:%M"))
    return out


LOCAL_TIMES = ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]


@pytest.mark.parametrize(
    ("tz", "first", "change", "offset_before", "offset_after"),
    [
        # Spring forward: Sunday 29 March 2026 (London), 8 March 2026 (New York).
        ("Europe/London", dt.date(2026, 3, 26), dt.date(2026, 3, 29), 0, 1),
        ("America/New_York", dt.date(2026, 3, 5), dt.date(2026, 3, 8), -5, -4),
        # Fall back: 25 October 2026 (London), 1 November 2026 (New York).
        ("Europe/London", dt.date(2026, 10, 22), dt.date(2026, 10, 25), 1, 0),
        ("America/New_York", dt.date(2026, 10, 29), dt.date(2026, 11, 1), -4, -5),
    ],
)
def test_dst_week_keeps_wall_clock_hours(tz, first, change, offset_before, offset_after):
    r = rules(tz)
    found = week(r, first)
    days = by_local_day(found, tz)
    assert sorted(days) == [first + dt.timedelta(days=i) for i in range(7)]
    for day, times in days.items():
        assert times == LOCAL_TIMES, day
    # The UTC instants move by the offset change across the transition.
    zone = zoneinfo.ZoneInfo(tz)
    for s, e in found:
        assert e - s == dt.timedelta(minutes=20)
        offset = s.astimezone(zone).utcoffset()
        expected = offset_before if s.astimezone(zone).date() < change else offset_after
        assert offset == dt.timedelta(hours=expected)


def test_window_across_the_change_is_an_hour_shorter_or_longer():
    night = tuple((d, dt.time(0), dt.time(4)) for d in range(7))
    spring = by_local_day(
        week(
            rules("Europe/London", weekly=night, buffer_minutes=0, slot_minutes=60), dt.date(2026, 3, 29), 1
        ),
        "Europe/London",
    )
    # 00:00-04:00 local on the spring-forward night is three real hours: 00, 02, 03 local.
    assert spring[dt.date(2026, 3, 29)] == ["00:00", "02:00", "03:00"]
    autumn = week(
        rules("Europe/London", weekly=night, buffer_minutes=0, slot_minutes=60), dt.date(2026, 10, 25), 1
    )
    assert len(autumn) == 5  # five real hours; 01:00 local happens twice
    assert [s.astimezone(zoneinfo.ZoneInfo("Europe/London")).strftime("%H:%M") for s, _ in autumn] == [
        "00:00",
        "01:00",
        "01:00",
        "02:00",
        "03:00",
    ]


def test_nairobi_has_no_dst():
    found = week(rules("Africa/Nairobi"), dt.date(2026, 3, 26), 7) + week(
        rules("Africa/Nairobi"), dt.date(2026, 10, 22)
    )
    assert all(s.utcoffset() == dt.timedelta(0) for s, _ in found)
    assert {s.astimezone(UTC).strftime("%H:%M") for s, _ in found} == {
        "06:00",
        "06:30",
        "07:00",
        "07:30",
        "08:00",
        "08:30",
    }
    assert len(found) == 14 * 6


def test_exceptions_notice_horizon_and_busy():
    day = dt.date(2026, 6, 1)
    r = rules(
        "Europe/London",
        exceptions=(
            (day, "off", None, None),
            (day + dt.timedelta(days=1), "off", dt.time(10), dt.time(11)),
            (day + dt.timedelta(days=1), "extra", dt.time(18), dt.time(19)),
        ),
    )
    days = by_local_day(week(r, day, 3), "Europe/London")
    assert day not in days
    assert days[day + dt.timedelta(days=1)] == ["09:00", "09:30", "11:00", "11:30", "18:00", "18:30"]
    assert days[day + dt.timedelta(days=2)] == LOCAL_TIMES

    now = dt.datetime(2026, 6, 3, 8, 0, tzinfo=UTC)  # 09:00 BST
    r2 = rules("Europe/London", min_notice_minutes=45, horizon_days=1)
    start = dt.datetime(2026, 6, 3, tzinfo=UTC)
    busy = [(dt.datetime(2026, 6, 3, 9, 30, tzinfo=UTC), dt.datetime(2026, 6, 3, 9, 50, tzinfo=UTC))]
    found = list(slots.compute(r2, start=start, end=start + dt.timedelta(days=3), now=now, busy=busy))
    local = [s.astimezone(zoneinfo.ZoneInfo("Europe/London")).strftime("%d %H:%M") for s, _ in found]
    # 09:00 and 09:30 are inside the notice, 10:30 is taken, and the horizon ends (exclusive)
    # a day after now: 09:00 on the 4th is just outside it.
    assert local == ["03 10:00", "03 11:00", "03 11:30"]
    later = list(
        slots.compute(r2, start=start, end=start + dt.timedelta(days=3), now=now + dt.timedelta(minutes=1))
    )
    assert later[-1][0] == dt.datetime(2026, 6, 4, 8, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_rest_lists_slots_in_the_patients_zone(client_for):
    from accounts.tests.factories import PatientFactory

    doctor, _ = doctor_with_schedule(tz="America/New_York")
    patient = PatientFactory.create()
    api = client_for(patient)
    answer = api.get(
        f"/api/v1/doctors/{doctor.pk}/slots",
        {"start": "2027-03-14", "end": "2027-03-14", "tz": "Europe/London"},
    )
    assert answer.status_code == 200, answer.content
    starts = [item["start"] for item in answer.json()]
    # 09:00 New York on 14 March 2027 (EDT, -4) is 13:00 in London (GMT).
    assert starts[0] == "2027-03-14T13:00:00+00:00"
    assert len(starts) == 6

    bad = api.get(
        f"/api/v1/doctors/{doctor.pk}/slots", {"start": "2027-03-14", "end": "2027-03-14", "tz": "Mars/Base"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_time_zone"
    long = api.get(
        f"/api/v1/doctors/{doctor.pk}/slots", {"start": "2027-03-01", "end": "2027-05-01", "tz": "UTC"}
    )
    assert long.status_code == 400
    assert long.json()["error"]["code"] == "invalid_range"
    nobody = api.get(
        "/api/v1/doctors/999999/slots", {"start": "2027-03-14", "end": "2027-03-14", "tz": "UTC"}
    )
    assert nobody.status_code == 404
    assert nobody.json()["error"]["code"] == "doctor_not_found"


@pytest.mark.django_db
def test_schedule_rest_is_for_doctors_and_validates(client_for):
    from accounts.tests.factories import DoctorFactory, PatientFactory

    doctor = DoctorFactory.create()
    api = client_for(doctor)
    body = {
        "timezone": "Africa/Nairobi",
        "slot_minutes": 30,
        "weekly_hours": [{"weekday": 0, "start": "09:00", "end": "13:00"}],
        "exceptions": [{"date": "2027-01-04", "kind": "off"}],
    }
    saved = api.put("/api/v1/schedule", body, format="json")
    assert saved.status_code == 200, saved.content
    assert saved.json()["timezone"] == "Africa/Nairobi"
    assert saved.json()["weekly_hours"] == [{"weekday": 0, "start": "09:00", "end": "13:00"}]
    assert saved.json()["exceptions"] == [{"date": "2027-01-04", "kind": "off", "start": None, "end": None}]
    assert api.get("/api/v1/schedule").json()["slot_minutes"] == 30

    bad_zone = api.put("/api/v1/schedule", {"timezone": "Nowhere/Else"}, format="json")
    assert bad_zone.status_code == 400
    bad_exc = api.put(
        "/api/v1/schedule", {"exceptions": [{"date": "2027-01-04", "kind": "extra"}]}, format="json"
    )
    assert bad_exc.status_code == 400
    unknown = api.put("/api/v1/schedule", {"colour": "red"}, format="json")
    assert unknown.status_code == 400
    assert api.get("/api/v1/schedule").json()["timezone"] == "Africa/Nairobi"  # nothing stored

    patient = PatientFactory.create()
    refused = client_for(patient).put("/api/v1/schedule", body, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "doctors_only"
