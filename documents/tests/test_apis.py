"""The documents REST API as a client uses it: ask (202 + id), poll, download through the signed
link; only the people of the record, and the chat only when the patient asks for it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from django.core import signing
from rest_framework.test import APIClient

from accounts.tests.factories import DoctorFactory, PatientFactory
from audit.models import AuditEntry
from documents.models import Document
from documents.selectors import SIGNING_SALT
from documents.tests.helpers import clinical_record, paid, pdf_text, people
from messaging import services as messaging_services
from payments import booking
from payments.models import LedgerEntry

pytestmark = pytest.mark.django_db


def _download(url: str) -> Any:
    parsed = urlparse(url)
    return APIClient().get(f"{parsed.path}?{parsed.query}")


def _pdf(response: Any) -> bytes:
    assert response.status_code == 200, response
    assert response["Content-Type"] == "application/pdf"
    return b"".join(response.streaming_content)


def _send(user: Any, conversation_id: int, body: str) -> None:
    import uuid

    messaging_services.message_send(
        sender=user, conversation_id=conversation_id, client_id=uuid.uuid4(), body=body
    )


def test_ask_poll_and_download_a_summary(client_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    patient, doctor = people()
    consultation = paid(patient, doctor)
    _send(patient, consultation.conversation_id, "secret chat: my knee hurts")
    api = client_for(patient)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        asked = api.post(
            "/api/v1/documents",
            {"kind": "consultation_summary", "consultation_id": consultation.pk},
            format="json",
        )
    assert asked.status_code == 202, asked.json()
    body = asked.json()
    assert (body["kind"], body["status"], body["consultation_id"], body["include_chat"]) == (
        "consultation_summary",
        "pending",
        consultation.pk,
        False,
    )
    # Before the worker ran: pending, no link.
    polled = api.get(f"/api/v1/documents/{body['id']}").json()
    assert (polled["status"], polled["url"], polled["expires_at"]) == ("pending", None, None)
    for callback in queued:
        callback()  # the worker's turn (eager Celery)

    ready = api.get(f"/api/v1/documents/{body['id']}").json()
    assert ready["status"] == "ready"
    assert ready["url"]
    assert ready["expires_at"]
    assert len(ready["sha256"]) == 64
    assert ready["size"] > 1000
    response = _download(ready["url"])
    assert response["Content-Disposition"] == (
        f'attachment; filename="consultation-summary-{consultation.pk}.pdf"'
    )
    text = pdf_text(_pdf(response))
    for expected in (
        "Consultation summary",
        "Patient Ada Lovelace",
        "Date of birth 1985-12-10",
        "Doctor Dr Grace Hopper",
        "Licence GMC-7654321 (GB)",
        f"Chat consultation #{consultation.pk}",
        "No visit notes were shared.",
    ):
        assert expected in text, (expected, text)
    assert "my knee hurts" not in text  # no chat unless the patient asks
    # The doctor sees the same document in their list and may download it.
    listed = client_for(doctor).get("/api/v1/documents").json()["results"]
    assert body["id"] in {d["id"] for d in listed}
    assert (
        AuditEntry.objects.filter(
            action="document.download", object_id=str(body["id"]), actor_id=patient.pk
        ).count()
        == 1
    )


def test_the_chat_is_included_only_when_the_patient_asks_and_only_the_patient_sees_it(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    consultation = paid(patient, doctor)
    _send(patient, consultation.conversation_id, "secret chat: my knee hurts <b>&")
    _send(doctor, consultation.conversation_id, "Rest it for two days")

    refused = client_for(doctor).post(
        "/api/v1/documents",
        {"kind": "consultation_summary", "consultation_id": consultation.pk, "include_chat": True},
        format="json",
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "chat_patient_only"

    with django_capture_on_commit_callbacks(execute=True):
        asked = client_for(patient).post(
            "/api/v1/documents",
            {"kind": "consultation_summary", "consultation_id": consultation.pk, "include_chat": True},
            format="json",
        )
    assert asked.status_code == 202
    document_id = asked.json()["id"]
    link = client_for(patient).get(f"/api/v1/documents/{document_id}").json()
    text = pdf_text(_pdf(_download(link["url"])))
    assert "secret chat: my knee hurts <b>&" in text
    assert "Rest it for two days" in text
    assert "Included at the patient's request." in text
    # The doctor cannot see the patient's copy with the chat, nor tell it exists.
    denied = client_for(doctor).get(f"/api/v1/documents/{document_id}")
    assert denied.status_code == 404
    assert denied.json()["error"]["code"] == "document_not_found"
    assert document_id not in {d["id"] for d in client_for(doctor).get("/api/v1/documents").json()["results"]}
    # Nor with a link minted for the doctor.
    token = signing.dumps({"d": document_id, "u": doctor.pk, "h": link["sha256"][:16]}, salt=SIGNING_SALT)
    assert APIClient().get(f"/api/v1/documents/{document_id}/content?token={token}").status_code == 404


def test_strangers_cannot_ask_for_see_or_download_a_document(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    receipt = Document.objects.get(consultation=consultation)
    stranger, other_doctor = PatientFactory.create(), DoctorFactory.create()
    for user in (stranger, other_doctor):
        api = client_for(user)
        for kind in ("receipt", "consultation_summary"):
            response = api.post(
                "/api/v1/documents", {"kind": kind, "consultation_id": consultation.pk}, format="json"
            )
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "consultation_not_found"
        response = api.get(f"/api/v1/documents/{receipt.pk}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "document_not_found"
        assert api.get("/api/v1/documents").json()["results"] == []
    # A link is only as good as its holder's access.
    link = client_for(patient).get(f"/api/v1/documents/{receipt.pk}").json()["url"]
    assert _pdf(_download(link)).startswith(b"%PDF")
    forged = signing.dumps({"d": receipt.pk, "u": stranger.pk, "h": receipt.sha256[:16]}, salt=SIGNING_SALT)
    assert APIClient().get(f"/api/v1/documents/{receipt.pk}/content?token={forged}").status_code == 404
    bad = APIClient().get(f"/api/v1/documents/{receipt.pk}/content?token=nonsense")
    assert bad.status_code == 403
    assert bad.json()["error"]["code"] == "invalid_link"


def test_an_expired_link_or_one_for_an_older_rendering_is_refused(
    client_for: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    receipt = Document.objects.get(consultation=consultation)
    settings.DOCUMENT_URL_TTL_SECONDS = -1
    link = client_for(patient).get(f"/api/v1/documents/{receipt.pk}").json()["url"]
    expired = _download(link)
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "link_expired"
    settings.DOCUMENT_URL_TTL_SECONDS = 300
    stale = signing.dumps({"d": receipt.pk, "u": patient.pk, "h": "0" * 16}, salt=SIGNING_SALT)
    response = APIClient().get(f"/api/v1/documents/{receipt.pk}/content?token={stale}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "link_expired"


def test_receipts_by_payment_and_the_errors_of_asking(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    unpaid = booking.consultation_request(patient=patient, doctor_id=doctor.pk, kind="chat", reason="")
    api = client_for(patient)

    def ask(body: dict[str, Any]) -> tuple[int, str]:
        response = api.post("/api/v1/documents", body, format="json")
        return response.status_code, response.json().get("error", {}).get("code", "")

    assert ask({"kind": "receipt", "consultation_id": unpaid.pk}) == (409, "not_paid")
    # The documented code (OpenAPI, docs/protocol.md), not DRF's ``invalid``.
    assert ask({"kind": "invoice", "consultation_id": unpaid.pk}) == (400, "invalid_kind")
    assert ask({"kind": 3, "consultation_id": unpaid.pk}) == (400, "invalid")  # a wrong JSON type
    assert ask({"kind": "receipt"}) == (400, "invalid")
    assert ask({"kind": "prescription"}) == (400, "invalid")
    assert ask({"kind": "receipt", "consultation_id": unpaid.pk, "include_chat": True}) == (400, "invalid")
    assert ask({"kind": "receipt", "consultation_id": unpaid.pk, "colour": "red"})[0] == 400
    assert ask({"kind": "receipt", "consultation_id": "1"})[0] == 400
    # One open consultation per pair: the unpaid one goes before the paid one comes.
    assert api.post(f"/api/v1/consultations/{unpaid.pk}/cancel", {}, format="json").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    charge = LedgerEntry.objects.get(consultation=consultation, kind="charge")
    assert ask({"kind": "receipt", "consultation_id": consultation.pk, "payment_id": 10**12}) == (
        404,
        "payment_not_found",
    )
    fee_like = (
        LedgerEntry.objects.filter(consultation=consultation).exclude(kind__in=["charge", "refund"]).first()
    )
    if fee_like is not None:
        assert (
            ask({"kind": "receipt", "consultation_id": consultation.pk, "payment_id": fee_like.pk})[0] == 404
        )
    response = api.post(
        "/api/v1/documents",
        {"kind": "receipt", "consultation_id": consultation.pk, "payment_id": charge.pk},
        format="json",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["payment"] == {
        "id": charge.pk,
        "kind": "charge",
        "amount": 3000,
        "currency": "GBP",
        "created_at": charge.created_at.isoformat(),
    }
    listed = api.get(f"/api/v1/documents?kind=receipt&consultation_id={consultation.pk}").json()["results"]
    assert [d["id"] for d in listed] == [body["id"]]
    assert api.get("/api/v1/documents?kind=nope").status_code == 400


def test_the_summary_has_the_shared_note_its_amendment_and_the_prescriptions(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    consultation = paid(patient, doctor)
    _note, prescription = clinical_record(consultation)
    with django_capture_on_commit_callbacks(execute=True):
        asked = client_for(doctor).post(
            "/api/v1/documents",
            {"kind": "consultation_summary", "consultation_id": consultation.pk},
            format="json",
        )
    link = client_for(patient).get(f"/api/v1/documents/{asked.json()['id']}").json()
    text = pdf_text(_pdf(_download(link["url"])))
    for expected in (
        "Reason Swollen left knee since Sunday",
        "Findings Mild effusion, full range of motion, no instability",
        "Assessment Sprain of the medial collateral ligament",
        "Plan Rest, ice, compression; ibuprofen for 5 days",
        "Follow-up Back in 2 weeks if not better",
        "ICD-10 S83.4 - Sprain of knee ligament",
        "by Dr Grace Hopper",
        "Reason Wrong side Correction Right knee, not left.",
        prescription.number,
        "Ibuprofen 400 mg tablet",
        "15 (+1 repeats)",
    ):
        assert expected in text, (expected, text)
    assert "No visit notes were shared." not in text


def test_an_unshared_note_never_reaches_the_summary(
    client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from records import services as records_services

    patient, doctor = people()
    consultation = paid(patient, doctor)
    note = records_services.note_create(
        doctor=doctor, consultation_id=consultation.pk, data={"assessment": "private draft thought"}
    )
    records_services.note_sign(doctor=doctor, note_id=note.pk, share=False)
    with django_capture_on_commit_callbacks(execute=True):
        asked = client_for(doctor).post(
            "/api/v1/documents",
            {"kind": "consultation_summary", "consultation_id": consultation.pk},
            format="json",
        )
    link = client_for(doctor).get(f"/api/v1/documents/{asked.json()['id']}").json()
    text = pdf_text(_pdf(_download(link["url"])))
    assert "private draft thought" not in text
    assert "No visit notes were shared." in text
    assert "No prescriptions." in text


def test_a_prescription_document_for_its_patient_and_prescriber_only(
    client_for: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from records import services as records_services

    patient, doctor = people()
    consultation = paid(patient, doctor)
    _note, prescription = clinical_record(consultation)
    body = {"kind": "prescription", "prescription_id": prescription.pk}
    for stranger in (PatientFactory.create(), DoctorFactory.create()):
        refused = client_for(stranger).post("/api/v1/documents", body, format="json")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "prescription_not_found"
    with django_capture_on_commit_callbacks(execute=True):
        asked = client_for(patient).post("/api/v1/documents", body, format="json")
    assert asked.status_code == 202
    assert asked.json()["prescription_id"] == prescription.pk
    assert asked.json()["consultation_id"] == consultation.pk
    link = client_for(doctor).get(f"/api/v1/documents/{asked.json()['id']}").json()
    assert link["status"] == "ready"
    text = pdf_text(_pdf(_download(link["url"])))
    for expected in (
        f"Prescription number {prescription.number}",
        f"Verification code {prescription.verification_code}",
        "Doctor Dr Grace Hopper",
        "Licence number GMC-7654321",
        "Jurisdiction GB",
        "Name Ada Lovelace",
        "Date of birth 1985-12-10",
        "Medication Ibuprofen",
        "Quantity 15",
        f"Verify: https://healthchat.test/api/v1/prescriptions/verify/{prescription.verification_code}",
    ):
        assert expected in text, (expected, text)
    # The QR code's target answers the pharmacist (the public check).
    checked = APIClient().get(f"/api/v1/prescriptions/verify/{prescription.verification_code}")
    assert checked.status_code == 200
    assert checked.json()["status"] == "valid"

    # Cancelled: asking again renders the record as it is now.
    records_services.prescription_cancel(doctor=doctor, prescription_id=prescription.pk, reason="Wrong dose")
    with django_capture_on_commit_callbacks(execute=True):
        client_for(patient).post("/api/v1/documents", body, format="json")
    again = client_for(patient).get(f"/api/v1/documents/{asked.json()['id']}").json()
    assert again["sha256"] != link["sha256"]
    assert "this prescription must not be dispensed" in pdf_text(_pdf(_download(again["url"])))


def test_asking_is_rate_limited_per_user_and_reading_is_not(client_for: Any, settings: Any) -> None:
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], document="2/minute")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    patient, doctor = people()
    consultation = paid(patient, doctor)
    api = client_for(patient)
    body = {"kind": "consultation_summary", "consultation_id": consultation.pk}
    statuses = [api.post("/api/v1/documents", body, format="json").status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    assert api.get("/api/v1/documents").status_code == 200
    assert client_for(doctor).post("/api/v1/documents", body, format="json").status_code == 202
