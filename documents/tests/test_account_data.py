"""Export lists the documents; erasure removes the patient's generated files and rows, except
prescriptions (kept for the legal retention of prescriptions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts import services as account_services
from accounts.actors import Operator
from documents import services
from documents.models import Document
from documents.tests.helpers import clinical_record, paid, pdf_text, people, stored

pytestmark = pytest.mark.django_db


def test_the_export_lists_the_documents_of_the_patient_and_of_the_doctor(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
        services.document_request(
            user=patient, kind="consultation_summary", consultation_id=consultation.pk, include_chat=True
        )
    receipt = Document.objects.get(kind="receipt")
    chat_summary = Document.objects.get(kind="consultation_summary")

    exported = client_for(patient).get("/api/v1/me/export").json()["documents"]
    assert {d["id"] for d in exported} == {receipt.pk, chat_summary.pk}
    listed = next(d for d in exported if d["id"] == receipt.pk)
    assert (listed["kind"], listed["status"], listed["sha256"]) == ("receipt", "ready", receipt.sha256)
    assert listed["payment"]["amount"] == 3000
    # The doctor's export: the receipt, not the patient's copy with the chat.
    assert {d["id"] for d in client_for(doctor).get("/api/v1/me/export").json()["documents"]} == {receipt.pk}


def test_erasure_removes_the_patients_generated_files_but_keeps_prescriptions(
    media: Path, firebase_admin_api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    _note, prescription = clinical_record(consultation)
    with django_capture_on_commit_callbacks(execute=True):
        services.document_request(user=patient, kind="consultation_summary", consultation_id=consultation.pk)
        services.document_request(user=patient, kind="prescription", prescription_id=prescription.pk)
    files = {d.kind: Path(d.file.path) for d in Document.objects.all()}
    assert set(files) == {"receipt", "consultation_summary", "prescription"}
    assert all(path.exists() for path in files.values())
    assert "Name Ada Lovelace" in pdf_text(files["prescription"].read_bytes())

    with django_capture_on_commit_callbacks(execute=True):
        account_services.user_delete(user=patient, actor=Operator(command="test"))

    kept = Document.objects.get()
    assert (kept.kind, kept.status, kept.prescription_id) == ("prescription", "ready", prescription.pk)
    assert not files["receipt"].exists()
    assert not files["consultation_summary"].exists()
    # Rendered again from the pseudonymised record: no stored file keeps the name.
    assert not files["prescription"].exists()
    text = pdf_text(stored(kept))
    assert "Name (erased account)" in text
    assert "Ada Lovelace" not in text
    assert f"Prescription number {prescription.number}" in text
    assert [p.name for p in (media / "documents" / str(patient.pk)).iterdir()] == [
        Path(str(kept.file.name)).name
    ]


def test_erasing_the_doctor_keeps_the_patients_documents_rendered_without_the_name(
    media: Path, firebase_admin_api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    receipt = Document.objects.get()
    assert "Grace Hopper" in pdf_text(stored(receipt))
    with django_capture_on_commit_callbacks(execute=True):
        account_services.user_delete(user=doctor, actor=Operator(command="test"))
    receipt.refresh_from_db()
    assert receipt.status == "ready"
    text = pdf_text(stored(receipt))
    assert "Grace Hopper" not in text
    assert "Doctor (erased account)" in text
    assert consultation.pk == receipt.consultation_id


def test_a_failed_erasure_keeps_the_files(media: Path, django_capture_on_commit_callbacks: Any) -> None:
    from django.db import transaction

    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        paid(patient, doctor)
    path = Path(Document.objects.get().file.path)

    def failing_erasure() -> None:
        with transaction.atomic():
            services.erase_user_documents(patient)
            raise RuntimeError("a later erasure step failed")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        failing_erasure()
    assert callbacks == []  # the file deletion was never scheduled to run
    assert path.exists()
    assert Document.objects.count() == 1
