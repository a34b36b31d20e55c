"""The prescription document a pharmacist is shown: prescriber, patient, items, number, the
verification code and a QR code of the public verification page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from PIL import Image

from documents.content import PrescriptionData, PrescriptionItem, prescription
from documents.pdf import render
from documents.tests.helpers import page_pngs, pdf_info, pdf_text

ISSUED = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)


def data(**overrides: Any) -> PrescriptionData:
    fields: dict[str, Any] = {
        "number": "RX-2026-000042",
        "verification_code": "K7QF-3M9P",
        "issued_at": ISSUED,
        "doctor_name": "Dr Grace Hopper",
        "licence_number": "GMC-7654321",
        "jurisdiction": "GB",
        "patient_name": "Ada Lovelace",
        "patient_date_of_birth": dt.date(1985, 12, 10),
        "items": [
            PrescriptionItem(
                medication="Amoxicillin",
                strength="500 mg",
                form="capsule",
                dose="1 capsule",
                route="oral",
                frequency="three times a day",
                duration="7 days",
                quantity="21",
                repeats="0",
                instructions="Take with water.",
            )
        ],
        "verify_path": "/api/v1/prescriptions/verify/K7QF-3M9P",
    }
    fields.update(overrides)
    return PrescriptionData(**fields)


def test_the_prescription_says_who_what_and_how_to_verify_it(settings: Any) -> None:
    settings.HEALTHCHAT_PUBLIC_URL = "https://healthchat.test"
    pdf = render(prescription(data()))
    text = pdf_text(pdf)
    for expected in (
        "Prescription",
        "Prescription number RX-2026-000042",
        "Issued 2026-12-07 09:30 UTC",
        "Verification code K7QF-3M9P",
        "Doctor Dr Grace Hopper",
        "Licence number GMC-7654321",
        "Jurisdiction GB",
        "Name Ada Lovelace",
        "Date of birth 1985-12-10",
        "Medication Amoxicillin",
        "Strength 500 mg",
        "Frequency three times a day",
        "Quantity 21",
        "Verify: https://healthchat.test/api/v1/prescriptions/verify/K7QF-3M9P (code K7QF-3M9P)",
    ):
        assert expected in text, (expected, text)
    assert "CANCELLED" not in text
    assert pdf_info(pdf)["CreationDate"].startswith("2026-12-07T09:30:00")
    assert render(prescription(data())) == pdf


def test_a_cancelled_prescription_says_so(settings: Any) -> None:
    text = pdf_text(render(prescription(data(status="cancelled"))))
    assert "CANCELLED: this prescription must not be dispensed." in text


def test_the_prescription_page_renders_with_its_qr_code(tmp_path: Path) -> None:
    (page,) = page_pngs(render(prescription(data())), tmp_path, resolution=60)
    with Image.open(page) as image:
        assert abs(image.size[0] - 496) <= 1
        assert image.size[1] == 702
