"""The clinical record's actions: one function each, owning its transaction.

Visit notes: ``note_create`` (a draft), ``note_update`` and ``note_delete`` (drafts only),
``note_sign`` (final; optionally shared at once), ``note_share`` (the patient may read it),
``amendment_add`` (the only way to correct a signed note). Prescriptions: ``prescription_issue``
(checked by ``check_can_prescribe``) and ``prescription_cancel``. Live events go out after
commit (``visit_note.shared``, ``visit_note.amended``, ``prescription.issued``,
``prescription.cancelled``) to the patient's and the doctor's sockets.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import DoctorProfile, User
from audit import actions as audited
from audit import services as audit
from audit.client import Client
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import fan_out_on_commit
from payments.models import Consultation

from . import selectors
from . import validators as v
from .models import NoteAmendment, Prescription, VisitNote

logger = logging.getLogger("healthchat.records")

NUMBER_PREFIX = "RX"
_ATTEMPTS = 5


# --- Shared checks ----------------------------------------------------------------------------
def _consultation_of_doctor(*, user: User, consultation_id: int, lock: bool = False) -> Consultation:
    """The consultation if ``user`` is its doctor; its patient: ``not_the_doctor`` (403); anyone
    else cannot tell it exists (``consultation_not_found``, 404)."""
    qs = Consultation.objects.select_for_update() if lock else Consultation.objects.all()
    consultation = qs.filter(pk=consultation_id).first()
    if consultation is None or user.pk not in (consultation.patient_id, consultation.doctor_id):
        raise NotFound("No such consultation.", code="consultation_not_found")
    if consultation.doctor_id != user.pk:
        raise PermissionDenied("Only the consultation's doctor can do this.", code="not_the_doctor")
    return consultation


def _note_of_doctor(*, user: User, note_id: int) -> VisitNote:
    """A note (locked) the caller may write: its consultation's doctor. A patient who can read
    it: ``not_the_doctor``; anyone else: ``note_not_found``."""
    note = selectors.note_get(user=user, note_id=note_id, for_update=True)
    if note.consultation.doctor_id != user.pk:
        raise PermissionDenied("Only the consultation's doctor can do this.", code="not_the_doctor")
    return note


def _note_fields(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in v.NOTE_TEXT_FIELDS:
        if name in data:
            out[name] = v.text(data[name], field=name, max_length=v.NOTE_TEXT_MAX)
    if "codes" in data:
        out["codes"] = v.note_codes(data["codes"])
    return out


def note_event_data(note: VisitNote) -> dict[str, Any]:
    """A note as its live events carry it (ids and times: ``GET /notes/{id}`` has the text)."""
    return {
        "id": note.pk,
        "consultation_id": note.consultation_id,
        "doctor_id": note.author_id,
        "state": note.state,
        "signed_at": note.signed_at.isoformat() if note.signed_at else None,
        "shared_at": note.shared_at.isoformat() if note.shared_at else None,
        "amendment_count": note.amendments.count(),
    }


def _announce_note(note: VisitNote, frame_type: str) -> None:
    fan_out_on_commit(
        user_ids=[note.consultation.patient_id, note.consultation.doctor_id],
        frame={"type": frame_type, "data": {"note": note_event_data(note)}},
    )


# --- Visit notes ------------------------------------------------------------------------------
def note_create(
    *, doctor: User, consultation_id: int, data: dict[str, Any], client: Client | None = None
) -> VisitNote:
    """A draft note for a consultation the doctor took (one per consultation: ``note_exists``)."""
    fields = _note_fields(data)
    with transaction.atomic():
        consultation = _consultation_of_doctor(user=doctor, consultation_id=consultation_id, lock=True)
        if consultation.state not in v.NOTE_CONSULTATION_STATES:
            raise ApplicationError(
                "consultation_not_eligible",
                "A note can be written once the doctor has accepted the consultation.",
                status=409,
                extra={"state": consultation.state},
            )
        existing = VisitNote.objects.filter(consultation=consultation).values_list("pk", flat=True).first()
        if existing is not None:
            raise ApplicationError(
                "note_exists",
                "This consultation has a note already: edit the draft, or amend the signed note.",
                status=409,
                extra={"note_id": existing},
            )
        now = timezone.now()
        note = VisitNote.objects.create(
            consultation=consultation, author=doctor, created_at=now, updated_at=now, **fields
        )
        audit.record(
            audited.VISIT_NOTE_WRITE, actor=doctor, object_type="visit_note", object_id=note.pk, client=client
        )
    return note


def note_update(
    *, doctor: User, note_id: int, data: dict[str, Any], client: Client | None = None
) -> VisitNote:
    """Change a draft's fields (the ones given); a signed note: ``note_signed`` (amend it)."""
    fields = _note_fields(data)
    with transaction.atomic():
        note = _note_of_doctor(user=doctor, note_id=note_id)
        _require_draft(note)
        for name, value in fields.items():
            setattr(note, name, value)
        note.updated_at = timezone.now()
        note.save(update_fields=[*fields, "updated_at"])
        audit.record(
            audited.VISIT_NOTE_WRITE, actor=doctor, object_type="visit_note", object_id=note.pk, client=client
        )
    return note


