"""The database itself rejects invalid rows, even when Python validation is bypassed."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts.models import Device, DoctorProfile, PatientProfile, User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory, SpecialtyFactory

pytestmark = pytest.mark.django_db


def rejected(fn) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def raw(sql: str, params: list) -> None:
    """Plain SQL, foreign keys checked now (Django declares them DEFERRABLE INITIALLY DEFERRED)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql, params)


def test_user_phone_must_be_e164():
    user = PatientFactory()
    rejected(lambda: User.objects.filter(pk=user.pk).update(phone_number="07700 900123"))
    rejected(lambda: raw("UPDATE accounts_user SET phone_number = %s WHERE id = %s", ["+0123", user.pk]))


def test_user_phone_and_uid_unique():
    a = PatientFactory()
    b = PatientFactory()
    rejected(lambda: User.objects.filter(pk=b.pk).update(phone_number=a.phone_number))
    rejected(lambda: User.objects.filter(pk=b.pk).update(firebase_uid=a.firebase_uid))


def test_user_role_checked():
    user = PatientFactory()
    rejected(lambda: User.objects.filter(pk=user.pk).update(role="superdoctor"))


def test_blank_display_name_and_uid_rejected():
    user = PatientFactory()
    rejected(lambda: User.objects.filter(pk=user.pk).update(display_name=""))
    rejected(lambda: User.objects.filter(pk=user.pk).update(firebase_uid=""))


def test_deleted_user_keeps_no_identity():
    user = PatientFactory()
    rejected(lambda: User.objects.filter(pk=user.pk).update(deleted_at=timezone.now()))
    User.objects.filter(pk=user.pk).update(
        deleted_at=timezone.now(), phone_number=None, firebase_uid=None, is_active=False, display_name=""
    )


def test_patient_profile_rules():
    patient = PatientFactory()
    rejected(lambda: PatientProfile.objects.filter(user=patient).update(sex="unknown-value"))
    rejected(lambda: PatientProfile.objects.filter(user=patient).update(emergency_contact_phone="12345"))
    rejected(lambda: PatientProfile.objects.create(user=patient))  # one profile per user


def test_doctor_profile_rules():
    doctor = DoctorFactory()
    qs = DoctorProfile.objects.filter(user=doctor)
    rejected(lambda: qs.update(consultation_fee=-1))
    rejected(lambda: qs.update(currency="usd"))
    rejected(lambda: qs.update(verification_status="maybe"))
    rejected(lambda: qs.update(verified_at=None))  # a decision needs its time
    rejected(lambda: qs.update(licence_number=""))
    other = DoctorFactory()
    profile = other.doctor_profile
    rejected(
        lambda: DoctorProfile.objects.filter(user=doctor).update(
            licence_number=profile.licence_number, jurisdiction=profile.jurisdiction
        )
    )


def test_specialty_protected_while_doctors_use_it():
    specialty = SpecialtyFactory(slug="rare-specialty", name="Rare")
    DoctorFactory(profile__specialty=specialty)
    with pytest.raises(ProtectedError), transaction.atomic():
        specialty.delete()
    rejected(lambda: raw("DELETE FROM accounts_specialty WHERE id = %s", [specialty.pk]))


def test_device_rules():
    device = DeviceFactory(fcm_token="token-1")
    rejected(lambda: Device.objects.filter(pk=device.pk).update(platform="symbian"))
    rejected(lambda: Device.objects.filter(pk=device.pk).update(installation_id=None, fcm_token=None))
    rejected(lambda: DeviceFactory(fcm_token="token-1"))
    rejected(lambda: Device.objects.create(user=device.user, installation_id=device.installation_id))


def test_foreign_keys_enforced_by_database():
    rejected(
        lambda: raw(
            "INSERT INTO accounts_device (user_id, installation_id, platform, app_version, created_at, updated_at) "
            "VALUES (%s, 'x', 'android', '', now(), now())",
            [987654321],
        )
    )
