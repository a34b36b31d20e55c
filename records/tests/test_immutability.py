"""The database itself keeps the record append-only (migration records/0002_append_only): raw
SQL that would change or delete a signed note, an amendment or a prescription is refused, while
drafts, the one-time sharing of a signed note and the cancellation of a prescription pass."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from records import services
from records.models import NoteAmendment, Prescription, VisitNote

from .conftest import VALID_RX

pytestmark = pytest.mark.django_db


def _sql(statement: str, *params: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def _refused(statement: str, *params: Any) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql(statement, *params)


@pytest.fixture
def signed(doctor, consultation) -> VisitNote:
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"assessment": "URTI"})
    return services.note_sign(doctor=doctor, note_id=note.pk)


def test_database_is_postgresql() -> None:
    assert connection.vendor == "postgresql"


def test_draft_is_free_to_change_and_delete(doctor, consultation) -> None:
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "rest"})
    assert _sql("UPDATE records_visitnote SET plan = 'fluids' WHERE id = %s", note.pk) == 1
    assert _sql("DELETE FROM records_visitnote WHERE id = %s", note.pk) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE records_visitnote SET assessment = 'changed' WHERE id = %s",
        "UPDATE records_visitnote SET state = 'draft', signed_at = NULL WHERE id = %s",
        "UPDATE records_visitnote SET signed_at = now() - interval '1 day' WHERE id = %s",
        "UPDATE records_visitnote SET shared_at = now(), plan = 'changed' WHERE id = %s",
        "DELETE FROM records_visitnote WHERE id = %s",
    ],
)
def test_signed_note_refuses_update_and_delete(signed: VisitNote, statement: str) -> None:
    _refused(statement, signed.pk)
    fresh = VisitNote.objects.get(pk=signed.pk)
    assert (fresh.assessment, fresh.state, fresh.shared_at) == ("URTI", "signed", None)


def test_signed_note_is_shared_once_then_frozen(signed: VisitNote) -> None:
    assert _sql("UPDATE records_visitnote SET shared_at = now() WHERE id = %s", signed.pk) == 1
    _refused("UPDATE records_visitnote SET shared_at = now() + interval '1 hour' WHERE id = %s", signed.pk)
    _refused("UPDATE records_visitnote SET shared_at = NULL WHERE id = %s", signed.pk)


def test_orm_cannot_change_a_signed_note(signed: VisitNote) -> None:
    signed.plan = "quietly rewritten"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        signed.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        VisitNote.objects.filter(pk=signed.pk).delete()


def test_amendments_refuse_update_and_delete(doctor, signed: VisitNote) -> None:
    amendment = services.amendment_add(doctor=doctor, note_id=signed.pk, reason="typo", text="URTI, viral")
    _refused("UPDATE records_noteamendment SET text = 'changed' WHERE id = %s", amendment.pk)
    _refused("DELETE FROM records_noteamendment WHERE id = %s", amendment.pk)
    assert NoteAmendment.objects.get(pk=amendment.pk).text == "URTI, viral"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE records_prescription SET dose = '2 capsules' WHERE id = %s",
        "UPDATE records_prescription SET quantity = 90 WHERE id = %s",
        "UPDATE records_prescription SET verification_code = 'ABCDEFGHJKMNPQRS' WHERE id = %s",
        "UPDATE records_prescription SET status = 'cancelled', cancelled_at = now(), "
        "cancel_reason = 'x', medication_name = 'Other' WHERE id = %s",
        "DELETE FROM records_prescription WHERE id = %s",
    ],
)
def test_prescription_refuses_edits_and_delete(doctor, consultation, statement: str) -> None:
    p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    _refused(statement, p.pk)
    fresh = Prescription.objects.get(pk=p.pk)
    assert (fresh.dose, fresh.quantity, fresh.status) == ("1 capsule", 15, "issued")


def test_prescription_cancellation_passes_once(doctor, consultation) -> None:
    p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    assert (
        _sql(
            "UPDATE records_prescription SET status = 'cancelled', cancelled_at = now(), "
            "cancel_reason = 'wrong patient' WHERE id = %s",
            p.pk,
        )
        == 1
    )
    _refused("UPDATE records_prescription SET cancel_reason = 'other' WHERE id = %s", p.pk)
    _refused(
        "UPDATE records_prescription SET status = 'issued', cancelled_at = NULL, cancel_reason = '' "
        "WHERE id = %s",
        p.pk,
    )
    _refused("DELETE FROM records_prescription WHERE id = %s", p.pk)
