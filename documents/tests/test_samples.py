"""Every kind of document renders to PNG pages with ``pdftoppm``; with ``HC_WRITE_DOCUMENT_SAMPLES=1``
this also writes the sample pages the README and docs/record.md link (docs/samples/, 60 dpi):

    HC_WRITE_DOCUMENT_SAMPLES=1 .venv/bin/pytest documents/tests/test_samples.py
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from documents import services
from documents.models import Document
from documents.tests.helpers import clinical_record, page_pngs, paid, people, refund, stored
from messaging import services as messaging_services

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def test_every_kind_of_document_renders_to_png_pages(
    tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    for body, sender in (
        ("Hello doctor, my left knee has been swollen since Sunday.", patient),
        ("Any fever, or did you injure it?", doctor),
        ("No fever. I twisted it playing football.", patient),
        ("Rest, ice and compression for 48 hours; see the note and the prescription.", doctor),
    ):
        messaging_services.message_send(
            sender=sender, conversation_id=consultation.conversation_id, client_id=uuid.uuid4(), body=body
        )
    _note, prescription = clinical_record(consultation)
    with django_capture_on_commit_callbacks(execute=True):
        refund(consultation, amount=1000)
        services.document_request(
            user=patient, kind="consultation_summary", consultation_id=consultation.pk, include_chat=True
        )
        services.document_request(user=patient, kind="prescription", prescription_id=prescription.pk)
    documents = {
        "receipt": Document.objects.get(kind="receipt", payment__kind="charge"),
        "refund-receipt": Document.objects.get(kind="receipt", payment__kind="refund"),
        "consultation-summary": Document.objects.get(kind="consultation_summary"),
        "prescription": Document.objects.get(kind="prescription"),
    }
    for name, document in documents.items():
        assert document.status == "ready", (name, document.error)
        pages = page_pngs(stored(document), tmp_path / name, resolution=60, prefix=name)
        assert pages
        with Image.open(pages[0]) as image:
            assert image.format == "PNG"
            assert abs(image.size[0] - 496) <= 1
            assert image.size[1] == 702
        if os.environ.get("HC_WRITE_DOCUMENT_SAMPLES"):
            SAMPLES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pages[0], SAMPLES / f"{name}.png")
