"""Payments REST: authorization (who sees and does what), bad input, availability, payouts."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from accounts.models import DoctorProfile
from accounts.tests.factories import DoctorFactory, PatientFactory
from payments import services
from payments.models import Consultation, DoctorAvailability, StripeAccount
from payments.tests.factories import authorised, completed, onboarded, people, requested

pytestmark = pytest.mark.django_db


def error_code(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]["code"]


def test_only_the_patient_and_doctor_see_a_consultation(client_for, stripe_fake):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    other_patient, other_doctor = people()
    url = f"/api/v1/consultations/{consultation.pk}"

    mine = client_for(patient).get(url)
    assert mine.status_code == 200
    assert mine.json()["payment"]["client_secret"] == consultation.client_secret
    doctors = client_for(doctor).get(url)
    assert doctors.status_code == 200
    assert doctors.json()["payment"] is None  # the doctor never sees the client secret
    assert consultation.client_secret not in doctors.content.decode()

    for outsider in (other_patient, other_doctor):
        assert error_code(client_for(outsider).get(url), 404) == "consultation_not_found"
        listed = client_for(outsider).get("/api/v1/consultations").json()["results"]
        assert listed == []
        for action in ("accept", "decline", "start", "complete", "cancel"):
            response = client_for(outsider).post(f"{url}/{action}")
            assert error_code(response, 404) == "consultation_not_found"
    consultation.refresh_from_db()
    assert consultation.state == "requested"


def test_list_is_scoped_and_never_shows_client_secrets(client_for, stripe_fake):
    patient, doctor = people()
    mine = requested(patient, doctor)
    other_patient, _ = people()
    theirs = requested(other_patient, doctor)
    response = client_for(patient).get("/api/v1/consultations")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [c["id"] for c in results] == [mine.pk]
    assert "client_secret" not in response.content.decode()
    assert "payout_status" not in results[0]
    doctor_view = client_for(doctor).get("/api/v1/consultations?role=doctor").json()["results"]
    assert {c["id"] for c in doctor_view} == {mine.pk, theirs.pk}
    assert all("payout_status" in c for c in doctor_view)
    assert client_for(doctor).get("/api/v1/consultations?role=patient").json()["results"] == []
    assert error_code(client_for(patient).get("/api/v1/consultations?state=nope"), 400) == "invalid"


def test_list_query_count_does_not_grow_with_rows(client_for, stripe_fake, django_assert_max_num_queries):
    _, doctor = people()
    for _ in range(4):
        patient, _ = people()
        requested(patient, doctor)
    api = client_for(doctor)
    with django_assert_max_num_queries(4):
        response = api.get("/api/v1/consultations")
    assert len(response.json()["results"]) == 4


def test_patient_cannot_accept_start_or_complete(client_for, stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    api = client_for(patient)
    for action in ("accept", "decline", "start", "complete"):
        response = api.post(f"/api/v1/consultations/{consultation.pk}/{action}")
        assert error_code(response, 403) == "not_allowed"
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    assert error_code(api.post(f"/api/v1/consultations/{consultation.pk}/complete"), 403) == "not_allowed"
    consultation.refresh_from_db()
    assert consultation.state == "accepted"
    assert stripe_fake.calls("POST", "/v1/transfers") == []


def test_patient_cannot_cancel_after_acceptance(client_for, stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    response = client_for(patient).post(f"/api/v1/consultations/{consultation.pk}/cancel")
    assert error_code(response, 409) == "cannot_cancel"
    assert stripe_fake.calls("POST", "/v1/refunds") == []


def test_wrong_state_is_a_conflict(client_for, stripe_fake):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    api = client_for(doctor)
    assert (
        error_code(api.post(f"/api/v1/consultations/{consultation.pk}/complete"), 409) == "invalid_transition"
    )
    assert error_code(api.post(f"/api/v1/consultations/{consultation.pk}/start"), 409) == "invalid_transition"
    assert (
        error_code(api.post(f"/api/v1/consultations/{consultation.pk}/accept"), 409)
        == "payment_not_authorised"
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"doctor_id": "omit", "kind": "chat"}, 400, "invalid"),
        ({"doctor_id": "x", "kind": "chat"}, 400, "invalid"),
        ({"doctor_id": None, "kind": "sms"}, 400, "invalid"),
        ({"kind": "surgery"}, 400, "invalid"),
        ({"kind": "chat", "reason": "x" * 2001}, 400, "invalid"),
        ({"kind": "chat", "reason": "bad\x00text"}, 400, "invalid"),
        ({"kind": "chat", "price": 1}, 400, "invalid"),
        ({"kind": "chat", "state": "paid"}, 400, "invalid"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(client_for, stripe_fake, body, status, code):
    patient, doctor = people()
    payload = {"doctor_id": doctor.pk, **body}
    if payload["doctor_id"] == "omit":
        del payload["doctor_id"]
    response = client_for(patient).post("/api/v1/consultations", payload, format="json")
    assert error_code(response, status) == code
    assert not Consultation.objects.exists()
    assert stripe_fake.calls() == []


def test_unverified_and_unknown_doctors_cannot_be_consulted(client_for, stripe_fake):
    patient = PatientFactory()
    pending = DoctorFactory(
        profile__verification_status=DoctorProfile.Verification.PENDING, profile__verified_at=None
    )
    rejected = DoctorFactory(profile__verification_status=DoctorProfile.Verification.REJECTED)
    other_patient = PatientFactory()
    api = client_for(patient)
    for target in (pending.pk, rejected.pk, other_patient.pk, 999999):
        response = api.post("/api/v1/consultations", {"doctor_id": target, "kind": "chat"}, format="json")
        assert error_code(response, 404) == "doctor_not_found"
    assert not Consultation.objects.exists()
    assert stripe_fake.calls() == []


def test_doctors_cannot_request_and_fee_must_be_set(client_for, stripe_fake):
    patient, doctor = people()
    another_doctor = DoctorFactory()
    response = client_for(another_doctor).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json"
    )
    assert error_code(response, 403) == "patients_only"
    free = DoctorFactory(profile__consultation_fee=0)
    response = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": free.pk, "kind": "chat"}, format="json"
    )
    assert error_code(response, 409) == "doctor_has_no_fee"
    assert not Consultation.objects.exists()


def test_one_open_consultation_per_doctor(client_for, stripe_fake):
    patient, doctor = people()
    first = requested(patient, doctor)
    response = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "voice"}, format="json"
    )
    assert error_code(response, 409) == "consultation_open"
    assert response.json()["error"]["consultation_id"] == first.pk
    services.consultation_cancel(user=patient, consultation_id=first.pk)
    again = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "voice"}, format="json"
    )
    assert again.status_code == 201
    assert again.json()["consultation"]["conversation_id"] == first.conversation_id  # same conversation


def test_price_is_copied_at_request_time(client_for, stripe_fake):
    patient, doctor = people(consultation_fee=4200, currency="EUR")
    consultation = requested(patient, doctor)
    DoctorProfile.objects.filter(user=doctor).update(consultation_fee=9999)
    consultation.refresh_from_db()
    assert (consultation.price, consultation.currency, consultation.platform_fee) == (4200, "EUR", 630)


def test_availability_offline_and_hours(client_for, stripe_fake):
    patient, doctor = people()
    doctor_api = client_for(doctor)
    response = doctor_api.put("/api/v1/availability", {"online": False}, format="json")
    assert response.status_code == 200
    assert response.json()["available_now"] is False
    create = {"doctor_id": doctor.pk, "kind": "chat"}
    assert (
        error_code(client_for(patient).post("/api/v1/consultations", create, format="json"), 409)
        == "doctor_offline"
    )

    # Online, but the only window is at another time of day than now.
    now = timezone.now().astimezone(zoneinfo.ZoneInfo("Europe/London"))
    other = (now + dt.timedelta(hours=12)).replace(minute=0)
    window = {"weekday": other.weekday(), "start": other.strftime("%H:00"), "end": other.strftime("%H:30")}
    response = doctor_api.put(
        "/api/v1/availability",
        {"online": True, "timezone": "Europe/London", "weekly_hours": [window]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["weekly_hours"] == [window]
    assert error_code(client_for(patient).post("/api/v1/consultations", create, format="json"), 409) == (
        "doctor_unavailable"
    )
    public = client_for(patient).get(f"/api/v1/doctors/{doctor.pk}/availability").json()
    assert public["available_now"] is False
    # Queue requests outside hours: accepted.
    doctor_api.put("/api/v1/availability", {"outside_hours": "queue"}, format="json")
    assert client_for(patient).post("/api/v1/consultations", create, format="json").status_code == 201
    # Inside the hours: accepted too.
    DoctorAvailability.objects.filter(doctor=doctor).update(outside_hours="refuse")
    window_now = {"weekday": now.weekday(), "start": "00:00", "end": "23:59"}
    doctor_api.put("/api/v1/availability", {"weekly_hours": [window_now]}, format="json")
    second_patient, _ = people()
    assert client_for(second_patient).post("/api/v1/consultations", create, format="json").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"weekly_hours": [{"weekday": 7, "start": "09:00", "end": "10:00"}]},
        {"weekly_hours": [{"weekday": 1, "start": "10:00", "end": "09:00"}]},
        {"weekly_hours": [{"weekday": 1, "start": "9", "end": "10:00"}]},
        {
            "weekly_hours": [
                {"weekday": 1, "start": "09:00", "end": "11:00"},
                {"weekday": 1, "start": "10:00", "end": "12:00"},
            ]
        },
        {"weekly_hours": "mornings"},
        {"timezone": "Mars/Olympus"},
        {"outside_hours": "maybe"},
        {"holiday": True},
    ],
)
def test_bad_availability_is_refused(client_for, stripe_fake, body):
    _, doctor = people()
    response = client_for(doctor).put("/api/v1/availability", body, format="json")
    assert response.status_code == 400, response.content
    assert not DoctorAvailability.objects.exists()


def test_patients_have_no_availability_or_payouts(client_for, stripe_fake):
    patient, _ = people()
    api = client_for(patient)
    assert error_code(api.put("/api/v1/availability", {"online": True}, format="json"), 403) == "doctors_only"
    assert error_code(api.get("/api/v1/payouts"), 403) == "doctors_only"
    assert error_code(api.post("/api/v1/payouts/onboarding"), 403) == "doctors_only"


def test_payout_onboarding_creates_one_express_account(client_for, stripe_fake):
    _, doctor = people()
    api = client_for(doctor)
    first = api.post("/api/v1/payouts/onboarding")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["url"].startswith("https://connect.stripe.com/")
    assert body["account"]["payouts_enabled"] is False
    second = api.post("/api/v1/payouts/onboarding")
    assert second.json()["account"]["account_id"] == body["account"]["account_id"]
    (create,) = stripe_fake.calls("POST", "/v1/accounts")
    assert create.params["type"] == "express"
    assert create.idempotency_key == f"doctor:{doctor.pk}:connect-account"
    assert all(r.idempotency_key for r in stripe_fake.calls("POST", "/v1/account_links"))
    assert StripeAccount.objects.filter(doctor=doctor).count() == 1


def test_unverified_doctor_cannot_onboard(client_for, stripe_fake):
    pending = DoctorFactory(
        profile__verification_status=DoctorProfile.Verification.PENDING, profile__verified_at=None
    )
    assert error_code(client_for(pending).post("/api/v1/payouts/onboarding"), 403) == "not_verified"
    assert stripe_fake.calls() == []


def test_a_doctor_sees_only_their_own_payouts(client_for, stripe_fake):
    patient, doctor = people()
    onboarded(doctor, stripe_fake)
    mine = completed(patient, doctor, stripe_fake)
    other_patient, other_doctor = people()
    onboarded(other_doctor, stripe_fake)
    completed(other_patient, other_doctor, stripe_fake)

    response = client_for(doctor).get("/api/v1/payouts")
    assert response.status_code == 200
    entries = response.json()["results"]
    assert [(e["consultation_id"], e["amount"]) for e in entries] == [(mine.pk, 2550)]
    assert response.json()["account"]["payouts_enabled"] is True
    other = client_for(other_doctor).get("/api/v1/payouts").json()["results"]
    assert mine.pk not in [e["consultation_id"] for e in other]


def test_webhook_needs_no_token_but_other_endpoints_do(stripe_fake):
    from rest_framework.test import APIClient

    anonymous = APIClient()
    assert anonymous.get("/api/v1/consultations").status_code == 401
    assert anonymous.post("/api/v1/payouts/onboarding").status_code == 401
    response = anonymous.post("/api/v1/payments/stripe/webhook", {}, format="json")
    assert error_code(response, 400) == "invalid_signature"
