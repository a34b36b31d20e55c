"""Operator commands: verify_doctor, delete_user, export_user, dev_token, seed_specialties."""

from __future__ import annotations

import json
from io import StringIO

import jwt
import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import Device, DoctorProfile, PatientProfile, Specialty, User
from accounts.tests.factories import DeviceFactory, DoctorProfileFactory, PatientFactory, UserFactory
from conftest import PROJECT_ID, unique_phone

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def pending_doctor() -> User:
    doctor = UserFactory.create(role=User.Role.DOCTOR)
    DoctorProfileFactory(user=doctor, verification_status="pending", verified_at=None)
    return doctor


# --- verify_doctor -------------------------------------------------------------------------
def test_verify_doctor_by_phone_number():
    doctor = pending_doctor()
    out = run("verify_doctor", doctor.phone_number)
    assert f"doctor {doctor.pk} is now verified" in out
    profile = DoctorProfile.objects.get(user=doctor)
    assert profile.verification_status == "verified"
    assert profile.verified_at is not None
    assert profile.verified_by is None  # an operator, not a staff account


def test_verify_doctor_by_id_and_reject():
    doctor = pending_doctor()
    run("verify_doctor", str(doctor.pk))
    assert DoctorProfile.objects.get(user=doctor).verification_status == "verified"
    out = run("verify_doctor", str(doctor.pk), "--reject")
    assert "rejected" in out
    profile = DoctorProfile.objects.get(user=doctor)
    assert profile.verification_status == "rejected"
    assert profile.verified_at is not None


def test_verify_doctor_accepts_a_formatted_phone_number():
    doctor = pending_doctor()
    national = doctor.phone_number
    formatted = f"+1 ({national[2:5]}) {national[5:8]}-{national[8:]}"
    run("verify_doctor", formatted)
    assert DoctorProfile.objects.get(user=doctor).verification_status == "verified"


def test_verify_doctor_errors():
    with pytest.raises(CommandError, match="No user matches"):
        run("verify_doctor", unique_phone())
    with pytest.raises(CommandError, match="No user matches"):
        run("verify_doctor", "987654321")
    with pytest.raises(CommandError, match="No user matches"):
        run("verify_doctor", "not-a-number")
    patient = PatientFactory()
    with pytest.raises(CommandError, match="not a doctor"):
        run("verify_doctor", patient.phone_number)
    assert not DoctorProfile.objects.exists()


# --- delete_user ---------------------------------------------------------------------------
def test_delete_user(firebase_admin_api):
    patient = PatientFactory()
    phone, uid = patient.phone_number, patient.firebase_uid
    DeviceFactory(user=patient)
    out = run("delete_user", phone)
    assert f"user {patient.pk} deleted" in out
    row = User.objects.get(pk=patient.pk)
    assert (row.phone_number, row.firebase_uid, row.display_name, row.is_active) == (None, None, "", False)
    assert row.deleted_at is not None
    assert not PatientProfile.objects.filter(user_id=patient.pk).exists()
    assert not Device.objects.filter(user_id=patient.pk).exists()
    assert {body.get("localId") for _, body in firebase_admin_api} == {uid}
    # Idempotent by id; the phone number is gone, so it no longer finds anyone.
    run("delete_user", str(patient.pk))
    with pytest.raises(CommandError, match="No user matches"):
        run("delete_user", phone)


def test_delete_user_unknown():
    with pytest.raises(CommandError, match="No user matches"):
        run("delete_user", unique_phone())


# --- export_user ---------------------------------------------------------------------------
def test_export_user_prints_valid_json():
    patient = PatientFactory(display_name="Exported")
    DeviceFactory(user=patient, installation_id="fid-export")
    other = PatientFactory(display_name="Not Me")
    for ref in (patient.phone_number, str(patient.pk)):
        data = json.loads(run("export_user", ref))
        assert data["user"]["id"] == patient.pk
        assert data["user"]["display_name"] == "Exported"
        assert data["user"]["phone_number"] == patient.phone_number
        assert [d["installation_id"] for d in data["devices"]] == ["fid-export"]
        assert other.phone_number not in json.dumps(data)


def test_export_user_unknown():
    with pytest.raises(CommandError, match="No user matches"):
        run("export_user", "424242")


# --- dev_token -----------------------------------------------------------------------------
def test_dev_token_refused_without_dev_mode(settings):
    settings.FIREBASE_DEV_TOKENS = False
    with pytest.raises(CommandError, match="disabled"):
        run("dev_token", unique_phone())


def test_dev_token_gives_a_working_token(settings, tmp_path):
    settings.FIREBASE_DEV_TOKENS = True
    settings.DEV_TOKEN_KEY_PATH = tmp_path / "dev.pem"
    phone = unique_phone()
    token = run("dev_token", phone, "--lifetime", "600").strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["phone_number"] == phone
    assert claims["aud"] == PROJECT_ID
    assert claims["exp"] - claims["iat"] == 600
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Dev"}, format="json")
    assert response.status_code == 201, response.content
    assert client.get("/api/v1/me").json()["phone_number"] == phone
    # The same phone number always gets the same uid (the same account).
    again = run("dev_token", phone).strip()
    assert jwt.decode(again, options={"verify_signature": False})["sub"] == claims["sub"]


def test_dev_token_rejects_a_bad_phone_number(settings, tmp_path):
    settings.FIREBASE_DEV_TOKENS = True
    settings.DEV_TOKEN_KEY_PATH = tmp_path / "dev.pem"
    with pytest.raises(CommandError, match="phone number"):
        run("dev_token", "12345")


# --- seed_specialties ----------------------------------------------------------------------
def test_seed_specialties_is_idempotent():
    Specialty.objects.filter(slug="cardiology").delete()
    assert "1 specialties created" in run("seed_specialties")
    assert "0 specialties created" in run("seed_specialties")
    assert Specialty.objects.filter(slug="cardiology").exists()
