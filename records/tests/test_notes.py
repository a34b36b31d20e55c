"""Visit notes over REST: the doctor writes a draft, signs it, shares it; the patient reads only
signed and shared notes with their amendments; corrections are amendments; every read is audited."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from records.models import NoteAmendment, VisitNote

from .conftest import open_consultation

pytestmark = pytest.mark.django_db

NOTE = {
    "reason": "sore throat for three days",
    "findings": "red pharynx, no exudate, 37.9 C",
    "assessment": "viral pharyngitis",
    "plan": "fluids, paracetamol",
    "follow_up": "if not better in 5 days",
    "codes": [{"system": "ICD-10", "code": "J02.9", "display": "Acute pharyngitis, unspecified"}],
}


def _create(as_user, doctor, consultation, body=None):
    return as_user(doctor).post(f"/api/v1/consultations/{consultation.pk}/notes", body or NOTE, format="json")


def test_doctor_writes_signs_and_shares_a_note(as_user, doctor, patient, consultation) -> None:
    created = _create(as_user, doctor, consultation)
    assert created.status_code == 201, created.content
    note = created.json()
    assert note["state"] == "draft"
    assert note["signed_at"] is None
    assert note["shared_at"] is None
    assert note["doctor_id"] == doctor.pk
    assert note["consultation_id"] == consultation.pk
    assert note["codes"] == NOTE["codes"]
    assert note["amendments"] == []

    # The patient sees nothing of a draft.
    assert as_user(patient).get(f"/api/v1/notes/{note['id']}").json()["error"]["code"] == "note_not_found"
    assert as_user(patient).get(f"/api/v1/consultations/{consultation.pk}/notes").json() == []

    changed = as_user(doctor).patch(f"/api/v1/notes/{note['id']}", {"plan": "fluids, rest"}, format="json")
    assert changed.status_code == 200
    assert changed.json()["plan"] == "fluids, rest"
    assert changed.json()["assessment"] == "viral pharyngitis"

    signed = as_user(doctor).post(f"/api/v1/notes/{note['id']}/sign", {}, format="json")
    assert signed.status_code == 200
    assert signed.json()["state"] == "signed"
    assert signed.json()["signed_at"]
    # Signed, not shared: still invisible to the patient.
    assert as_user(patient).get(f"/api/v1/notes/{note['id']}").status_code == 404

    shared = as_user(doctor).post(f"/api/v1/notes/{note['id']}/share")
    assert shared.status_code == 200
    assert shared.json()["shared_at"]
    again = as_user(doctor).post(f"/api/v1/notes/{note['id']}/share")
    assert again.json()["shared_at"] == shared.json()["shared_at"]  # idempotent

    read = as_user(patient).get(f"/api/v1/notes/{note['id']}")
    assert read.status_code == 200
    assert read.json()["assessment"] == "viral pharyngitis"
    assert read.json()["plan"] == "fluids, rest"
    listed = as_user(patient).get(f"/api/v1/consultations/{consultation.pk}/notes").json()
    assert [n["id"] for n in listed] == [note["id"]]


def test_sign_and_share_at_once(as_user, doctor, patient, consultation) -> None:
    note = _create(as_user, doctor, consultation).json()
    signed = as_user(doctor).post(f"/api/v1/notes/{note['id']}/sign", {"share": True}, format="json").json()
    assert signed["state"] == "signed"
    assert signed["shared_at"] == signed["signed_at"]
    assert as_user(patient).get(f"/api/v1/notes/{note['id']}").status_code == 200


def test_signed_note_cannot_change_only_be_amended(as_user, doctor, patient, consultation) -> None:
    note = _create(as_user, doctor, consultation).json()
    as_user(doctor).post(f"/api/v1/notes/{note['id']}/sign", {"share": True}, format="json")
    doctor_client = as_user(doctor)

    patch = doctor_client.patch(f"/api/v1/notes/{note['id']}", {"plan": "x"}, format="json")
    assert (patch.status_code, patch.json()["error"]["code"]) == (409, "note_signed")
    delete = doctor_client.delete(f"/api/v1/notes/{note['id']}")
    assert (delete.status_code, delete.json()["error"]["code"]) == (409, "note_signed")
    resign = doctor_client.post(f"/api/v1/notes/{note['id']}/sign", {}, format="json")
    assert (resign.status_code, resign.json()["error"]["code"]) == (409, "note_signed")

    missing = doctor_client.post(f"/api/v1/notes/{note['id']}/amendments", {"text": "x"}, format="json")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "reason_required")
    missing = doctor_client.post(f"/api/v1/notes/{note['id']}/amendments", {"reason": "x"}, format="json")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "text_required")

    amended = doctor_client.post(
        f"/api/v1/notes/{note['id']}/amendments",
        {"reason": "wrong temperature", "text": "Temperature was 38.9 C, not 37.9 C."},
        format="json",
    )
    assert amended.status_code == 201, amended.content
    body = amended.json()
    assert body["author_id"] == doctor.pk
    assert body["author_name"] == "Dr Rita Record"
    assert body["created_at"]

    read = as_user(patient).get(f"/api/v1/notes/{note['id']}").json()
    assert read["findings"] == NOTE["findings"]  # the original stays as it was signed
    assert [(a["reason"], a["text"]) for a in read["amendments"]] == [
        ("wrong temperature", "Temperature was 38.9 C, not 37.9 C.")
    ]


def test_refusals(as_user, doctor, patient, stranger, consultation) -> None:
    # Only the consultation's doctor writes; a stranger cannot tell the consultation exists.
    by_patient = _create(as_user, patient, consultation)
    assert (by_patient.status_code, by_patient.json()["error"]["code"]) == (403, "not_the_doctor")
    by_stranger = _create(as_user, stranger, consultation)
    assert (by_stranger.status_code, by_stranger.json()["error"]["code"]) == (404, "consultation_not_found")

    note = _create(as_user, doctor, consultation).json()
    dup = _create(as_user, doctor, consultation)
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "note_exists")
    assert dup.json()["error"]["note_id"] == note["id"]

    # Amending a draft: edit it instead.
    draft_amend = as_user(doctor).post(
        f"/api/v1/notes/{note['id']}/amendments", {"reason": "a", "text": "b"}, format="json"
    )
    assert (draft_amend.status_code, draft_amend.json()["error"]["code"]) == (409, "note_not_signed")
    share_draft = as_user(doctor).post(f"/api/v1/notes/{note['id']}/share")
    assert (share_draft.status_code, share_draft.json()["error"]["code"]) == (409, "note_not_signed")

    # Too long, bad codes, unknown fields.
    long = as_user(doctor).patch(f"/api/v1/notes/{note['id']}", {"plan": "x" * 10_001}, format="json")
    assert (long.status_code, long.json()["error"]["code"]) == (400, "field_too_long")
    assert long.json()["error"]["fields"] == {"plan": ["too_long"]}
    codes = as_user(doctor).patch(
        f"/api/v1/notes/{note['id']}", {"codes": [{"system": "ICD-10"}]}, format="json"
    )
    assert codes.status_code == 400
    unknown = as_user(doctor).patch(f"/api/v1/notes/{note['id']}", {"state": "signed"}, format="json")
    assert unknown.status_code == 400

    # An empty note is not signed.
    VisitNote.objects.filter(pk=note["id"]).update(
        reason="", findings="", assessment="", plan="", follow_up="  "
    )
    empty = as_user(doctor).post(f"/api/v1/notes/{note['id']}/sign", {}, format="json")
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "note_empty")


def test_note_needs_a_taken_consultation(as_user, doctor, patient) -> None:
    paid = open_consultation(patient, doctor, "paid")
    refused = _create(as_user, doctor, paid)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "consultation_not_eligible")


def test_draft_is_discarded(as_user, doctor, consultation) -> None:
    note = _create(as_user, doctor, consultation).json()
    assert as_user(doctor).delete(f"/api/v1/notes/{note['id']}").status_code == 204
    assert not VisitNote.objects.filter(pk=note["id"]).exists()


def test_every_read_is_audited(as_user, doctor, patient, consultation) -> None:
    note = _create(as_user, doctor, consultation).json()
    as_user(doctor).post(f"/api/v1/notes/{note['id']}/sign", {"share": True}, format="json")
    as_user(doctor).post(
        f"/api/v1/notes/{note['id']}/amendments", {"reason": "r", "text": "t"}, format="json"
    )
    before = AuditEntry.objects.count()
    as_user(patient).get(f"/api/v1/notes/{note['id']}")
    as_user(doctor).get(f"/api/v1/notes/{note['id']}")
    as_user(patient).get(f"/api/v1/consultations/{consultation.pk}/notes")
    rows = list(AuditEntry.objects.order_by("id")[before:])
    assert [(r.action, r.actor_id, r.object_type, r.object_id, r.channel) for r in rows] == [
        ("visit_note.read", patient.pk, "visit_note", str(note["id"]), "rest"),
        ("visit_note.read", doctor.pk, "visit_note", str(note["id"]), "rest"),
        ("visit_note.list", patient.pk, "consultation", str(consultation.pk), "rest"),
    ]
    # Writes are in the log too, and no entry carries the note's text.
    actions = set(AuditEntry.objects.filter(object_type="visit_note").values_list("action", flat=True))
    assert {"visit_note.write", "visit_note.sign", "visit_note.amend"} <= actions
    assert NoteAmendment.objects.count() == 1