def note_delete(*, doctor: User, note_id: int, client: Client | None = None) -> None:
    """Discard a draft; a signed note is never deleted (``note_signed``)."""
    with transaction.atomic():
        note = _note_of_doctor(user=doctor, note_id=note_id)
        _require_draft(note)
        pk = note.pk
        note.delete()
        audit.record(
            audited.VISIT_NOTE_DELETE, actor=doctor, object_type="visit_note", object_id=pk, client=client
        )


def _require_draft(note: VisitNote) -> None:
    if note.is_signed:
        raise ApplicationError(
            "note_signed", "A signed note cannot be changed: add an amendment instead.", status=409
        )


def note_sign(*, doctor: User, note_id: int, share: bool = False, client: Client | None = None) -> VisitNote:
    """Sign a draft (final from now on); ``share``: the patient may read it at once. A note with
    every text field blank: ``note_empty``; already signed: ``note_signed``."""
    with transaction.atomic():
        note = _note_of_doctor(user=doctor, note_id=note_id)
        _require_draft(note)
        if not any(getattr(note, name).strip() for name in v.NOTE_TEXT_FIELDS):
            raise ApplicationError(
                "note_empty", "A note needs some text in at least one field before it is signed.", status=400
            )
        now = timezone.now()
        note.state = VisitNote.State.SIGNED
        note.signed_at = now
        note.updated_at = now
        if share:
            note.shared_at = now
        note.save(update_fields=["state", "signed_at", "updated_at", "shared_at"])
        audit.record(
            audited.VISIT_NOTE_SIGN, actor=doctor, object_type="visit_note", object_id=note.pk, client=client
        )
        if share:
            _announce_note(note, "visit_note.shared")
    logger.info("visit note %s signed%s", note.pk, " and shared" if share else "")
    return note


def note_share(*, doctor: User, note_id: int, client: Client | None = None) -> VisitNote:
    """Let the patient read a signed note (idempotent); a draft: ``note_not_signed``."""
    with transaction.atomic():
        note = _note_of_doctor(user=doctor, note_id=note_id)
        if not note.is_signed:
            raise ApplicationError("note_not_signed", "Sign the note before sharing it.", status=409)
        if note.shared_at is None:
            note.shared_at = timezone.now()
            # The one change the database allows on a signed note (migration 0002_append_only).
            note.save(update_fields=["shared_at"])
            audit.record(
                audited.VISIT_NOTE_SHARE,
                actor=doctor,
                object_type="visit_note",
                object_id=note.pk,
                client=client,
            )
            _announce_note(note, "visit_note.shared")
    return note


def amendment_add(
    *, doctor: User, note_id: int, reason: Any, text: Any, client: Client | None = None
) -> NoteAmendment:
    """Correct a signed note: who, when, why and what, kept beside it (a draft: edit it instead,
    ``note_not_signed``). A shared note's patient is told (``visit_note.amended``)."""
    reason_text = v.text(reason, field="reason", max_length=v.AMENDMENT_REASON_MAX)
    body = v.text(text, field="text", max_length=v.NOTE_TEXT_MAX)
    if missing := v.required_missing(reason_text, "reason"):
        raise ApplicationError(
            "reason_required", "An amendment says why the note is corrected.", fields=missing
        )
    if missing := v.required_missing(body, "text"):
        raise ApplicationError("text_required", "An amendment needs its text.", fields=missing)
    with transaction.atomic():
        note = _note_of_doctor(user=doctor, note_id=note_id)
        if not note.is_signed:
            raise ApplicationError(
                "note_not_signed", "A draft is edited, not amended: sign it first.", status=409
            )
        amendment = NoteAmendment.objects.create(note=note, author=doctor, reason=reason_text, text=body)
        audit.record(
            audited.VISIT_NOTE_AMEND, actor=doctor, object_type="visit_note", object_id=note.pk, client=client
        )
        if note.shared_at is not None:
            _announce_note(note, "visit_note.amended")
    return amendment


