"""The clinic staff's admin: users by phone number, doctor verification, account deletion."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Device, DoctorProfile, PatientProfile, User
from accounts.tests.factories import (
    DeviceFactory,
    DoctorProfileFactory,
    PatientFactory,
    UserFactory,
)
from conftest import unique_phone

pytestmark = pytest.mark.django_db

USERS = reverse("admin:accounts_user_changelist")
DOCTORS = reverse("admin:accounts_doctorprofile_changelist")


@pytest.fixture
def staff(django_user_model) -> User:
    return django_user_model.objects.create_superuser(unique_phone(), "correct horse battery")


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def pending_doctor(name: str = "Dr Pending") -> User:
    doctor = UserFactory.create(role=User.Role.DOCTOR, display_name=name)
    DoctorProfileFactory(user=doctor, verification_status="pending", verified_at=None)
    return doctor


def test_staff_can_log_in_with_phone_number_and_password(staff):
    client = Client()
    response = client.post(
        reverse("admin:login"),
        {"username": staff.phone_number, "password": "correct horse battery", "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_user_changelist_searches_by_phone_number(staff_client):
    wanted = PatientFactory(display_name="Wanted Person")
    other = PatientFactory(display_name="Other Person")
    response = staff_client.get(USERS, {"q": wanted.phone_number})
    assert response.status_code == 200
    shown = {user.pk for user in response.context["cl"].result_list}
    assert shown == {wanted.pk}
    assert other.pk not in shown
    assert b"Wanted Person" in response.content
    # Part of a number works too.
    partial = staff_client.get(USERS, {"q": wanted.phone_number[-6:]})
    assert wanted.pk in {user.pk for user in partial.context["cl"].result_list}


def test_user_change_and_add_pages_render(staff_client):
    doctor = pending_doctor()
    DeviceFactory(user=doctor)
    patient = PatientFactory()
    for user in (doctor, patient):
        page = staff_client.get(reverse("admin:accounts_user_change", args=[user.pk]))
        assert page.status_code == 200
        assert user.phone_number.encode() in page.content
    assert staff_client.get(reverse("admin:accounts_user_add")).status_code == 200


def test_staff_can_add_another_staff_account(staff_client):
    phone = unique_phone()
    url = reverse("admin:accounts_user_add")
    data = {
        "phone_number": phone,
        "display_name": "Nurse Joy",
        "password1": "a long enough passphrase 42",
        "password2": "a long enough passphrase 42",
        "usable_password": "true",
    }
    # The inline formsets' management forms, as the browser sends them (no rows).
    for inline in staff_client.get(url).context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({management.add_prefix(name): value for name, value in management.initial.items()})
        data[management.add_prefix("TOTAL_FORMS")] = 0
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.content[:2000]
    created = User.objects.get(phone_number=phone)
    assert created.check_password("a long enough passphrase 42")
    assert created.display_name == "Nurse Joy"


def test_doctors_awaiting_verification_filter(staff_client):
    waiting = pending_doctor("Dr Waiting")
    done = DoctorProfileFactory().user
    response = staff_client.get(DOCTORS, {"verification_status__exact": "pending"})
    assert response.status_code == 200
    shown = {profile.pk for profile in response.context["cl"].result_list}
    assert shown == {waiting.pk}
    assert done.pk not in shown


@pytest.mark.parametrize(("action", "status"), [("approve", "verified"), ("reject", "rejected")])
def test_doctor_actions_record_who_and_when(staff_client, staff, action, status):
    first, second = pending_doctor("Dr One"), pending_doctor("Dr Two")
    untouched = pending_doctor("Dr Three")
    response = staff_client.post(
        DOCTORS, {"action": action, "_selected_action": [first.pk, second.pk]}, follow=True
    )
    assert response.status_code == 200
    assert f"2 doctor(s) marked {status}" in response.content.decode()
    for doctor in (first, second):
        profile = DoctorProfile.objects.get(user=doctor)
        assert profile.verification_status == status
        assert profile.verified_by == staff
        assert profile.verified_at is not None
    left = DoctorProfile.objects.get(user=untouched)
    assert (left.verification_status, left.verified_by, left.verified_at) == ("pending", None, None)


def test_verification_fields_cannot_be_edited_directly(staff_client):
    doctor = pending_doctor()
    page = staff_client.get(reverse("admin:accounts_doctorprofile_change", args=[doctor.pk]))
    assert page.status_code == 200
    form = page.context["adminform"].form
    for name in ("verification_status", "verified_by", "verified_at"):
        assert name not in form.fields


def test_delete_account_action_erases(staff_client, staff, firebase_admin_api):
    patient = PatientFactory(display_name="Erase Me")
    phone, uid = patient.phone_number, patient.firebase_uid
    DeviceFactory(user=patient)
    bystander = PatientFactory()
    response = staff_client.post(
        USERS, {"action": "delete_accounts", "_selected_action": [patient.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Deleted 1 account(s)" in response.content.decode()
    row = User.objects.get(pk=patient.pk)
    assert (row.phone_number, row.firebase_uid, row.display_name, row.is_active) == (None, None, "", False)
    assert row.deleted_at is not None
    assert not PatientProfile.objects.filter(user_id=patient.pk).exists()
    assert not Device.objects.filter(user_id=patient.pk).exists()
    assert not User.objects.filter(phone_number=phone).exists()
    assert {body.get("localId") for _, body in firebase_admin_api} == {uid}
    bystander.refresh_from_db()
    assert bystander.deleted_at is None
    assert PatientProfile.objects.filter(user=bystander).exists()


def test_rows_cannot_be_deleted_bypassing_erasure(staff_client):
    patient = PatientFactory()
    page = staff_client.get(USERS)
    assert "delete_selected" not in page.content.decode()
    assert staff_client.get(reverse("admin:accounts_user_delete", args=[patient.pk])).status_code == 403
    assert User.objects.filter(pk=patient.pk).exists()


def test_fcm_tokens_are_not_shown(staff_client):
    device = DeviceFactory(fcm_token="secret-push-token-123")
    page = staff_client.get(reverse("admin:accounts_device_change", args=[device.pk]))
    assert page.status_code == 200
    assert b"secret-push-token-123" not in page.content
    listing = staff_client.get(reverse("admin:accounts_device_changelist"), {"q": device.user.phone_number})
    assert device.pk in {d.pk for d in listing.context["cl"].result_list}
    assert b"secret-push-token-123" not in listing.content


def test_non_staff_cannot_reach_admin():
    patient = PatientFactory()
    doctor = pending_doctor()
    client = Client()
    for url in ("/admin/", USERS, DOCTORS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    client.force_login(patient)
    for url in ("/admin/", USERS, DOCTORS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    # ...and cannot act: the approve action is refused and nothing changes.
    client.post(DOCTORS, {"action": "approve", "_selected_action": [doctor.pk]})
    assert DoctorProfile.objects.get(user=doctor).verification_status == "pending"


def test_staff_without_permissions_cannot_verify(django_user_model):
    """is_staff alone is not enough: verifying needs the change permission on doctor profiles."""
    clerk = django_user_model.objects.create_user(unique_phone(), "pw", is_staff=True, display_name="Clerk")
    doctor = pending_doctor()
    client = Client()
    client.force_login(clerk)
    assert client.get(DOCTORS).status_code == 403
    client.post(DOCTORS, {"action": "approve", "_selected_action": [doctor.pk]})
    assert DoctorProfile.objects.get(user=doctor).verification_status == "pending"
