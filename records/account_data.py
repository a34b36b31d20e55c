"""The clinical record in the account holder's data export and in account erasure (registered
with ``accounts.services`` in ``RecordsConfig.ready``).

Export (section ``records``): ``notes_written`` (a doctor's notes, drafts included, with their
amendments), ``notes_received`` (a patient's notes that were signed and shared with them, with
their amendments: what ``GET /notes/{id}`` shows them), ``prescriptions`` (received or written,
issued and cancelled, with number and verification code).

Erasure (inside ``accounts.services.user_delete``'s transaction): draft notes the user wrote,
or that are about them, are deleted (not yet a record). Signed notes, their amendments and
prescriptions are kept, as the law requires of a clinical record: the database would refuse to
change or delete them anyway (migration ``0002_append_only``). They stay pseudonymised: they
point at the erased account's row, which keeps no name, phone number or profile (the patient's
date of birth goes with the profile), and documents show "(erased account)" for the name.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, Q

from accounts.models import User

from .models import NoteAmendment, Prescription, VisitNote


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _note(note: VisitNote) -> dict[str, Any]:
    return {
        "id": note.pk,
        "consultation_id": note.consultation_id,
        "doctor_id": note.author_id,
        "state": note.state,
        "reason": note.reason,
        "findings": note.findings,
        "assessment": note.assessment,
        "plan": note.plan,
        "follow_up": note.follow_up,
        "codes": note.codes,
        "created_at": _iso(note.created_at),
        "signed_at": _iso(note.signed_at),
        "shared_at": _iso(note.shared_at),
        "amendments": [
            {
                "id": a.pk,
                "author_id": a.author_id,
                "created_at": _iso(a.created_at),
                "reason": a.reason,
                "text": a.text,
            }
            for a in note.amendments.all()
        ],
    }


def _prescription(p: Prescription, user: User) -> dict[str, Any]:
    return {
        "id": p.pk,
        "role": "patient" if p.patient_id == user.pk else "doctor",
        "number": p.number,
        "verification_code": p.verification_code,
        "consultation_id": p.consultation_id,
        "patient_id": p.patient_id,
        "doctor_id": p.doctor_id,
        "doctor_licence_number": p.doctor_licence_number,
        "jurisdiction": p.jurisdiction,
        "medication_name": p.medication_name,
        "strength": p.strength,
        "form": p.form,
        "dose": p.dose,
        "route": p.route,
        "frequency": p.frequency,
        "duration": p.duration,
        "quantity": p.quantity,
        "repeats": p.repeats,
        "instructions": p.instructions,
        "status": p.status,
        "issued_at": _iso(p.issued_at),
        "cancelled_at": _iso(p.cancelled_at),
        "cancel_reason": p.cancel_reason,
    }


def export_user_records(user: User) -> dict[str, Any]:
    notes = VisitNote.objects.prefetch_related(
        Prefetch("amendments", queryset=NoteAmendment.objects.order_by("id"))
    ).order_by("id")
    return {
        "notes_written": [_note(n) for n in notes.filter(author=user)],
        "notes_received": [
            _note(n)
            for n in notes.filter(
                consultation__patient=user, state=VisitNote.State.SIGNED, shared_at__isnull=False
            )
        ],
        "prescriptions": [
            _prescription(p, user)
            for p in Prescription.objects.filter(Q(patient=user) | Q(doctor=user)).order_by("id")
        ],
    }


def erase_user_records(user: User) -> None:
    VisitNote.objects.filter(
        Q(author=user) | Q(consultation__patient=user), state=VisitNote.State.DRAFT
    ).delete()