# --- Prescriptions ----------------------------------------------------------------------------
def _random(length: int) -> str:
    return "".join(secrets.choice(v.CODE_ALPHABET) for _ in range(length))


def new_number() -> str:
    """``RX-XXXX-XXXX`` (Crockford base32: easy to read out and type)."""
    return f"{NUMBER_PREFIX}-{_random(4)}-{_random(4)}"


def new_verification_code() -> str:
    return _random(v.VERIFICATION_CODE_LENGTH)


def check_can_prescribe(
    *, doctor: User, consultation: Consultation, jurisdiction: str | None, now: dt.datetime
) -> DoctorProfile:
    """The prescriber's profile, if they may prescribe in this consultation now: verified
    (``doctor_not_verified``), licence not expired (``licence_expired``), for their own
    jurisdiction (``outside_jurisdiction``), in an open consultation or one completed within
    HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS (``consultation_not_eligible``)."""
    profile = DoctorProfile.objects.filter(user_id=doctor.pk).first()
    if profile is None or not profile.is_verified:
        raise PermissionDenied(
            "Only a doctor whose credentials staff have verified can prescribe.", code="doctor_not_verified"
        )
    if profile.licence_expires_on is not None and profile.licence_expires_on < now.date():
        raise PermissionDenied("Your licence has expired: prescribing is suspended.", code="licence_expired")
    if jurisdiction is not None and jurisdiction.strip().casefold() != profile.jurisdiction.casefold():
        raise PermissionDenied(
            "A prescription can only be issued within the jurisdiction of your verified licence.",
            code="outside_jurisdiction",
        )
    if not consultation_open_for_prescribing(consultation, now=now):
        raise ApplicationError(
            "consultation_not_eligible",
            "Prescriptions are issued in an accepted or in-progress consultation, or within "
            f"{settings.HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS} days of its completion.",
            status=409,
            extra={"state": consultation.state},
        )
    return profile


def consultation_open_for_prescribing(consultation: Consultation, *, now: dt.datetime) -> bool:
    if consultation.state in v.PRESCRIPTION_OPEN_STATES:
        return True
    if consultation.state == Consultation.State.COMPLETED and consultation.completed_at is not None:
        window = dt.timedelta(days=settings.HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS)
        return consultation.completed_at >= now - window
    return False


def _prescription_fields(data: dict[str, Any]) -> dict[str, Any]:
    short = v.SHORT_FIELD_MAX
    out: dict[str, Any] = {
        "medication_name": v.text(
            data.get("medication_name"), field="medication_name", max_length=v.MEDICATION_NAME_MAX
        ),
        "strength": v.text(data.get("strength"), field="strength", max_length=short),
        "form": v.text(data.get("form"), field="form", max_length=short),
        "dose": v.text(data.get("dose"), field="dose", max_length=short),
        "route": v.text(data.get("route"), field="route", max_length=short),
        "frequency": v.text(data.get("frequency"), field="frequency", max_length=short),
        "duration": v.text(data.get("duration"), field="duration", max_length=short),
        "instructions": v.text(data.get("instructions"), field="instructions", max_length=v.INSTRUCTIONS_MAX),
    }
    if missing := v.required_missing(out["medication_name"], "medication_name"):
        raise ApplicationError("medication_required", "The medication's name is required.", fields=missing)
    if missing := v.required_missing(out["dose"], "dose"):
        raise ApplicationError("dose_required", "The dose is required.", fields=missing)
    if missing := v.required_missing(out["frequency"], "frequency"):
        raise ApplicationError("frequency_required", "The frequency is required.", fields=missing)
    out["quantity"] = v.quantity(data.get("quantity"))
    out["repeats"] = v.repeats(data.get("repeats"))
    return out


