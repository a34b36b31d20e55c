"""Appointments in the console (real Chromium): the doctor sets a schedule in the editor (in
Europe/London: weekly hours, extra hours, a day off); a patient whose browser is in Asia/Tokyo sees the doctor's free slots in Tokyo
time, books one (development payment provider: authorised at once) and the doctor's console,
open beside it, shows the confirmed appointment live (``appointment.updated``); the patient
reschedules (the doctor's row moves live), downloads the .ics, cancels (live on the doctor's
side); the doctor makes a private calendar feed URL that a calendar app can read. Then the waiting
room: a patient checks in from "My appointments" and sees their place; the doctor's waiting room
shows them live; "Admit + video call" opens the consultation's chat and rings the patient's
console, which switches to the call; both connected through coturn. The on-demand queue: a
patient asks for the first available doctor of a specialty, the doctor's console shows it live,
the doctor accepts and the chat opens on both sides. axe on every screen;
screenshots docs/screenshots/console-appointments-*.png, console-waiting-room.png and
console-on-demand.png."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from playwright.sync_api import expect

from accounts import services as account_services
from accounts.models import Specialty
from accounts.tests.factories import DoctorFactory, PatientFactory
from appointments.models import Appointment, OnDemandRequest, Schedule
from appointments.tests.factories import doctor_with_schedule
from calls.tests.webrtc import coturn
from payments.models import Consultation
from tests.browser import TIMEOUT_MS, Timings, assert_accessible, screenshot, sign_in_with_token, wait_until
from tests.browser.conftest import LIVE_ENV

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")
TURN_SECRET = "browser-appointments-turn-" + os.urandom(4).hex()


@pytest.fixture(scope="module")
def console_server(live_server_factory: Any, tmp_path_factory: Any) -> Iterator[Any]:
    """The console's live server with TURN credentials for a real coturn (the admitted call goes
    through the relay, as the console does whenever a TURN server is offered)."""
    with coturn(TURN_SECRET, tmp_path_factory.mktemp("coturn-appointments")) as port:
        yield live_server_factory(
            {**LIVE_ENV, "TURN_SECRET": TURN_SECRET, "TURN_URLS": f"turn:127.0.0.1:{port}?transport=udp"}
        )


@pytest.fixture
def page_in_zone(browser: Any, console_server: Any, make_token: Any) -> Any:
    """A console page signed in as ``user`` in a browser whose time zone is ``zone``."""
    contexts: list[Any] = []

    def open_as(user: Any, zone: str) -> Any:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, timezone_id=zone, accept_downloads=True
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.log = []
        page.on("pageerror", lambda e: page.log.append(f"error: {e}"))
        page.on("console", lambda m: page.log.append(f"{m.type}: {m.text}"))
        token = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
        sign_in_with_token(page, console_server.base_url, token)
        return page

    yield open_as
    for context in contexts:
        context.close()


def test_patient_books_a_slot_and_the_doctor_sees_it_live(page_in_zone: Callable[[Any, str], Any]) -> None:
    t = Timings()
    doctor = DoctorFactory.create(
        display_name="Dr. Ada Martin",
        profile__verification_status="verified",
        profile__consultation_fee=3000,
        profile__currency="GBP",
    )
    patient = PatientFactory.create(display_name="Sam Patient")
    day = (dt.datetime.now(LONDON) + dt.timedelta(days=3)).date()

    # --- the doctor's schedule editor ------------------------------------------------------
    doc = page_in_zone(doctor, "Europe/London")
    doc.click("#tab-appointments")
    expect(doc.locator("#schedule-panel")).to_be_visible()
    expect(doc.locator("#book-panel")).to_be_hidden()
    expect(doc.locator("#appointments-title")).to_have_text("Appointments")
    doc.fill("#schedule-tz", "Mars/Olympus")
    doc.click("#schedule-save")
    expect(doc.locator("#schedule-error")).to_contain_text("timezone")  # refused, shown
    doc.fill("#schedule-tz", "Europe/London")
    doc.fill("#schedule-slot", "30")
    doc.fill("#schedule-buffer", "0")
    doc.fill("#schedule-notice", "0")
    doc.fill("#schedule-horizon", "30")
    doc.check("#schedule-bookable")
    doc.locator("#weekly-hours li button").evaluate_all("buttons => buttons.forEach(b => b.click())")
    doc.click("#add-window")
    row = doc.locator("#weekly-hours li").last
    row.locator("select").select_option(str(day.weekday()))
    row.locator(".window-start").fill("09:00")
    row.locator(".window-end").fill("11:00")
    # Exceptions: extra hours the next day (14:00-15:00), a whole day off two weeks later.
    doc.click("#add-exception")
    extra = doc.locator("#schedule-exceptions li").last
    extra.locator(".exception-date").fill((day + dt.timedelta(days=1)).isoformat())
    extra.locator(".exception-kind").select_option("extra")
    extra.locator(".exception-start").fill("14:00")
    extra.locator(".exception-end").fill("15:00")
    doc.click("#add-exception")
    off = doc.locator("#schedule-exceptions li").last
    off.locator(".exception-date").fill((day + dt.timedelta(days=14)).isoformat())
    doc.click("#schedule-save")
    expect(doc.locator("#schedule-status")).to_have_text("Schedule saved.")
    schedule = Schedule.objects.get(doctor=doctor)
    assert schedule.timezone == "Europe/London"
    assert schedule.slot_minutes == 30
    assert [
        (w.weekday, w.start.strftime("%H:%M"), w.end.strftime("%H:%M")) for w in schedule.windows.all()
    ] == [(day.weekday(), "09:00", "11:00")]
    assert sorted(
        (x.date, x.kind, x.start and x.start.strftime("%H:%M"), x.end and x.end.strftime("%H:%M"))
        for x in schedule.exceptions.all()
    ) == [
        (day + dt.timedelta(days=1), "extra", "14:00", "15:00"),
        (day + dt.timedelta(days=14), "off", None, None),
    ]
    expect(doc.locator("#schedule-exceptions li")).to_have_count(2)  # read back from the server
    t.mark("schedule saved")
    screenshot(doc, "console-appointments-schedule")
    assert_accessible(doc, "doctor's appointments and schedule")

    # --- the patient, in Tokyo: slots in the browser's zone, book ---------------------------
    pat = page_in_zone(patient, "Asia/Tokyo")
    pat.click("#tab-appointments")
    expect(pat.locator("#book-zone")).to_contain_text("Asia/Tokyo")
    expect(pat.locator("#schedule-panel")).to_be_hidden()
    pat.locator("#book-doctor").select_option(str(doctor.pk))
    first_local = dt.datetime.combine(day, dt.time(9, 0), LONDON).astimezone(TOKYO)
    pat.fill("#book-from", (first_local - dt.timedelta(days=1)).date().isoformat())
    slots = pat.locator("#slot-list button.slot")
    expect(slots).to_have_count(6)  # 09:00, 09:30, 10:00, 10:30 London; the next day's extra 14:00, 14:30
    starts = slots.evaluate_all("buttons => buttons.map(b => b.dataset.start)")
    assert all(s.endswith("+09:00") for s in starts), starts
    assert dt.datetime.fromisoformat(starts[0]) == first_local
    # The label is the browser's local (Tokyo) time: 09:00 London is 17:00 or 18:00 in Tokyo.
    expect(slots.first).to_contain_text(first_local.strftime("%H:%M"))
    pat.select_option("#book-kind", "video")
    pat.fill("#book-reason", "Follow-up on a rash")
    t.mark("slots listed")
    slots.first.click()
    expect(pat.locator("#book-status")).to_contain_text("Booked")
    appointment = Appointment.objects.get(patient=patient)
    assert appointment.state == "confirmed"
    assert appointment.starts_at == first_local
    mine = pat.locator(f"#appointment-list li[data-appointment-id='{appointment.pk}']")
    expect(mine).to_have_attribute("data-state", "confirmed")
    expect(mine).to_contain_text("Dr. Ada Martin")
    expect(slots).to_have_count(5)  # the booked slot is gone

    # --- the doctor's console, open all along, shows it live --------------------------------
    theirs = doc.locator(f"#appointment-list li[data-appointment-id='{appointment.pk}']")
    expect(theirs).to_have_attribute("data-state", "confirmed")
    expect(theirs).to_contain_text(f"Patient {patient.pk}")
    expect(theirs).to_contain_text("09:00")  # London time in the doctor's London browser
    t.mark("booked, seen live")
    screenshot(pat, "console-appointments-book")
    screenshot(doc, "console-appointments-doctor")
    assert_accessible(pat, "patient's booking")

    # --- reschedule: the doctor's row moves live --------------------------------------------
    mine.get_by_role("button", name="Reschedule").click()
    picker = pat.locator(f"#reschedule-{appointment.pk} button.slot")
    expect(picker.first).to_be_visible()
    later = dt.datetime.combine(day, dt.time(10, 30), LONDON)
    pat.locator(
        f"#reschedule-{appointment.pk} button.slot[data-start='{later.astimezone(TOKYO).isoformat()}']"
    ).click()
    wait_until(lambda: Appointment.objects.get(pk=appointment.pk).starts_at == later, message="rescheduled")
    expect(theirs).to_contain_text("10:30")
    t.mark("rescheduled, seen live")

    # --- the .ics file ----------------------------------------------------------------------
    with pat.expect_download() as download_info:
        mine.get_by_role("button", name="Download .ics").click()
    download = download_info.value
    assert download.suggested_filename == f"appointment-{appointment.pk}.ics"
    text = Path(download.path()).read_text(encoding="utf-8")
    assert "BEGIN:VCALENDAR" in text
    assert f"UID:appointment-{appointment.pk}@healthchat" in text
    assert "rash" not in text

    # --- the doctor's private feed ------------------------------------------------------------
    doc.click("#feed-rotate")
    expect(doc.locator("#feed-url")).not_to_have_value("")
    url = doc.locator("#feed-url").input_value()
    feed = requests.get(url, timeout=30)
    assert feed.status_code == 200
    assert f"appointment-{appointment.pk}@healthchat" in feed.text
    doc.click("#feed-revoke")
    expect(doc.locator("#feed-status")).to_have_text("Feed revoked.")
    assert requests.get(url, timeout=30).status_code == 404

    # --- cancel (early: free): live on the doctor's side ------------------------------------
    mine.get_by_role("button", name="Cancel").click()
    expect(mine).to_have_attribute("data-state", "cancelled")
    expect(theirs).to_have_attribute("data-state", "cancelled")
    assert Appointment.objects.get(pk=appointment.pk).state == "cancelled"
    t.mark("ics, feed, cancel")
    # No script error (the refused schedule's 400 is the only failed request, logged by Chromium).
    errors = [line for line in pat.log + doc.log if line.startswith("error") and "status of 400" not in line]
    assert not errors, pat.log + doc.log
    print(f"\nconsole appointments timings: {t.report()}")


def test_check_in_the_doctor_admits_with_a_video_call(
    page_in_zone: Callable[[Any, str], Any], console_server: Any, make_token: Any
) -> None:
    t = Timings()
    # Five-minute slots all day (UTC): the next one starts within ten minutes (check-in is open).
    doctor, _ = doctor_with_schedule(
        tz="UTC", weekly=[(d, "00:00", "23:55") for d in range(7)], slot_minutes=5, buffer_minutes=0
    )
    patient = PatientFactory.create(display_name="Sam Waiting")
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    headers = {"Authorization": f"Bearer {token}"}
    today = dt.datetime.now(dt.UTC).date()
    slots = requests.get(
        f"{console_server.base_url}/api/v1/doctors/{doctor.pk}/slots",
        params={"start": today.isoformat(), "end": (today + dt.timedelta(days=1)).isoformat(), "tz": "UTC"},
        headers=headers,
        timeout=30,
    ).json()
    booked = requests.post(
        f"{console_server.base_url}/api/v1/appointments",
        json={"doctor_id": doctor.pk, "starts_at": slots[0]["start"], "kind": "video"},
        headers=headers,
        timeout=30,
    )
    assert booked.status_code == 201, booked.text
    appointment_id = booked.json()["appointment"]["id"]
    assert booked.json()["appointment"]["state"] == "confirmed"  # development provider

    doc = page_in_zone(doctor, "UTC")
    doc.click("#tab-appointments")
    expect(doc.locator("#waiting-room-panel")).to_be_visible()
    expect(doc.locator("#no-waiting")).to_be_visible()
    pat = page_in_zone(patient, "UTC")
    pat.click("#tab-appointments")
    expect(pat.locator("#waiting-room-panel")).to_be_hidden()
    mine = pat.locator(f"#appointment-list li[data-appointment-id='{appointment_id}']")
    expect(mine).to_have_attribute("data-state", "confirmed")
    t.mark("signed in")

    # The patient checks in; their place shows; the doctor's waiting room fills live.
    mine.get_by_role("button", name="Check in").click()
    expect(mine).to_have_attribute("data-state", "checked_in")
    expect(mine.locator(".position")).to_have_attribute("data-position", "1")
    expect(mine.locator(".position")).to_contain_text("Position 1 in the waiting room (0 before you)")
    waiting = doc.locator(f"#waiting-list li[data-appointment-id='{appointment_id}']")
    expect(waiting).to_contain_text("Sam Waiting")
    expect(waiting).to_have_attribute("data-position", "1")
    t.mark("check-in, queue live")
    screenshot(doc, "console-waiting-room")
    screenshot(pat, "console-appointments-checked-in")
    assert_accessible(doc, "doctor's waiting room")
    assert_accessible(pat, "patient checked in")

    # Admit + video call: the doctor's chat opens and the call rings on the patient's console.
    waiting.get_by_role("button", name="Admit + video call").click()
    expect(doc.locator("#tab-chat")).to_have_attribute("aria-selected", "true")
    expect(doc.locator("#chat-body")).to_be_visible()
    expect(pat.locator("#tab-chat")).to_have_attribute("aria-selected", "true")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "ringing")
    pat.click("#call-accept")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "connected")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "connected")
    t.mark("admitted, call connected")
    appointment = Appointment.objects.get(pk=appointment_id)
    assert appointment.state == "admitted"
    assert appointment.admitted_at is not None
    assert appointment.consultation_id is not None
    assert Consultation.objects.get(pk=appointment.consultation_id).state == "in_progress"
    expect(doc.locator("#waiting-list li")).to_have_count(0)
    expect(doc.locator("#no-waiting")).to_be_attached()

    doc.click("#call-hangup")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "ended")
    pat.click("#tab-appointments")
    expect(mine).to_have_attribute("data-state", "admitted")
    expect(mine.get_by_role("button", name="Open the chat")).to_be_visible()
    errors = [line for line in pat.log + doc.log if line.startswith("error")]
    assert not errors, errors
    print(f"\nconsole waiting room timings: {t.report()}")


def test_first_available_doctor_on_demand(page_in_zone: Callable[[Any, str], Any]) -> None:
    t = Timings()
    # Through the service: the public specialty list (cached) is refreshed.
    specialty = account_services.specialty_save(
        specialty=Specialty(slug="console-on-demand", name="Console on-demand")
    )
    doctor = DoctorFactory.create(
        display_name="Dr. Quick Response",
        profile__specialty=specialty,
        profile__verification_status="verified",
        profile__consultation_fee=2000,
        profile__currency="GBP",
    )
    patient = PatientFactory.create(display_name="Sam Asking")
    doc = page_in_zone(doctor, "UTC")
    doc.click("#tab-appointments")
    expect(doc.locator("#on-demand-panel")).to_be_visible()
    expect(doc.locator("#no-on-demand")).to_be_visible()
    pat = page_in_zone(patient, "UTC")
    pat.click("#tab-appointments")
    expect(pat.locator("#on-demand-panel")).to_be_hidden()
    pat.select_option("#on-demand-specialty", specialty.slug)
    pat.select_option("#book-kind", "chat")
    pat.fill("#book-reason", "A sudden rash")
    pat.click("#on-demand-ask")
    mine = pat.locator("#my-on-demand li").first
    expect(mine).to_have_attribute("data-state", "open")
    expect(mine).to_contain_text("Waiting for a doctor")
    request = OnDemandRequest.objects.get(patient=patient)
    # The doctor's console shows it live (the frame), with the reason (read over REST).
    row = doc.locator(f"#on-demand-list li[data-request-id='{request.pk}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("A sudden rash")
    t.mark("request seen live")
    screenshot(doc, "console-on-demand")
    assert_accessible(doc, "doctor's on-demand requests")
    assert_accessible(pat, "patient's first available doctor")

    row.get_by_role("button", name="Accept").click()
    expect(doc.locator("#tab-chat")).to_have_attribute("aria-selected", "true")  # the chat opens
    expect(doc.locator("#chat-body")).to_be_visible()
    expect(mine).to_have_attribute("data-state", "accepted")
    expect(mine).to_contain_text("Accepted by Dr. Quick Response")
    request.refresh_from_db()
    assert request.state == "accepted"
    assert request.doctor_id == doctor.pk
    assert request.consultation_id is not None
    expect(doc.locator("#on-demand-list li")).to_have_count(0)
    mine.get_by_role("button", name="Open the chat").click()
    expect(pat.locator("#tab-chat")).to_have_attribute("aria-selected", "true")
    expect(pat.locator("#chat-body")).to_be_visible()
    t.mark("accepted, both in the chat")
    errors = [line for line in pat.log + doc.log if line.startswith("error")]
    assert not errors, errors
    print(f"\nconsole on-demand timings: {t.report()}")
