"""Helpers for documents tests: people and consultations through the real services, and the
PDF judged by Debian's poppler-utils (``pdftotext``, ``pdfinfo``, ``pdftoppm``)."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts.actors import Operator
from accounts.models import PatientProfile, User
from accounts.tests.factories import DoctorFactory, PatientFactory
from payments import booking
from payments import services as payment_services
from payments.models import Consultation


def people() -> tuple[User, User]:
    """A patient with a date of birth and a verified doctor (fee 3000 GBP)."""
    patient: User = PatientFactory.create(display_name="Ada Lovelace")
    PatientProfile.objects.filter(user=patient).update(date_of_birth="1985-12-10")
    doctor: User = DoctorFactory.create(
        display_name="Grace Hopper", profile__licence_number="GMC-7654321", profile__jurisdiction="GB"
    )
    return patient, doctor


def paid(patient: User, doctor: User) -> Consultation:
    """Requested (the development provider authorises at once) and accepted (captured)."""
    consultation = booking.consultation_request(
        patient=patient, doctor_id=doctor.pk, kind="chat", reason="Headache"
    )
    payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    return consultation


def refund(consultation: Consultation, amount: int | None = None) -> Consultation:
    return payment_services.consultation_refund(
        consultation_id=consultation.pk, actor=Operator(command="test"), amount=amount, source="command"
    )


def _with_file(data: bytes, args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(data)
        out = subprocess.run([*args, str(path), "-"], capture_output=True, check=True, timeout=60)
        return out.stdout.decode()


def pdf_text(data: bytes) -> str:
    """The text of the PDF as poppler reads it (reading order, one space between words)."""
    return " ".join(_with_file(data, ["pdftotext", "-enc", "UTF-8"]).split())


def pdf_info(data: bytes) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(data)
        out = subprocess.run(["pdfinfo", "-isodates", str(path)], capture_output=True, check=True, timeout=60)
    info: dict[str, str] = {}
    for line in out.stdout.decode().splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


@dataclass(frozen=True)
class PdfFont:
    name: str
    type: str
    embedded: bool
    subset: bool
    unicode_map: bool


def pdf_fonts(data: bytes) -> list[PdfFont]:
    """The fonts the PDF names, as ``pdffonts`` lists them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(data)
        out = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, timeout=60)
    fonts = []
    for line in out.stdout.decode().splitlines()[2:]:
        # name, type (may contain spaces), encoding, emb, sub, uni, object number, generation
        name, *middle, emb, sub, uni, _obj, _gen = line.split()
        fonts.append(
            PdfFont(
                name=name,
                type=" ".join(middle[:-1]),
                embedded=emb == "yes",
                subset=sub == "yes",
                unicode_map=uni == "yes",
            )
        )
    return fonts


def page_pngs(data: bytes, out_dir: Path, *, resolution: int = 60, prefix: str = "page") -> list[Path]:
    """Every page rendered to PNG by ``pdftoppm``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(data)
        subprocess.run(
            ["pdftoppm", "-png", "-r", str(resolution), str(path), str(out_dir / prefix)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return sorted(out_dir.glob(f"{prefix}*.png"))


def stored(document: Any) -> bytes:
    with document.file.open("rb") as handle:
        data: bytes = handle.read()
    return data


RX: dict[str, Any] = {
    "medication_name": "Ibuprofen",
    "strength": "400 mg",
    "form": "tablet",
    "dose": "1 tablet",
    "route": "oral",
    "frequency": "three times a day with food",
    "duration": "5 days",
    "quantity": 15,
    "repeats": 1,
    "instructions": "Stop if stomach pain.",
}


def clinical_record(consultation: Consultation) -> tuple[Any, Any]:
    """The doctor's note (signed, shared, then amended), an unshared draft's text never reaching
    a document, and a prescription: through the records services."""
    from records import services as records_services

    doctor = consultation.doctor
    note = records_services.note_create(
        doctor=doctor,
        consultation_id=consultation.pk,
        data={
            "reason": "Swollen left knee since Sunday",
            "findings": "Mild effusion, full range of motion, no instability",
            "assessment": "Sprain of the medial collateral ligament",
            "plan": "Rest, ice, compression; ibuprofen for 5 days",
            "follow_up": "Back in 2 weeks if not better",
            "codes": [{"system": "ICD-10", "code": "S83.4", "display": "Sprain of knee ligament"}],
        },
    )
    records_services.note_sign(doctor=doctor, note_id=note.pk, share=True)
    records_services.amendment_add(
        doctor=doctor, note_id=note.pk, reason="Wrong side", text="Right knee, not left."
    )
    prescription = records_services.prescription_issue(
        doctor=doctor, consultation_id=consultation.pk, data=RX
    )
    return note, prescription