def prescription_event_data(p: Prescription) -> dict[str, Any]:
    """A prescription as its live events carry it (``GET /prescriptions/{id}`` has the rest)."""
    return {
        "id": p.pk,
        "number": p.number,
        "consultation_id": p.consultation_id,
        "patient_id": p.patient_id,
        "doctor_id": p.doctor_id,
        "status": p.status,
        "issued_at": p.issued_at.isoformat(),
        "cancelled_at": p.cancelled_at.isoformat() if p.cancelled_at else None,
    }


def _announce_prescription(p: Prescription, frame_type: str) -> None:
    fan_out_on_commit(
        user_ids=[p.patient_id, p.doctor_id],
        frame={"type": frame_type, "data": {"prescription": prescription_event_data(p)}},
    )


def prescription_issue(
    *, doctor: User, consultation_id: int, data: dict[str, Any], client: Client | None = None
) -> Prescription:
    """Issue a prescription to the consultation's patient (``check_can_prescribe``), with a new
    unique number and verification code; the patient is told (``prescription.issued``)."""
    jurisdiction = data.get("jurisdiction")
    if jurisdiction is not None and not isinstance(jurisdiction, str):
        raise ApplicationError(
            "invalid_jurisdiction", "jurisdiction must be text.", fields={"jurisdiction": ["wrong_type"]}
        )
    with transaction.atomic():
        consultation = _consultation_of_doctor(user=doctor, consultation_id=consultation_id, lock=True)
        now = timezone.now()
        profile = check_can_prescribe(
            doctor=doctor, consultation=consultation, jurisdiction=jurisdiction, now=now
        )
        fields = _prescription_fields(data)
        prescription = _insert_unique(
            consultation=consultation,
            doctor=doctor,
            patient_id=consultation.patient_id,
            doctor_licence_number=profile.licence_number,
            jurisdiction=profile.jurisdiction,
            issued_at=now,
            **fields,
        )
        audit.record(
            audited.PRESCRIPTION_ISSUE,
            actor=doctor,
            object_type="prescription",
            object_id=prescription.pk,
            client=client,
        )
        _announce_prescription(prescription, "prescription.issued")
    logger.info("prescription %s issued in consultation %s", prescription.pk, consultation.pk)
    return prescription


def _insert_unique(**values: Any) -> Prescription:
    """INSERT with a fresh number and code, again (in a savepoint) on the rare collision."""
    for attempt in range(_ATTEMPTS):
        try:
            with transaction.atomic():
                return Prescription.objects.create(
                    number=new_number(), verification_code=new_verification_code(), **values
                )
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def prescription_cancel(
    *, doctor: User, prescription_id: int, reason: Any, client: Client | None = None
) -> Prescription:
    """Cancel with a reason (``cancel_reason_required``); only its prescriber; once
    (``already_cancelled``). The patient is told (``prescription.cancelled``)."""
    reason_text = v.text(reason, field="reason", max_length=v.CANCEL_REASON_MAX)
    if missing := v.required_missing(reason_text, "reason"):
        raise ApplicationError(
            "cancel_reason_required", "A cancellation says why the prescription is cancelled.", fields=missing
        )
    with transaction.atomic():
        prescription = selectors.prescription_get(
            user=doctor, prescription_id=prescription_id, for_update=True
        )
        if prescription.doctor_id != doctor.pk:
            raise PermissionDenied("Only the prescriber can cancel a prescription.", code="not_the_doctor")
        if prescription.is_cancelled:
            raise ApplicationError("already_cancelled", "This prescription is cancelled already.", status=409)
        prescription.status = Prescription.Status.CANCELLED
        prescription.cancelled_at = timezone.now()
        prescription.cancelled_by = doctor
        prescription.cancel_reason = reason_text
        # The only columns the database lets change (migration 0002_append_only).
        prescription.save(update_fields=["status", "cancelled_at", "cancelled_by", "cancel_reason"])
        audit.record(
            audited.PRESCRIPTION_CANCEL,
            actor=doctor,
            object_type="prescription",
            object_id=prescription.pk,
            client=client,
        )
        _announce_prescription(prescription, "prescription.cancelled")
    return prescription
