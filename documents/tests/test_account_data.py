"""Export lists the documents; erasure removes the patient's generated files and rows, except
prescriptions (kept for the legal retention of prescriptions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from accounts import services as account_services
from accounts.actors import Operator
from documents import services
from documents.models import Document
from documents.tests.helpers import paid, people

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
        services.document_request(user=patient, kind="consultation_summary", consultation_id=consultation.pk)
    prescription = Document(
        kind="prescription",
        key="prescription:424242",
        patient=patient,
        doctor=doctor,
        consultation=consultation,
        prescription_id=424242,
        status="ready",
        sha256="a" * 64,
        size=4,
        requested_at=timezone.now(),
        generated_at=timezone.now(),
    )
    prescription.file.save(f"documents/{patient.pk}/rx.pdf", ContentFile(b"%PDF"), save=False)
    prescription.save()
    files = {d.kind: Path(d.file.path) for d in Document.objects.all()}
    assert set(files) == {"receipt", "consultation_summary", "prescription"}
    assert all(path.exists() for path in files.values())

    with django_capture_on_commit_callbacks(execute=True):
        account_services.user_delete(user=patient, actor=Operator(command="test"))

    assert list(Document.objects.values_list("kind", flat=True)) == ["prescription"]
    assert not files["receipt"].exists()
    assert not files["consultation_summary"].exists()
    assert files["prescription"].exists()


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
