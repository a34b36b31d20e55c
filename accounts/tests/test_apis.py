"""The accounts REST API end to end: real tokens, real PostgreSQL, rows checked afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import uuid
from typing import Any

import pytest
import responses
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import keys, selectors, services
from accounts.management.commands.seed_specialties import SPECIALTIES
from accounts.models import Device, DeviceIdentity, DoctorProfile, PatientProfile, Specialty, User
from accounts.tests.factories import (
    DeviceFactory,
    DoctorFactory,
    DoctorProfileFactory,
    PatientFactory,
    SpecialtyFactory,
    UserFactory,
)
from accounts.tests.helpers import assert_error
from audit import actions as audit_actions
from audit.models import AuditEntry
from conftest import unique_phone

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/auth/register"
ME = "/api/v1/me"
EXPORT = "/api/v1/me/export"
DOCTORS = "/api/v1/doctors"
DEVICES = "/api/v1/devices"


@pytest.fixture(autouse=True)
def seeded_specialties() -> None:
    """The specialties the data migration seeds. A transactional (live) test that ran earlier in
    the same worker empties every table, those rows included: registration tests name them."""
    Specialty.objects.bulk_create(
        [Specialty(slug=slug, name=name) for slug, name in SPECIALTIES], ignore_conflicts=True
    )


def doctor_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "role": "doctor",
        "display_name": "Dr Grace Hopper",
        "specialty": "cardiology",
        "licence_number": f"GMC-{unique_phone()[-7:]}",
        "jurisdiction": "GB",
        "consultation_fee": 4500,
        "currency": "gbp",
        "bio": "Hearts.",
        "languages": ["en", "fr"],
    }
    body.update(overrides)
    return body


def verified_doctor(name: str, slug: str = "cardiology", specialty_name: str = "Cardiology") -> User:
    specialty = SpecialtyFactory(slug=slug, name=specialty_name)
    return DoctorFactory.create(display_name=name, profile__specialty=specialty)


def doctor_with_status(status: str, name: str = "Dr Hidden") -> User:
    doctor = UserFactory.create(role=User.Role.DOCTOR, display_name=name)
    DoctorProfileFactory(
        user=doctor,
        verification_status=status,
        verified_at=None if status == DoctorProfile.Verification.PENDING else timezone.now(),
    )
    return doctor


# --- register ------------------------------------------------------------------------------
def test_register_patient(make_token, bearer):
    phone = unique_phone()
    client = bearer(make_token(phone_number=phone))
    response = client.post(
        REGISTER,
        {
            "role": "patient",
            "display_name": "  Ada   Lovelace ",
            "date_of_birth": "1990-02-03",
            "sex": "female",
            "emergency_contact_name": "Charles",
            "emergency_contact_phone": "+44 7911 123456",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["role"] == "patient"
    assert body["display_name"] == "Ada Lovelace"
    assert body["phone_number"] == phone
    assert body["doctor_profile"] is None
    assert body["patient_profile"] == {
        "date_of_birth": "1990-02-03",
        "sex": "female",
        "emergency_contact_name": "Charles",
        "emergency_contact_phone": "+447911123456",
    }
    user = User.objects.get(pk=body["id"])
    assert user.phone_number == phone
    assert user.role == User.Role.PATIENT
    assert not user.has_usable_password()
    assert not user.is_staff
    profile = PatientProfile.objects.get(user=user)
    assert profile.emergency_contact_phone == "+447911123456"
    assert not DoctorProfile.objects.filter(user=user).exists()


def test_register_doctor_is_pending(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    body = doctor_body()
    response = client.post(REGISTER, body, format="json")
    assert response.status_code == 201, response.content
    out = response.json()
    assert out["role"] == "doctor"
    assert out["patient_profile"] is None
    profile_out = out["doctor_profile"]
    assert profile_out["verification_status"] == "pending"
    assert profile_out["verified_at"] is None
    assert profile_out["specialty"] == {"slug": "cardiology", "name": "Cardiology"}
    assert profile_out["currency"] == "GBP"
    assert profile_out["consultation_fee"] == 4500
    profile = DoctorProfile.objects.get(user_id=out["id"])
    assert profile.verification_status == DoctorProfile.Verification.PENDING
    assert profile.verified_by is None
    assert profile.verified_at is None
    assert profile.licence_number == body["licence_number"]
    assert profile.jurisdiction == "GB"
    assert profile.languages == ["en", "fr"]
    # Not findable until staff verify them.
    patient = PatientFactory()
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(patient.firebase_uid, patient.phone_number)}")
    assert out["id"] not in [d["id"] for d in viewer.get(DOCTORS).json()["results"]]
    assert_error(viewer.get(f"{DOCTORS}/{out['id']}"), 404, "doctor_not_found")


def test_register_doctor_validation(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    error = assert_error(
        client.post(REGISTER, doctor_body(licence_number=None), format="json"), 400, "invalid"
    )
    assert "licence_number" in error["fields"]
    missing = {"role": "doctor", "display_name": "Dr No"}
    error = assert_error(client.post(REGISTER, missing, format="json"), 400, "missing_fields")
    assert set(error["fields"]) == {"specialty", "licence_number", "jurisdiction"}
    assert_error(
        client.post(REGISTER, doctor_body(specialty="astrology"), format="json"), 400, "unknown_specialty"
    )
    assert_error(client.post(REGISTER, doctor_body(consultation_fee=-1), format="json"), 400, "invalid")
    assert_error(client.post(REGISTER, doctor_body(currency="EURO"), format="json"), 400, "invalid")
    assert User.objects.count() == 0


def test_register_doctor_licence_taken(make_token, bearer):
    taken = DoctorFactory().doctor_profile
    client = bearer(make_token(phone_number=unique_phone()))
    body = doctor_body(licence_number=taken.licence_number, jurisdiction=taken.jurisdiction)
    assert_error(client.post(REGISTER, body, format="json"), 409, "licence_in_use")
    assert User.objects.count() == 1


def test_register_is_idempotent(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    first = client.post(REGISTER, {"role": "patient", "display_name": "Ann"}, format="json")
    second = client.post(REGISTER, {"role": "patient", "display_name": "Someone Else"}, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    assert User.objects.count() == 1
    assert PatientProfile.objects.count() == 1
    assert User.objects.get().display_name == "Ann"


def test_role_cannot_change_by_registering_again(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    created = client.post(REGISTER, {"role": "patient", "display_name": "Ann"}, format="json")
    assert created.status_code == 201
    assert_error(client.post(REGISTER, doctor_body(), format="json"), 409, "role_mismatch")
    user = User.objects.get()
    assert user.role == User.Role.PATIENT
    assert not DoctorProfile.objects.exists()


@pytest.mark.parametrize(
    ("verified", "e164"),
    [
        ("+15550100123", "+15550100123"),
        ("+447700900123", "+447700900123"),
        ("+1 555 010 0199", "+15550100199"),
    ],
)
def test_a_firebase_verified_number_is_accepted_when_possible(make_token, bearer, verified, e164):
    """Firebase verified it by SMS; libphonenumber's metadata calls it invalid (555 01xx,
    Ofcom's 07700 900xxx drama range): registration takes it, and operators find the user."""
    import phonenumbers

    assert not phonenumbers.is_valid_number(phonenumbers.parse(verified, None))
    response = bearer(make_token(phone_number=verified)).post(
        REGISTER, {"role": "patient", "display_name": "Ann"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["phone_number"] == e164
    assert User.objects.get(pk=response.json()["id"]).phone_number == e164
    assert selectors.user_get_by_phone_or_id(ref=verified).pk == response.json()["id"]


def test_a_typed_number_is_still_checked_strictly(make_token, bearer):
    """An emergency contact is typed by the user: libphonenumber's validity check stays."""
    client = bearer(make_token(phone_number=unique_phone()))
    body = {"role": "patient", "display_name": "Ann", "emergency_contact_phone": "+447700900123"}
    assert_error(client.post(REGISTER, body, format="json"), 400, "invalid_phone_number")


@pytest.mark.parametrize(
    "verified", ["+1234", "+15550100", "+4412345678901234567", "12025550100", "not a number"]
)
def test_a_verified_token_with_an_impossible_number_is_refused(make_token, bearer, verified):
    """Too short, too long, local-only (+1 555 0100 has no area code), not international."""
    response = bearer(make_token(phone_number=verified)).post(
        REGISTER, {"role": "patient", "display_name": "Ann"}, format="json"
    )
    assert_error(response, 400, "invalid_phone_number")
    assert not User.objects.filter(display_name="Ann").exists()


def test_phone_number_of_another_account(make_token, bearer):
    """A second Firebase account (new uid) with a phone number we already hold."""
    holder = PatientFactory()
    client = bearer(make_token(phone_number=holder.phone_number))
    assert_error(client.post(REGISTER, {"role": "patient", "display_name": "X"}), 409, "phone_number_in_use")
    assert User.objects.count() == 1


def test_register_refuses_unknown_and_foreign_fields(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    for extra in ({"is_staff": True}, {"verification_status": "verified"}, {"firebase_uid": "x"}):
        body = {"role": "patient", "display_name": "Ann", **extra}
        error = assert_error(client.post(REGISTER, body, format="json"), 400, "invalid")
        assert error["fields"][next(iter(extra))][0]["code"] == "unknown_field"
    error = assert_error(
        client.post(
            REGISTER, {"role": "patient", "display_name": "Ann", "licence_number": "L1"}, format="json"
        ),
        400,
        "invalid",
    )
    assert error["fields"]["licence_number"][0]["code"] == "not_for_role"
    error = assert_error(client.post(REGISTER, doctor_body(sex="male"), format="json"), 400, "invalid")
    assert error["fields"]["sex"][0]["code"] == "not_for_role"
    assert_error(
        client.post(REGISTER, doctor_body(verification_status="verified"), format="json"), 400, "invalid"
    )
    assert User.objects.count() == 0


def test_register_lost_race_returns_the_winner(make_token, bearer, monkeypatch):
    """The lookup missed the user that a concurrent request then committed (phone check path)."""
    phone = unique_phone()
    client = bearer(make_token("race-uid-1", phone))
    assert client.post(REGISTER, {"role": "patient", "display_name": "Ann"}).status_code == 201
    real = selectors.user_get_by_firebase_uid
    calls = []

    def first_lookup_misses(*, uid: str) -> User | None:
        calls.append(uid)
        return None if len(calls) == 1 else real(uid=uid)

    monkeypatch.setattr(selectors, "user_get_by_firebase_uid", first_lookup_misses)
    response = client.post(REGISTER, {"role": "patient", "display_name": "Ann"})
    assert response.status_code == 200, response.content
    assert User.objects.count() == 1
    assert len(calls) >= 2


def test_register_integrity_error_path_returns_the_winner(make_token, bearer, monkeypatch):
    """Same uid, phone not yet visible: the unique index on the uid decides (IntegrityError)."""
    winner = PatientFactory(firebase_uid="race-uid-2")
    client = bearer(make_token("race-uid-2", unique_phone()))
    real = selectors.user_get_by_firebase_uid
    calls = []

    def first_lookup_misses(*, uid: str) -> User | None:
        calls.append(uid)
        return None if len(calls) == 1 else real(uid=uid)

    monkeypatch.setattr(selectors, "user_get_by_firebase_uid", first_lookup_misses)
    response = client.post(REGISTER, {"role": "patient", "display_name": "Ann"})
    assert response.status_code == 200, response.content
    assert response.json()["id"] == winner.pk
    assert User.objects.count() == 1
    # ...and a different role still gets the clear conflict.
    calls.clear()
    assert_error(client.post(REGISTER, doctor_body(), format="json"), 409, "role_mismatch")


@pytest.mark.django_db(transaction=True)
def test_concurrent_double_register_gives_one_user(make_token):
    token = make_token(phone_number=unique_phone())
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[tuple[int, dict[str, Any]]] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            barrier.wait(timeout=10)
            response = client.post(REGISTER, {"role": "patient", "display_name": "Twin"}, format="json")
            results.append((response.status_code, response.json()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (workers - 1) + [201], results
    assert len({body["id"] for _, body in results}) == 1
    assert User.objects.count() == 1
    assert PatientProfile.objects.count() == 1


# --- me ------------------------------------------------------------------------------------
def test_get_me(client_for):
    doctor = DoctorFactory()
    body = client_for(doctor).get(ME).json()
    assert body["id"] == doctor.pk
    assert body["doctor_profile"]["licence_number"] == doctor.doctor_profile.licence_number
    assert body["doctor_profile"]["verification_status"] == "verified"


def test_patch_me_patient(client_for):
    patient = PatientFactory(display_name="Old")
    response = client_for(patient).patch(
        ME,
        {
            "display_name": "New Name",
            "sex": "other",
            "date_of_birth": "1980-05-06",
            "emergency_contact_phone": "",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["display_name"] == "New Name"
    patient.refresh_from_db()
    assert patient.display_name == "New Name"
    profile = PatientProfile.objects.get(user=patient)
    assert (profile.sex, profile.date_of_birth.isoformat()) == ("other", "1980-05-06")


@pytest.mark.parametrize(
    "change",
    [
        {"role": "doctor"},
        {"verification_status": "verified"},
        {"role": "doctor", "display_name": "Sneaky"},
        {"verification_status": "verified", "display_name": "Sneaky"},
        {"is_staff": True},
        {"licence_number": "L-1", "display_name": "Sneaky"},
    ],
)
def test_patient_cannot_change_role_or_verify_themselves(client_for, change):
    patient = PatientFactory(display_name="Patient Zero")
    assert_error(client_for(patient).patch(ME, change, format="json"), 400, "invalid")
    patient.refresh_from_db()
    assert patient.role == User.Role.PATIENT
    assert patient.display_name == "Patient Zero"
    assert not patient.is_staff
    assert not DoctorProfile.objects.filter(user=patient).exists()


def test_doctor_cannot_verify_themselves(client_for):
    doctor = doctor_with_status(DoctorProfile.Verification.PENDING)
    client = client_for(doctor)
    for change in (
        {"verification_status": "verified"},
        {"verified_at": "2024-01-01T00:00:00Z"},
        {"role": "patient"},
    ):
        assert_error(client.patch(ME, change, format="json"), 400, "invalid")
    profile = DoctorProfile.objects.get(user=doctor)
    assert profile.verification_status == DoctorProfile.Verification.PENDING
    assert profile.verified_at is None
    doctor.refresh_from_db()
    assert doctor.role == User.Role.DOCTOR


def test_doctor_changing_licence_goes_back_to_pending(client_for, django_user_model):
    staff = django_user_model.objects.create_superuser(unique_phone(), "pw")
    doctor = doctor_with_status(DoctorProfile.Verification.PENDING, name="Dr Who")
    services.doctor_set_verification(doctor=doctor, status="verified", actor=staff)
    client = client_for(doctor)
    profile = DoctorProfile.objects.get(user=doctor)

    # Sending the same credentials again (a full form) or other fields keeps the verification.
    same = {"licence_number": profile.licence_number, "jurisdiction": profile.jurisdiction, "bio": "New bio"}
    assert client.patch(ME, same, format="json").status_code == 200
    profile.refresh_from_db()
    assert (profile.verification_status, profile.verified_by, profile.bio) == ("verified", staff, "New bio")

    response = client.patch(ME, {"licence_number": "NEW-123"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["doctor_profile"]["verification_status"] == "pending"
    profile.refresh_from_db()
    assert profile.licence_number == "NEW-123"
    assert profile.verification_status == DoctorProfile.Verification.PENDING
    assert profile.verified_at is None
    assert profile.verified_by is None
    assert client.get(DOCTORS).json()["results"] == []


def test_doctor_changing_specialty_goes_back_to_pending(client_for):
    doctor = verified_doctor("Dr Skin", slug="dermatology", specialty_name="Dermatology")
    client = client_for(doctor)
    assert client.patch(ME, {"specialty": "dermatology"}, format="json").status_code == 200
    assert DoctorProfile.objects.get(user=doctor).verification_status == "verified"
    assert client.patch(ME, {"specialty": "cardiology"}, format="json").status_code == 200
    assert DoctorProfile.objects.get(user=doctor).verification_status == "pending"


def test_doctor_cannot_take_another_doctors_licence(client_for):
    mine, theirs = DoctorFactory(), DoctorFactory()
    other = theirs.doctor_profile
    body = {"licence_number": other.licence_number, "jurisdiction": other.jurisdiction}
    assert_error(client_for(mine).patch(ME, body, format="json"), 409, "licence_in_use")
    profile = DoctorProfile.objects.get(user=mine)
    assert profile.licence_number != other.licence_number
    assert profile.verification_status == "verified"


# --- doctors -------------------------------------------------------------------------------
def test_doctors_lists_verified_only(client_for):
    shown = verified_doctor("Dr Shown")
    doctor_with_status(DoctorProfile.Verification.PENDING)
    doctor_with_status(DoctorProfile.Verification.REJECTED)
    inactive = verified_doctor("Dr Inactive")
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    patient = PatientFactory()
    response = client_for(patient).get(DOCTORS)
    assert response.status_code == 200
    ids = [d["id"] for d in response.json()["results"]]
    assert ids == [shown.pk]
    first = response.json()["results"][0]
    assert set(first) == {
        "id",
        "display_name",
        "specialty",
        "jurisdiction",
        "bio",
        "consultation_fee",
        "currency",
        "languages",
        "rating_average",  # the ratings app's figures (ratings/tests/test_ratings.py)
        "rating_count",
    }
    assert (first["rating_average"], first["rating_count"]) == (None, 0)
    assert shown.phone_number not in json.dumps(response.json())
    assert shown.doctor_profile.licence_number not in json.dumps(response.json())


def test_doctors_search(client_for):
    heart = verified_doctor("Dr Alice Heart", slug="cardiology", specialty_name="Cardiology")
    skin = verified_doctor("Dr Bob Skin", slug="dermatology", specialty_name="Dermatology")
    kids = verified_doctor("Dr Carol Young", slug="paediatrics", specialty_name="Paediatrics")
    client = client_for(PatientFactory())

    def ids(**params: str) -> list[int]:
        response = client.get(DOCTORS, params)
        assert response.status_code == 200, response.content
        return [d["id"] for d in response.json()["results"]]

    assert ids(specialty="dermatology") == [skin.pk]
    assert ids(specialty="no-such-thing") == []
    assert ids(q="alice") == [heart.pk]
    assert ids(q="YOUNG") == [kids.pk]
    assert ids(q="paediatr") == [kids.pk]  # the specialty's name matches too
    assert ids(q="dr") == sorted([heart.pk, skin.pk, kids.pk])
    assert ids(q="bob", specialty="cardiology") == []
    assert ids(q="bob", specialty="dermatology") == [skin.pk]


def test_doctors_cursor_pagination(client_for):
    doctors = [verified_doctor(f"Dr Number {i}") for i in range(5)]
    client = client_for(PatientFactory())
    seen: list[int] = []
    url: str | None = f"{DOCTORS}?limit=2"
    pages = 0
    while url:
        body = client.get(url).json()
        assert len(body["results"]) <= 2
        assert "offset" not in (body["next"] or "")
        seen += [d["id"] for d in body["results"]]
        url = body["next"]
        pages += 1
    assert pages == 3
    assert seen == sorted(d.pk for d in doctors)
    assert client.get(f"{DOCTORS}?limit=1000").status_code == 200


@pytest.mark.parametrize("count", [1, 12])
def test_doctors_query_count_does_not_grow(client_for, django_assert_num_queries, count):
    for i in range(count):
        verified_doctor(f"Dr Q {i}")
    client = client_for(PatientFactory())
    # 1: the caller (token uid -> user with profiles), 1: the page of doctors with user and specialty.
    with django_assert_num_queries(2):
        response = client.get(DOCTORS, {"q": "dr", "specialty": "cardiology"})
    assert len(response.json()["results"]) == count


def test_doctor_detail(client_for):
    doctor = verified_doctor("Dr Detail")
    pending = doctor_with_status(DoctorProfile.Verification.PENDING)
    rejected = doctor_with_status(DoctorProfile.Verification.REJECTED)
    patient = PatientFactory()
    client = client_for(patient)
    body = client.get(f"{DOCTORS}/{doctor.pk}").json()
    assert body["id"] == doctor.pk
    assert body["display_name"] == "Dr Detail"
    assert "phone_number" not in body
    assert "licence_number" not in body
    for hidden in (pending, rejected, patient):
        assert_error(client.get(f"{DOCTORS}/{hidden.pk}"), 404, "doctor_not_found")
    assert_error(client.get(f"{DOCTORS}/999999999"), 404, "doctor_not_found")


# --- devices -------------------------------------------------------------------------------
def test_device_register_and_reregister(client_for):
    patient = PatientFactory()
    client = client_for(patient)
    created = client.post(
        DEVICES,
        {"fcm_token": "tok-1", "installation_id": "fid-a", "platform": "android", "app_version": "1.0"},
        format="json",
    )
    assert created.status_code == 201, created.content
    device_id = created.json()["id"]
    assert "fcm_token" not in created.json()

    # Same installation id, a rotated FCM token: the same row, updated.
    again = client.post(
        DEVICES, {"fcm_token": "tok-2", "installation_id": "fid-a", "app_version": "1.1"}, format="json"
    )
    assert again.status_code == 200
    assert again.json()["id"] == device_id
    # Same FCM token, no installation id: still the same row.
    same_token = client.post(DEVICES, {"fcm_token": "tok-2", "platform": "android"}, format="json")
    assert same_token.status_code == 200
    assert same_token.json()["id"] == device_id

    device = Device.objects.get(user=patient)
    assert (device.pk, device.fcm_token, device.installation_id) == (device_id, "tok-2", "fid-a")
    assert Device.objects.filter(user=patient).count() == 1

    second = client.post(DEVICES, {"fcm_token": "tok-3", "platform": "ios"}, format="json")
    assert second.status_code == 201
    assert Device.objects.filter(user=patient).count() == 2


def test_device_validation(client_for):
    client = client_for(PatientFactory())
    assert_error(
        client.post(DEVICES, {"platform": "android"}, format="json"), 400, "device_identifier_required"
    )
    assert_error(
        client.post(DEVICES, {"fcm_token": "t", "platform": "symbian"}, format="json"), 400, "invalid"
    )
    error = assert_error(client.post(DEVICES, {"fcm_token": "t", "user": 1}, format="json"), 400, "invalid")
    assert error["fields"]["user"][0]["code"] == "unknown_field"
    assert not Device.objects.exists()


def keyed_device_with_ciphertext(user: User, **fields: Any) -> Device:
    """A device of ``user`` with published keys and one stored ciphertext addressed to it."""
    from accounts.tests.signal_keys import SignalIdentity
    from messaging import services as messaging
    from messaging.models import MessageCiphertext

    device: Device = DeviceFactory.create(user=user, **fields)
    keys.device_keys_put(user=user, **SignalIdentity().upload(device.pk, one_time=[1, 2], kyber=[1, 2]))
    sender: User = DoctorFactory.create()
    sender_device: Device = DeviceFactory.create(user=sender)
    conversation, _ = messaging.conversation_open_direct(user=user, peer_id=sender.pk, e2ee=True)
    messaging.message_send(
        sender=sender,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        ciphertexts={
            str(keyed): base64.b64encode(b"sealed").decode()
            for keyed in DeviceIdentity.objects.filter(device__user=user).values_list("device_id", flat=True)
        },
        sender_device_id=sender_device.pk,
    )
    assert MessageCiphertext.objects.filter(device=device).count() == 1
    return device


def device_state(device: Device) -> tuple[Any, ...]:
    """Everything of a device another account's claim must leave alone (but its push address)."""
    from messaging.models import MessageCiphertext

    device.refresh_from_db()
    return (
        device.user_id,
        device.installation_id,
        bytes(device.identity.identity_key),
        device.one_time_prekeys.count(),
        device.kyber_prekeys.count(),
        MessageCiphertext.objects.filter(device=device).count(),
    )


def moves(victim_device: Device) -> list[tuple[Any, ...]]:
    return list(
        AuditEntry.objects.filter(action=audit_actions.DEVICE_SUPERSEDED, object_id=str(victim_device.pk))
        .order_by("pk")
        .values_list("actor_id", "object_type", "code", "outcome")
    )


def test_another_accounts_installation_id_or_token_never_deletes_or_changes_their_device(client_for):
    victim, attacker = PatientFactory(), PatientFactory()
    target = keyed_device_with_ciphertext(victim, installation_id="fid-victim", fcm_token="tok-victim")
    token_only = keyed_device_with_ciphertext(victim, installation_id=None, fcm_token="tok-victim-2")
    before = {d.pk: device_state(d) for d in (target, token_only)}

    claims = [
        {"installation_id": "fid-victim"},
        {"fcm_token": "tok-victim"},
        {"installation_id": "fid-victim", "fcm_token": "tok-victim"},
        {"fcm_token": "tok-victim-2", "installation_id": "fid-attacker"},
    ]
    for claim in claims:
        response = client_for(attacker).post(DEVICES, {"platform": "android", **claim}, format="json")
        assert response.status_code in (200, 201), response.content
        assert response.json()["id"] not in before

    # The victim's devices, keys and ciphertexts are all still there, unchanged...
    assert {d.pk: device_state(d) for d in (target, token_only)} == before
    # ...only their push addresses left them (that phone now belongs to the attacker's account).
    target.refresh_from_db()
    token_only.refresh_from_db()
    assert (target.fcm_token, token_only.fcm_token) == (None, None)
    assert target.superseded_at is not None
    assert token_only.superseded_at is not None
    # Each move is in the audit log: who took it, which device lost it, what moved.
    assert moves(target) == [(attacker.pk, "device", "installation_id", "ok")]  # its token went too
    assert moves(token_only) == [(attacker.pk, "device", "fcm_token", "ok")]


def test_a_shared_phone_signs_in_as_a_second_user_and_back(client_for):
    first, second = PatientFactory(), PatientFactory()
    phone = {"platform": "android", "installation_id": "fid-shared", "fcm_token": "tok-shared"}
    mine = client_for(first).post(DEVICES, phone, format="json")
    assert mine.status_code == 201
    first_device = Device.objects.get(pk=mine.json()["id"])
    theirs = client_for(second).post(DEVICES, phone, format="json")
    assert theirs.status_code == 201
    second_device = Device.objects.get(pk=theirs.json()["id"])

    # The installation id is scoped per account: both rows exist; only the latest gets pushes.
    first_device.refresh_from_db()
    assert (first_device.installation_id, first_device.fcm_token) == ("fid-shared", None)
    assert first_device.superseded_at is not None
    assert (second_device.fcm_token, second_device.superseded_at) == ("tok-shared", None)
    assert moves(first_device) == [(second.pk, "device", "installation_id", "ok")]

    # The first user signs in again on that phone: their own row comes back, the other pauses.
    again = client_for(first).post(DEVICES, phone, format="json")
    assert (again.status_code, again.json()["id"]) == (200, first_device.pk)
    first_device.refresh_from_db()
    second_device.refresh_from_db()
    assert (first_device.fcm_token, first_device.superseded_at) == ("tok-shared", None)
    assert (second_device.fcm_token, second_device.superseded_at is not None) == (None, True)
    assert moves(second_device) == [(first.pk, "device", "installation_id", "ok")]
    assert Device.objects.filter(installation_id="fid-shared").count() == 2


def test_delete_device(client_for):
    mine = DeviceFactory(fcm_token="mine")
    theirs = DeviceFactory(fcm_token="theirs")
    client = client_for(mine.user)
    assert_error(client.delete(f"{DEVICES}/{theirs.pk}"), 404, "device_not_found")
    theirs.refresh_from_db()
    assert (theirs.user_id, theirs.fcm_token) != (mine.user_id, None)
    assert theirs.fcm_token == "theirs"
    assert client.delete(f"{DEVICES}/{mine.pk}").status_code == 204
    assert not Device.objects.filter(pk=mine.pk).exists()
    assert_error(client.delete(f"{DEVICES}/{mine.pk}"), 404, "device_not_found")
    assert Device.objects.filter(pk=theirs.pk).exists()


# --- export --------------------------------------------------------------------------------
def test_export_contains_my_data_and_nothing_of_others(client_for):
    me = PatientFactory(display_name="Export Me")
    DeviceFactory(user=me, installation_id="fid-mine", app_version="2.0")
    other = DoctorFactory(display_name="Somebody Else")
    DeviceFactory(user=other, installation_id="fid-theirs", fcm_token="their-token")
    response = client_for(me).get(EXPORT)
    assert response.status_code == 200
    data = response.json()
    assert data["format"] == "healthchat-export/1"
    assert data["user"]["id"] == me.pk
    assert data["user"]["phone_number"] == me.phone_number
    assert data["user"]["display_name"] == "Export Me"
    assert data["user"]["patient_profile"]["sex"] == "undisclosed"
    assert [d["installation_id"] for d in data["devices"]] == ["fid-mine"]
    dumped = json.dumps(data)
    for secret in (other.phone_number, "Somebody Else", "fid-theirs", "their-token", other.firebase_uid):
        assert secret not in dumped


def test_export_of_a_doctor(client_for):
    doctor = DoctorFactory()
    data = client_for(doctor).get(EXPORT).json()
    assert data["user"]["doctor_profile"]["licence_number"] == doctor.doctor_profile.licence_number
    assert data["devices"] == []


# --- delete me -----------------------------------------------------------------------------
def test_delete_me_erases_personal_data(
    client_for, make_token, bearer, firebase_admin_api, django_capture_on_commit_callbacks
):
    doctor = DoctorFactory(display_name="Dr To Delete")
    uid, phone = doctor.firebase_uid, doctor.phone_number
    device = DeviceFactory(user=doctor, fcm_token="push-me")
    token = make_token(uid, phone)
    client = bearer(token)

    async def delete_while_listening() -> tuple[Any, dict[str, Any]]:
        """A socket's view: subscribed to the user's group while the account is deleted."""
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(f"user.{doctor.pk}", channel)
        try:

            def delete() -> Any:
                with django_capture_on_commit_callbacks(execute=True):
                    return client.delete(ME)

            response = await sync_to_async(delete)()
            event = await asyncio.wait_for(layer.receive(channel), timeout=5)
        finally:
            await layer.group_discard(f"user.{doctor.pk}", channel)
        return response, event

    response, event = async_to_sync(delete_while_listening)()
    assert response.status_code == 204, response.content
    assert event["type"] == "session.terminate"

    row = User.objects.get(pk=doctor.pk)
    assert row.phone_number is None
    assert row.firebase_uid is None
    assert row.display_name == ""
    assert row.is_active is False
    assert row.deleted_at is not None
    assert not row.has_usable_password()
    assert not DoctorProfile.objects.filter(user_id=doctor.pk).exists()
    assert not PatientProfile.objects.filter(user_id=doctor.pk).exists()
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not Device.objects.filter(fcm_token="push-me").exists()
    assert not User.objects.filter(phone_number=phone).exists()

    # Firebase was told: tokens revoked, user deleted (the Identity Toolkit admin API).
    endpoints = [
        (url.rsplit("/", 1)[-1].split("?")[0], body.get("localId")) for url, body in firebase_admin_api
    ]
    assert ("accounts:update", uid) in endpoints
    assert ("accounts:delete", uid) in endpoints
    assert any("validSince" in body for url, body in firebase_admin_api if url.endswith("accounts:update"))

    # The old token no longer reaches the account.
    assert_error(client.get(ME), 403, "not_registered")
    assert_error(client.get(EXPORT), 403, "not_registered")
    assert_error(client.delete(ME), 403, "not_registered")
    # The phone number is free for a new account.
    fresh = bearer(make_token(phone_number=phone))
    assert fresh.post(REGISTER, {"role": "patient", "display_name": "New"}).status_code == 201


def test_delete_me_when_firebase_user_is_already_gone(client_for, firebase_certs):
    """Deletion is idempotent towards Firebase: a missing user there is not an error."""
    firebase_certs.add(
        responses.POST,
        re.compile(r"https://identitytoolkit\.googleapis\.com/.*"),
        status=400,
        json={"error": {"code": 400, "message": "USER_NOT_FOUND"}},
    )
    patient = PatientFactory()
    assert client_for(patient).delete(ME).status_code == 204
    assert User.objects.get(pk=patient.pk).deleted_at is not None


def test_delete_me_when_firebase_is_down_changes_nothing(client_for, firebase_certs):
    firebase_certs.add(
        responses.POST,
        re.compile(r"https://identitytoolkit\.googleapis\.com/.*"),
        status=500,
        json={"error": {"code": 500, "message": "INTERNAL_ERROR"}},
    )
    patient = PatientFactory()
    assert_error(client_for(patient).delete(ME), 503, "auth_unavailable")
    row = User.objects.get(pk=patient.pk)
    assert (row.deleted_at, row.phone_number, row.is_active) == (None, patient.phone_number, True)
    assert PatientProfile.objects.filter(user=patient).exists()


# --- throttling ----------------------------------------------------------------------------
def test_register_throttle_is_per_firebase_account(make_token, bearer, settings):
    """Registrants have no user id: the limit is per Firebase uid, not one bucket for everyone."""
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["register"].split("/")[0])
    for _ in range(limit + 2):
        client = bearer(make_token(phone_number=unique_phone()))
        assert client.post(REGISTER, {"role": "patient", "display_name": "Ann"}).status_code == 201
    one = bearer(make_token(phone_number=unique_phone()))
    statuses = [
        one.post(REGISTER, {"role": "patient", "display_name": "Ann"}).status_code for _ in range(limit + 1)
    ]
    assert statuses[:2] == [201, 200]
    assert statuses[-1] == 429
