"""The prescription document a pharmacist is shown: prescriber, patient, items, number, the
verification code and a QR code of the public verification page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from PIL import Image

from documents.content import prescription
from documents.pdf import render
from documents.tests.helpers import page_pngs, pdf_info, pdf_text
from records.selectors import PrescriptionDocument

ISSUED = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)


def data(**overrides: Any) -> PrescriptionDocument:
    fields: dict[str, Any] = {
        "id": 42,
        "number": "RX-7K3Q-9M2D",
        "verification_code": "K7QF3M9P2X",
        "verify_path": "/api/v1/prescriptions/verify/K7QF3M9P2X",
        "status": "issued",
        "issued_at": ISSUED,
        "cancelled_at": None,
        "cancel_reason": "",
        "consultation_id": 7,
        "doctor_id": 2,
        "doctor_name": "Grace Hopper",
        "doctor_licence_number": "GMC-7654321",
        "jurisdiction": "GB",
        "doctor_specialty": "General practice",
        "patient_id": 1,
        "patient_name": "Ada Lovelace",
        "patient_date_of_birth": dt.date(1985, 12, 10),
        "medication_name": "Amoxicillin",
        "strength": "500 mg",
        "form": "capsule",
        "dose": "1 capsule",
        "route": "oral",
        "frequency": "three times a day",
        "duration": "7 days",
        "quantity": 21,
        "repeats": 0,
        "instructions": "Take with water.",
    }
    fields.update(overrides)
    return PrescriptionDocument(**fields)


def test_the_prescription_says_who_what_and_how_to_verify_it(settings: Any) -> None:
    settings.HEALTHCHAT_PUBLIC_URL = "https://healthchat.test"
    pdf = render(prescription(data()))
    text = pdf_text(pdf)
    for expected in (
        "Prescription",
        "Prescription number RX-7K3Q-9M2D",
        "Issued 2026-12-07 09:30 UTC",
        "Verification code K7QF3M9P2X",
        "Doctor Dr Grace Hopper",
        "Licence number GMC-7654321",
        "Jurisdiction GB",
        "Name Ada Lovelace",
        "Date of birth 1985-12-10",
        "Medication Amoxicillin",
        "Strength 500 mg",
        "Frequency three times a day",
        "Quantity 21",
        "Specialty General practice",
        "Verify: https://healthchat.test/api/v1/prescriptions/verify/K7QF3M9P2X (code K7QF3M9P2X)",
    ):
        assert expected in text, (expected, text)
    assert "CANCELLED" not in text
    assert pdf_info(pdf)["CreationDate"].startswith("2026-12-07T09:30:00")
    assert render(prescription(data())) == pdf


def test_a_cancelled_prescription_says_so(settings: Any) -> None:
    cancelled = data(
        status="cancelled", cancelled_at=ISSUED + dt.timedelta(hours=2), cancel_reason="wrong dose"
    )
    text = pdf_text(render(prescription(cancelled)))
    assert "CANCELLED 2026-12-07 11:30 UTC: this prescription must not be dispensed." in text


def test_the_prescription_page_renders_with_its_qr_code(tmp_path: Path) -> None:
    (page,) = page_pngs(render(prescription(data())), tmp_path, resolution=60)
    with Image.open(page) as image:
        assert abs(image.size[0] - 496) <= 1
        assert image.size[1] == 702
