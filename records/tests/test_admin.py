"""Staff screens of the record: visible only with the model's view permission, read-only for
everyone (superusers too), every page shown audited, no verification code shown."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import User
from audit.models import AuditEntry
from conftest import unique_phone
from records import services
from records.models import Prescription

from .conftest import VALID_RX

pytestmark = pytest.mark.django_db


def staff(*codenames: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, is_superuser=superuser, display_name="Clerk"
    )
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="records", codename=codename)
        )
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


@pytest.fixture
def record(doctor, consultation):
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "rest"})
    services.note_sign(doctor=doctor, note_id=note.pk)
    p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    return note, p


def test_view_permission_needed(record) -> None:
    note, p = record
    nobody = staff()
    assert nobody.get("/admin/records/visitnote/").status_code == 403
    assert nobody.get(f"/admin/records/prescription/{p.pk}/change/").status_code == 403
    viewer = staff("view_visitnote")
    assert viewer.get("/admin/records/visitnote/").status_code == 200
    assert viewer.get(f"/admin/records/visitnote/{note.pk}/change/").status_code == 200
    assert viewer.get("/admin/records/prescription/").status_code == 403


def test_read_only_for_superusers_and_audited(record) -> None:
    note, p = record
    admin = staff(superuser=True)
    before = AuditEntry.objects.count()
    page = admin.get(f"/admin/records/prescription/{p.pk}/change/")
    assert page.status_code == 200
    assert p.verification_code not in page.content.decode()
    assert "Amoxicillin" in page.content.decode()
    assert admin.get(f"/admin/records/visitnote/{note.pk}/change/").status_code == 200
    rows = list(AuditEntry.objects.order_by("id")[before:].values_list("action", "object_type", "object_id"))
    assert rows == [
        ("admin.view", "records.prescription", str(p.pk)),
        ("admin.view", "records.visitnote", str(note.pk)),
    ]
    # No add, change or delete, whoever asks.
    assert admin.get("/admin/records/prescription/add/").status_code == 403
    assert admin.get(f"/admin/records/visitnote/{note.pk}/delete/").status_code == 403
    posted = admin.post(f"/admin/records/prescription/{p.pk}/change/", {"dose": "10 capsules"})
    assert posted.status_code == 403
    assert Prescription.objects.get(pk=p.pk).dose == "1 capsule"
