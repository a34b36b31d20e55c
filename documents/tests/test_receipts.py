"""Receipts: made when money moves (the one place a ledger entry is written), for every payment
and refund, with what an insurer needs; the same record renders to the same bytes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from documents import services
from documents.models import Document
from documents.tests.helpers import paid, pdf_info, pdf_text, people, refund, stored
from payments.models import LedgerEntry

pytestmark = pytest.mark.django_db


def test_a_captured_payment_gets_a_receipt_with_amounts_tax_parties_and_reference(
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)

    charge = LedgerEntry.objects.get(consultation=consultation, kind="charge")
    document = Document.objects.get(payment=charge)
    assert (document.kind, document.status, document.requested_by_id) == ("receipt", "ready", None)
    assert (document.patient_id, document.doctor_id, document.consultation_id) == (
        patient.pk,
        doctor.pk,
        consultation.pk,
    )
    data = stored(document)
    assert data.startswith(b"%PDF-")
    assert hashlib.sha256(data).hexdigest() == document.sha256
    assert len(data) == document.size
    text = pdf_text(data)
    for expected in (
        "Payment receipt",
        f"R-{consultation.pk:06d}-{charge.pk:08d}",
        "Amount paid 30.00 GBP",
        "of which VAT (20 %) 5.00 GBP",  # tax-inclusive: 3000 * 20 / 120
        "Net of VAT 25.00 GBP",
        "Currency GBP",
        "Patient Ada Lovelace",
        "Doctor Dr Grace Hopper",
        "Platform Healthchat Test Ltd",
        "Healthchat Test Ltd 1 Test Street London EC1A 1AA United Kingdom VAT id: GB123456789",
        f"Payment reference {charge.stripe_id}",
        f"Chat consultation #{consultation.pk} with Dr Grace Hopper",
    ):
        assert expected in text, (expected, text)
    info = pdf_info(data)
    assert info["Title"] == "Payment receipt"
    # The file's dates are the payment's, not the time of rendering.
    assert info["CreationDate"].startswith(charge.created_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_every_refund_gets_its_own_receipt_naming_the_payment_it_refunds(
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    with django_capture_on_commit_callbacks(execute=True):
        refund(consultation, amount=1000)
    with django_capture_on_commit_callbacks(execute=True):
        refund(consultation)  # the rest

    charge = LedgerEntry.objects.get(consultation=consultation, kind="charge")
    refunds = list(LedgerEntry.objects.filter(consultation=consultation, kind="refund").order_by("id"))
    assert [r.amount for r in refunds] == [-1000, -2000]
    receipts = {d.payment_id: d for d in Document.objects.filter(kind="receipt")}
    assert set(receipts) == {charge.pk, refunds[0].pk, refunds[1].pk}
    first = pdf_text(stored(receipts[refunds[0].pk]))
    assert "Refund receipt" in first
    assert f"RF-{consultation.pk:06d}-{refunds[0].pk:08d}" in first
    assert "Amount refunded 10.00 GBP" in first
    assert f"Refund of R-{consultation.pk:06d}-{charge.pk:08d}" in first
    assert "Refunded to Patient Ada Lovelace" in first
    assert "Amount refunded 20.00 GBP" in pdf_text(stored(receipts[refunds[1].pk]))


def test_fees_and_transfers_get_no_receipt(django_capture_on_commit_callbacks: Any) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
        from payments import services as payment_services

        payment_services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    assert LedgerEntry.objects.filter(consultation=consultation, kind="fee").exists()
    assert Document.objects.count() == 1


def test_rendering_again_from_the_record_gives_the_same_bytes(
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    document = Document.objects.get(consultation=consultation, kind="receipt")
    first = stored(document)
    assert services.render_bytes(document) == first
    # A full regeneration (a new request) stores the same file under the same name.
    with django_capture_on_commit_callbacks(execute=True):
        again = services.document_request(user=patient, kind="receipt", consultation_id=consultation.pk)
    again.refresh_from_db()
    assert again.pk == document.pk
    assert (again.status, again.sha256, again.file.name) == ("ready", document.sha256, document.file.name)
    assert stored(again) == first


def test_without_a_tax_rate_the_receipt_says_no_tax_was_charged(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.HEALTHCHAT_TAX_RATE = "0"
    settings.HEALTHCHAT_TAX_ID = ""
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    text = pdf_text(stored(Document.objects.get(consultation=consultation)))
    assert "VAT none charged" in text
    assert "VAT id" not in text


def test_a_receipt_that_cannot_be_rendered_is_marked_failed_with_a_code(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from documents import pdf

    def broken(content: Any) -> bytes:
        raise ValueError("layout bug")

    monkeypatch.setattr(pdf, "render", broken)
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    document = Document.objects.get(consultation=consultation)
    assert (document.status, document.error, document.file.name) == ("failed", "render_failed", "")
    monkeypatch.undo()
    # Asking again renders it.
    with django_capture_on_commit_callbacks(execute=True):
        services.document_request(user=patient, kind="receipt", consultation_id=consultation.pk)
    document.refresh_from_db()
    assert (document.status, document.error) == ("ready", "")
