"""Names and text beyond Latin-1 (issue 23): Polish, Greek, Cyrillic and Vietnamese patients and
doctors, and medications with "µ" and "≥", print exactly on the receipt, the consultation summary
and the prescription; every font in the file is the embedded DejaVu Sans subset."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from accounts.models import PatientProfile, User
from accounts.tests.factories import DoctorFactory, PatientFactory
from documents import services
from documents.models import Document
from documents.tests.helpers import RX, paid, pdf_fonts, pdf_text, stored
from messaging import services as messaging_services
from records import services as records_services

pytestmark = pytest.mark.django_db

# (patient, doctor): each script appears as a patient and as a doctor.
NAMES = [
    pytest.param("Łukasz Wróbel", "Αλέξανδρος Παπαδόπουλος", id="polish-greek"),
    pytest.param("Дмитрий Соколов", "Nguyễn Thị Hương", id="cyrillic-vietnamese"),
    pytest.param("Αικατερίνη Οικονόμου", "Zofia Dąbrowska-Łęcka", id="greek-polish"),
    pytest.param("Nguyễn Văn Đức", "Ирина Кузнецова", id="vietnamese-cyrillic"),
]

NOTE = {
    "reason": "Отёк левого колена с воскресенья",  # noqa: RUF001 (Cyrillic on purpose)
    "findings": "Ήπια διόγκωση, πλήρες εύρος κίνησης",
    "assessment": "Bong gân dây chằng bên trong",
    "plan": "Odpoczynek, lód, ucisk; ibuprofen ≥ 5 dni",
    "follow_up": "Kontrola za 2 tygodnie",
    "codes": [{"system": "ICD-10", "code": "S83.4", "display": "Skręcenie więzadła kolana"}],
}

MEDICATION = {
    **RX,
    "medication_name": "Cyjanokobalamina",
    "strength": "500 µg",
    "instructions": "Take one when the temperature is ≥ 38.5 °C; at most 4 in 24 h.",
}


def people(patient_name: str, doctor_name: str) -> tuple[User, User]:
    patient: User = PatientFactory.create(display_name=patient_name)
    PatientProfile.objects.filter(user=patient).update(date_of_birth="1985-12-10")
    doctor: User = DoctorFactory.create(
        display_name=doctor_name, profile__licence_number="GMC-7654321", profile__jurisdiction="GB"
    )
    return patient, doctor


def assert_embedded_dejavu(data: bytes) -> None:
    fonts = pdf_fonts(data)
    assert fonts
    for font in fonts:
        assert font.name.split("+", 1)[-1] in {"DejaVuSans", "DejaVuSans-Bold"}, fonts
        assert (font.type, font.embedded, font.subset, font.unicode_map) == ("TrueType", True, True, True)


@pytest.mark.parametrize(("patient_name", "doctor_name"), NAMES)
def test_every_document_prints_the_names_and_text_exactly(
    patient_name: str, doctor_name: str, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people(patient_name, doctor_name)
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    messaging_services.message_send(
        sender=patient,
        conversation_id=consultation.conversation_id,
        client_id=uuid.uuid4(),
        body="Γόνατο πρησμένο, Колено болит, Đầu gối sưng, Kolano spuchnięte",
    )
    note = records_services.note_create(doctor=doctor, consultation_id=consultation.pk, data=NOTE)
    records_services.note_sign(doctor=doctor, note_id=note.pk, share=True)
    prescription = records_services.prescription_issue(
        doctor=doctor, consultation_id=consultation.pk, data=MEDICATION
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.document_request(
            user=patient, kind="consultation_summary", consultation_id=consultation.pk, include_chat=True
        )
        services.document_request(user=patient, kind="prescription", prescription_id=prescription.pk)

    receipt = stored(Document.objects.get(consultation=consultation, kind="receipt"))
    text = pdf_text(receipt)
    assert f"Patient {patient_name}" in text, text
    assert f"Doctor Dr {doctor_name}" in text, text
    assert f"with Dr {doctor_name}" in text, text
    assert_embedded_dejavu(receipt)

    summary = stored(Document.objects.get(consultation=consultation, kind="consultation_summary"))
    text = pdf_text(summary)
    for expected in (
        patient_name,
        doctor_name,
        *(str(NOTE[field]) for field in ("reason", "findings", "assessment", "plan", "follow_up")),
        "Skręcenie więzadła kolana",
        "Cyjanokobalamina",
        "Γόνατο πρησμένο, Колено болит, Đầu gối sưng, Kolano spuchnięte",
    ):
        assert expected in text, (expected, text)
    assert_embedded_dejavu(summary)

    document = stored(Document.objects.get(kind="prescription", prescription=prescription))
    text = pdf_text(document)
    for expected in (
        f"Doctor Dr {doctor_name}",
        f"Name {patient_name}",
        "Medication Cyjanokobalamina",
        "Strength 500 µg",
        "Take one when the temperature is ≥ 38.5 °C; at most 4 in 24 h.",
    ):
        assert expected in text, (expected, text)
    assert_embedded_dejavu(document)


def test_the_same_record_in_any_script_renders_to_the_same_bytes(
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient, doctor = people("Łukasz Wróbel", "Nguyễn Thị Hương")
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    document = Document.objects.get(consultation=consultation, kind="receipt")
    assert services.render_bytes(document) == stored(document)
