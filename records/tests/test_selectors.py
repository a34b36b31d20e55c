"""The plain data the PDFs are built from (``prescription_document_data``, ``prescriptions_for``,
``shared_notes_for``): what each holds, that drafts and unshared notes never appear, and how
many queries they cost."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from accounts.models import PatientProfile
from records import selectors, services

from .conftest import VALID_RX

pytestmark = pytest.mark.django_db


def test_prescription_document_data(doctor, patient, consultation, django_assert_num_queries) -> None:
    PatientProfile.objects.filter(user=patient).update(date_of_birth=dt.date(1980, 4, 2))
    p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    with django_assert_num_queries(3):
        doc = selectors.prescription_document_data(p)
    assert dataclasses.is_dataclass(doc)
    assert (doc.number, doc.verification_code, doc.status) == (p.number, p.verification_code, "issued")
    assert doc.verify_path == f"/api/v1/prescriptions/verify/{p.verification_code}"
    assert (doc.doctor_name, doc.doctor_licence_number, doc.jurisdiction) == (
        "Dr Rita Record",
        "GMC-7654321",
        "GB",
    )
    assert doc.doctor_specialty == "General practice"
    assert (doc.patient_name, doc.patient_date_of_birth) == ("Paula Patient", dt.date(1980, 4, 2))
    assert (doc.medication_name, doc.dose, doc.quantity, doc.repeats) == ("Amoxicillin", "1 capsule", 15, 0)
    assert doc.issued_at == p.issued_at
    assert doc.cancelled_at is None

    services.prescription_cancel(doctor=doctor, prescription_id=p.pk, reason="duplicate")
    docs = selectors.prescriptions_for(consultation)
    assert [(d.id, d.status, d.cancel_reason) for d in docs] == [(p.pk, "cancelled", "duplicate")]


def test_shared_notes_for_shows_only_signed_and_shared(doctor, patient, consultation) -> None:
    note = services.note_create(
        doctor=doctor,
        consultation_id=consultation.pk,
        data={"assessment": "asthma", "codes": [{"system": "ICD-10", "code": "J45.9"}]},
    )
    assert selectors.shared_notes_for(consultation) == []  # a draft
    services.note_sign(doctor=doctor, note_id=note.pk)
    assert selectors.shared_notes_for(consultation) == []  # signed, not shared
    services.note_share(doctor=doctor, note_id=note.pk)
    services.amendment_add(doctor=doctor, note_id=note.pk, reason="dose", text="inhaler 2 puffs")
    [shared] = selectors.shared_notes_for(consultation)
    assert (shared.id, shared.assessment, shared.doctor_name) == (note.pk, "asthma", "Dr Rita Record")
    assert shared.codes == (selectors.NoteCode("ICD-10", "J45.9", ""),)
    assert [(a.reason, a.text, a.author_name) for a in shared.amendments] == [
        ("dose", "inhaler 2 puffs", "Dr Rita Record")
    ]
    assert shared.signed_at is not None
    assert shared.shared_at is not None
