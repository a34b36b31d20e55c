"""Prescriptions over REST: issued by the consultation's verified doctor within their
jurisdiction, in an open or recently completed consultation, with clear codes for every
refusal; cancelled with a reason, never edited; the public check answers valid or cancelled and
nothing else."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import DoctorProfile
from audit.models import AuditEntry
from records.models import Prescription

from .conftest import VALID_RX, complete_days_ago, open_consultation

pytestmark = pytest.mark.django_db


def _issue(as_user, doctor, consultation, **changes):
    body = {**VALID_RX, **changes}
    body = {k: v for k, v in body.items() if v is not ...}
    return as_user(doctor).post(f"/api/v1/consultations/{consultation.pk}/prescriptions", body, format="json")


def _code(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_doctor_issues_a_prescription(as_user, doctor, patient, consultation) -> None:
    response = _issue(as_user, doctor, consultation)
    assert response.status_code == 201, response.content
    body = response.json()
    assert re.fullmatch(r"RX-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", body["number"])
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{16}", body["verification_code"])
    assert body["verify_path"] == f"/api/v1/prescriptions/verify/{body['verification_code']}"
    assert body["status"] == "issued"
    assert body["cancelled_at"] is None
    assert (body["patient_id"], body["doctor_id"], body["consultation_id"]) == (
        patient.pk,
        doctor.pk,
        consultation.pk,
    )
    assert body["doctor_name"] == "Dr Rita Record"
    assert (body["doctor_licence_number"], body["jurisdiction"]) == ("GMC-7654321", "GB")
    for field, value in VALID_RX.items():
        assert body[field] == value, field

    # The patient reads it, in the list, in the consultation and alone; a stranger cannot.
    assert as_user(patient).get(f"/api/v1/prescriptions/{body['id']}").json()["number"] == body["number"]
    assert [p["id"] for p in as_user(patient).get("/api/v1/prescriptions").json()["results"]] == [body["id"]]
    listed = as_user(patient).get(f"/api/v1/consultations/{consultation.pk}/prescriptions").json()
    assert [p["id"] for p in listed["results"]] == [body["id"]]


def test_a_consultations_prescriptions_come_in_cursor_pages(as_user, doctor, patient, consultation) -> None:
    """However many a doctor issues, a read is one bounded page (``limit``, ``cursor``)."""
    issued = [_issue(as_user, doctor, consultation).json()["id"] for _ in range(3)]
    url = f"/api/v1/consultations/{consultation.pk}/prescriptions"
    first = as_user(patient).get(f"{url}?limit=2").json()
    assert [p["id"] for p in first["results"]] == issued[::-1][:2]
    rest = as_user(patient).get(first["next"]).json()
    assert ([p["id"] for p in rest["results"]], rest["next"]) == (issued[:1], None)
    for bad in ("limit=0", "limit=x", "cursor=~~"):
        refused = as_user(patient).get(f"{url}?{bad}")
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid"), bad


def test_numbers_and_codes_are_unique(as_user, doctor, consultation) -> None:
    bodies = [_issue(as_user, doctor, consultation).json() for _ in range(5)]
    assert len({b["number"] for b in bodies}) == 5
    assert len({b["verification_code"] for b in bodies}) == 5


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"dose": ...}, (400, "dose_required")),
        ({"dose": "   "}, (400, "dose_required")),
        ({"medication_name": ""}, (400, "medication_required")),
        ({"frequency": ...}, (400, "frequency_required")),
        ({"quantity": ...}, (400, "quantity_required")),
        ({"quantity": 0}, (400, "quantity_out_of_range")),
        ({"quantity": 1001}, (400, "quantity_out_of_range")),
        ({"quantity": -3}, (400, "quantity_out_of_range")),
        ({"repeats": 13}, (400, "repeats_out_of_range")),
        ({"repeats": -1}, (400, "repeats_out_of_range")),
        ({"strength": "x" * 101}, (400, "field_too_long")),
        ({"quantity": "ten"}, (400, "invalid")),
        ({"colour": "blue"}, (400, "invalid")),
        ({"jurisdiction": "FR"}, (403, "outside_jurisdiction")),
    ],
)
def test_validation_codes(as_user, doctor, consultation, changes, expected) -> None:
    response = _issue(as_user, doctor, consultation, **changes)
    assert _code(response) == expected, response.content
    assert not Prescription.objects.exists()


def test_own_jurisdiction_is_accepted(as_user, doctor, consultation) -> None:
    assert _issue(as_user, doctor, consultation, jurisdiction="gb").status_code == 201


def test_prescriber_must_be_verified_and_licensed(as_user, doctor, consultation) -> None:
    DoctorProfile.objects.filter(user=doctor).update(
        licence_expires_on=timezone.localdate() - dt.timedelta(days=1)
    )
    assert _code(_issue(as_user, doctor, consultation)) == (403, "licence_expired")
    DoctorProfile.objects.filter(user=doctor).update(licence_expires_on=timezone.localdate())
    assert _issue(as_user, doctor, consultation).status_code == 201  # valid through its last day
    DoctorProfile.objects.filter(user=doctor).update(verification_status="rejected")
    assert _code(_issue(as_user, doctor, consultation)) == (403, "doctor_not_verified")
    DoctorProfile.objects.filter(user=doctor).update(verification_status="pending", verified_at=None)
    assert _code(_issue(as_user, doctor, consultation)) == (403, "doctor_not_verified")


def test_only_the_consultations_doctor(as_user, doctor, patient, stranger, consultation) -> None:
    assert _code(_issue(as_user, patient, consultation)) == (403, "not_the_doctor")
    assert _code(_issue(as_user, stranger, consultation)) == (404, "consultation_not_found")


def test_consultation_window(as_user, doctor, patient, settings) -> None:
    settings.HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS = 3
    paid = open_consultation(patient, doctor, "paid")
    assert _code(_issue(as_user, doctor, paid)) == (409, "consultation_not_eligible")
    assert not Prescription.objects.exists()


def test_open_in_progress_and_recently_completed(as_user, doctor, patient, settings) -> None:
    settings.HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS = 3
    consultation = open_consultation(patient, doctor, "in_progress")
    assert _issue(as_user, doctor, consultation).status_code == 201
    from payments import services as payment_services

    payment_services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    complete_days_ago(consultation, 2.9)
    assert _issue(as_user, doctor, consultation).status_code == 201
    complete_days_ago(consultation, 3.1)
    assert _code(_issue(as_user, doctor, consultation)) == (409, "consultation_not_eligible")


def test_cancel_with_a_reason_once(as_user, doctor, patient, consultation) -> None:
    p = _issue(as_user, doctor, consultation).json()
    url = f"/api/v1/prescriptions/{p['id']}/cancel"
    assert _code(as_user(patient).post(url, {"reason": "no"}, format="json")) == (403, "not_the_doctor")
    assert _code(as_user(doctor).post(url, {}, format="json")) == (400, "cancel_reason_required")
    assert _code(as_user(doctor).post(url, {"reason": "  "}, format="json")) == (
        400,
        "cancel_reason_required",
    )
    done = as_user(doctor).post(url, {"reason": "dose error"}, format="json")
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled"
    assert done.json()["cancel_reason"] == "dose error"
    assert done.json()["cancelled_at"]
    assert _code(as_user(doctor).post(url, {"reason": "again"}, format="json")) == (409, "already_cancelled")
    assert as_user(patient).get(f"/api/v1/prescriptions/{p['id']}").json()["status"] == "cancelled"


def test_there_is_no_edit_or_delete(as_user, doctor, consultation) -> None:
    p = _issue(as_user, doctor, consultation).json()
    for method in ("put", "patch", "delete"):
        response = getattr(as_user(doctor), method)(f"/api/v1/prescriptions/{p['id']}", {}, format="json")
        assert response.status_code == 405


def test_public_verification(as_user, doctor, patient, consultation) -> None:
    p = _issue(as_user, doctor, consultation).json()
    public = APIClient(REMOTE_ADDR="198.51.100.76")  # no credentials at all
    answer = public.get(f"/api/v1/prescriptions/verify/{p['verification_code']}")
    assert answer.status_code == 200
    body = answer.json()
    assert body == {
        "status": "valid",
        "number": p["number"],
        "issued_at": body["issued_at"],
        "prescriber": {"name": "Dr Rita Record", "licence_number": "GMC-7654321", "jurisdiction": "GB"},
    }
    text = json.dumps(body)
    for private in ("Paula", "Amoxicillin", "capsule", str(patient.phone_number), "food"):
        assert private not in text

    # Read from paper: lower case, dashes, spaces are fine.
    code = p["verification_code"].lower()
    spaced = f"{code[:4]}-{code[4:8]} {code[8:12]}-{code[12:]}"
    assert public.get(f"/api/v1/prescriptions/verify/{spaced}").json()["number"] == p["number"]

    as_user(doctor).post(f"/api/v1/prescriptions/{p['id']}/cancel", {"reason": "error"}, format="json")
    assert (
        public.get(f"/api/v1/prescriptions/verify/{p['verification_code']}").json()["status"] == "cancelled"
    )

    for wrong in ("0" * 16, "not-a-code", p["number"], "x"):
        missing = public.get(f"/api/v1/prescriptions/verify/{wrong}")
        assert _code(missing) == (404, "prescription_not_found")
        assert set(missing.json()["error"]) == {"code", "message"}

    checks = AuditEntry.objects.filter(action="prescription.verify")
    assert checks.count() == 3
    assert {(e.actor_id, e.object_type, e.object_id) for e in checks} == {
        (None, "prescription", str(p["id"]))
    }


def test_verification_is_throttled(as_user, doctor, consultation, settings) -> None:
    p = _issue(as_user, doctor, consultation).json()
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], prescription_verify="3/minute")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    public = APIClient(REMOTE_ADDR="198.51.100.77")
    statuses = [
        public.get(f"/api/v1/prescriptions/verify/{p['verification_code']}").status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_reads_and_writes_are_audited(as_user, doctor, patient, consultation) -> None:
    p = _issue(as_user, doctor, consultation).json()
    before = AuditEntry.objects.count()
    as_user(patient).get(f"/api/v1/prescriptions/{p['id']}")
    as_user(patient).get("/api/v1/prescriptions")
    as_user(doctor).get(f"/api/v1/consultations/{consultation.pk}/prescriptions")
    rows = list(AuditEntry.objects.order_by("id")[before:])
    assert [(r.action, r.actor_id, r.object_type, r.object_id) for r in rows] == [
        ("prescription.read", patient.pk, "prescription", str(p["id"])),
        ("prescription.list", patient.pk, "", ""),
        ("prescription.list", doctor.pk, "consultation", str(consultation.pk)),
    ]
    assert AuditEntry.objects.filter(action="prescription.issue", actor_id=doctor.pk).count() == 1
