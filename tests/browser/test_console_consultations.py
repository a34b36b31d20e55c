"""The doctor's side of consultations in the console: the availability switch (the server's
DoctorAvailability follows it), requests that patients make over REST appear live
(``consultation.updated``), one accepted and one declined from the console (the server's state
follows), the patient's console shows theirs; axe on the consultation screens."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from accounts.tests.factories import DoctorFactory, PatientFactory
from payments.models import Consultation, DoctorAvailability
from tests.browser import Timings, assert_accessible, screenshot, wait_until

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_doctor_accepts_and_declines_requests_and_switches_availability(
    signed_in: Any, console_server: Any, make_token: Any
) -> None:
    t = Timings()
    doctor = DoctorFactory.create(display_name="Dr. Ada Martin")
    patients = [PatientFactory.create(display_name=f"Patient {i}") for i in range(2)]
    doc = signed_in(doctor)
    t.mark("sign in")

    switch = doc.locator("#availability")
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(doc.locator("#availability-state")).to_have_text("(off)")
    wait_until(lambda: not DoctorAvailability.objects.get(doctor=doctor).online, message="availability off")
    switch.check()
    expect(doc.locator("#availability-state")).not_to_have_text("(off)")
    wait_until(lambda: DoctorAvailability.objects.get(doctor=doctor).online, message="availability on")
    t.mark("availability switch")

    ids = []
    for patient in patients:
        token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
        response = requests.post(
            f"{console_server.base_url}/api/v1/consultations",
            json={"doctor_id": doctor.pk, "kind": "chat", "reason": "Headache for three days"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["consultation"]["id"])
    rows = doc.locator("#consultation-list li[data-state='paid']")
    expect(rows).to_have_count(2)  # arrived live
    t.mark("requests arrive")
    screenshot(doc, "console-consultations")
    assert_accessible(doc, "consultation requests")

    doc.locator(f"li[data-consultation-id='{ids[0]}'] button", has_text="Accept").click()
    doc.locator(f"li[data-consultation-id='{ids[1]}'] button", has_text="Decline").click()
    expect(rows).to_have_count(0)
    wait_until(lambda: Consultation.objects.get(pk=ids[0]).state == "accepted", message="accepted")
    wait_until(lambda: Consultation.objects.get(pk=ids[1]).state == "declined", message="declined")
    t.mark("accept + decline")

    pat = signed_in(patients[0])
    mine = pat.locator(f"#consultation-list li[data-consultation-id='{ids[0]}']")
    expect(mine).to_have_attribute("data-state", "accepted")
    expect(pat.locator("#availability-control")).to_be_hidden()  # doctors only
    assert_accessible(pat, "patient's consultations")
    screenshot(pat, "console-patient")
    t.mark("patient view")
    print(f"\nconsole consultations timings: {t.report()}")
