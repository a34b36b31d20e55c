"""Export and erasure: the export carries the user's notes and prescriptions; erasure deletes
drafts but keeps signed notes, amendments and prescriptions (the law requires them),
pseudonymised: the erased account's row names nobody."""

from __future__ import annotations

import pytest

from accounts.models import User
from records import selectors, services
from records.models import NoteAmendment, Prescription, VisitNote

from .conftest import VALID_RX, open_consultation

pytestmark = pytest.mark.django_db


@pytest.fixture
def record(doctor, patient, consultation):
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "rest"})
    services.note_sign(doctor=doctor, note_id=note.pk, share=True)
    services.amendment_add(doctor=doctor, note_id=note.pk, reason="r", text="and fluids")
    p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    return note, p


def test_export_has_the_record(as_user, doctor, patient, record) -> None:
    note, p = record
    mine = as_user(patient).get("/api/v1/me/export")
    assert mine.status_code == 200, mine.content
    section = mine.json()["records"]
    assert [n["id"] for n in section["notes_received"]] == [note.pk]
    assert section["notes_received"][0]["amendments"][0]["text"] == "and fluids"
    assert section["notes_written"] == []
    assert [(x["id"], x["role"], x["number"]) for x in section["prescriptions"]] == [
        (p.pk, "patient", p.number)
    ]

    theirs = as_user(doctor).get("/api/v1/me/export").json()["records"]
    assert [n["id"] for n in theirs["notes_written"]] == [note.pk]
    assert [x["role"] for x in theirs["prescriptions"]] == ["doctor"]


def test_patient_export_leaves_out_unshared_notes(as_user, doctor, patient) -> None:
    consultation = open_consultation(patient, doctor, "accepted")
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "x"})
    services.note_sign(doctor=doctor, note_id=note.pk)
    assert as_user(patient).get("/api/v1/me/export").json()["records"]["notes_received"] == []


def test_erasure_keeps_signed_records_pseudonymised(
    as_user, firebase_admin_api, doctor, patient, record
) -> None:
    note, p = record
    assert as_user(patient).delete("/api/v1/me").status_code == 204
    erased = User.objects.get(pk=patient.pk)
    assert erased.deleted_at is not None
    assert erased.display_name == ""
    assert erased.phone_number is None

    assert VisitNote.objects.filter(pk=note.pk, state="signed").exists()
    assert NoteAmendment.objects.filter(note=note).count() == 1
    assert Prescription.objects.filter(pk=p.pk, status="issued").exists()
    doc = selectors.prescription_document_data(Prescription.objects.get(pk=p.pk))
    assert (doc.patient_name, doc.patient_date_of_birth) == (selectors.ERASED_NAME, None)
    # The prescription still verifies (a pharmacist holds the paper).
    from rest_framework.test import APIClient

    check = APIClient(REMOTE_ADDR="198.51.100.81").get(f"/api/v1/prescriptions/verify/{p.verification_code}")
    assert check.json()["status"] == "valid"


def test_erasure_deletes_drafts(as_user, firebase_admin_api, doctor, patient, consultation) -> None:
    draft = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "draft"})
    assert as_user(doctor).delete("/api/v1/me").status_code == 204
    assert not VisitNote.objects.filter(pk=draft.pk).exists()
