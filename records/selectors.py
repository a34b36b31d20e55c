"""Reads of the clinical record, scoped to the caller; and the plain data the PDFs are made from.

Caller-scoped (REST): ``note_get``, ``notes_for_consultation``, ``prescription_list``,
``prescription_get``: the consultation's doctor sees everything of it; its patient sees signed
notes once shared (with their amendments) and every prescription; anyone else gets the same
404 as for an id that does not exist. ``prescription_verify``: the public check (no caller).

Document data (no caller: the code that renders a document checks access first):
``prescription_document_data(p)``, ``prescriptions_for(consultation)`` and
``shared_notes_for(consultation)`` return frozen dataclasses of plain values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Prefetch, Q, QuerySet

from accounts.models import DoctorProfile, PatientProfile, User
from core.errors import NotFound
from payments import selectors as payment_selectors
from payments.models import Consultation

from . import validators as v
from .models import NoteAmendment, Prescription, VisitNote

VERIFY_PATH = "/api/v1/prescriptions/verify/{code}"
ERASED_NAME = "(erased account)"


def _note_not_found() -> NotFound:
    return NotFound("No such note.", code="note_not_found")


def _notes() -> QuerySet[VisitNote]:
    return VisitNote.objects.select_related("consultation", "author").prefetch_related(
        Prefetch("amendments", queryset=NoteAmendment.objects.select_related("author").order_by("id"))
    )


def note_visible_to(note: VisitNote, user: User) -> bool:
    consultation = note.consultation
    if user.pk == consultation.doctor_id:
        return True
    return user.pk == consultation.patient_id and note.is_signed and note.shared_at is not None


def note_get(*, user: User, note_id: int, for_update: bool = False) -> VisitNote:
    """One note the caller may read (``note_not_found`` otherwise); ``for_update`` locks it."""
    qs = (
        VisitNote.objects.select_for_update(of=("self",)).select_related("consultation")
        if for_update
        else _notes()
    )
    note = qs.filter(pk=note_id).first()
    if note is None or not note_visible_to(note, user):
        raise _note_not_found()
    return note


def notes_for_consultation(*, user: User, consultation_id: int) -> list[VisitNote]:
    """The consultation's note as the caller may see it (0 or 1): its doctor, draft or signed;
    its patient, once signed and shared. Not a participant: ``consultation_not_found``."""
    consultation = payment_selectors.consultation_get(user=user, consultation_id=consultation_id)
    qs = _notes().filter(consultation=consultation)
    if user.pk != consultation.doctor_id:
        qs = qs.filter(state=VisitNote.State.SIGNED, shared_at__isnull=False)
    return list(qs.order_by("id"))


def prescription_list(*, user: User, consultation_id: int | None = None) -> QuerySet[Prescription]:
    """Prescriptions the caller received or wrote, newest first (optionally of one consultation)."""
    qs = Prescription.objects.filter(Q(patient=user) | Q(doctor=user)).select_related("doctor", "patient")
    if consultation_id is not None:
        qs = qs.filter(consultation_id=consultation_id)
    return qs.order_by("-id")


def prescription_get(*, user: User, prescription_id: int, for_update: bool = False) -> Prescription:
    """One prescription of the caller (patient or prescriber); ``prescription_not_found`` otherwise."""
    qs = (
        Prescription.objects.select_for_update(of=("self",))
        if for_update
        else Prescription.objects.select_related("doctor", "patient")
    )
    p = qs.filter(Q(patient=user) | Q(doctor=user), pk=prescription_id).first()
    if p is None:
        raise NotFound("No such prescription.", code="prescription_not_found")
    return p


# --- The public check ------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """What a pharmacist's check learns: never the patient, the medication or the dose."""

    status: str  # "valid" | "cancelled"
    number: str
    issued_at: dt.datetime
    prescriber_name: str
    prescriber_licence_number: str
    jurisdiction: str


def prescription_verify(*, code: str) -> tuple[Prescription, Verification]:
    """The prescription a verification code names (``prescription_not_found`` for any other
    string, malformed or unknown alike)."""
    normalised = v.normalise_verification_code(code)
    p = (
        Prescription.objects.select_related("doctor").filter(verification_code=normalised).first()
        if normalised
        else None
    )
    if p is None:
        raise NotFound("No prescription has this verification code.", code="prescription_not_found")
    return p, Verification(
        status="cancelled" if p.is_cancelled else "valid",
        number=p.number,
        issued_at=p.issued_at,
        prescriber_name=_name(p.doctor),
        prescriber_licence_number=p.doctor_licence_number,
        jurisdiction=p.jurisdiction,
    )


# --- Document data (for the PDFs) ------------------------------------------------------------
def _name(user: User) -> str:
    return ERASED_NAME if user.is_deleted else user.display_name


@dataclass(frozen=True)
class PrescriptionDocument:
    """Everything a prescription's document shows (``verify_path``: what its QR code links to,
    relative to the public base URL)."""

    id: int
    number: str
    verification_code: str
    verify_path: str
    status: str  # "issued" | "cancelled"
    issued_at: dt.datetime
    cancelled_at: dt.datetime | None
    cancel_reason: str
    consultation_id: int
    doctor_id: int
    doctor_name: str
    doctor_licence_number: str
    jurisdiction: str
    doctor_specialty: str
    patient_id: int
    patient_name: str
    patient_date_of_birth: dt.date | None
    medication_name: str
    strength: str
    form: str
    dose: str
    route: str
    frequency: str
    duration: str
    quantity: int
    repeats: int
    instructions: str


def _documents(prescriptions: list[Prescription]) -> list[PrescriptionDocument]:
    user_ids = {p.patient_id for p in prescriptions} | {p.doctor_id for p in prescriptions}
    users = User.objects.in_bulk(list(user_ids))
    births = dict(PatientProfile.objects.filter(user_id__in=user_ids).values_list("user_id", "date_of_birth"))
    specialties = dict(
        DoctorProfile.objects.filter(user_id__in=user_ids).values_list("user_id", "specialty__name")
    )
    return [
        PrescriptionDocument(
            id=p.pk,
            number=p.number,
            verification_code=p.verification_code,
            verify_path=VERIFY_PATH.format(code=p.verification_code),
            status=p.status,
            issued_at=p.issued_at,
            cancelled_at=p.cancelled_at,
            cancel_reason=p.cancel_reason,
            consultation_id=p.consultation_id,
            doctor_id=p.doctor_id,
            doctor_name=_name(users[p.doctor_id]),
            doctor_licence_number=p.doctor_licence_number,
            jurisdiction=p.jurisdiction,
            doctor_specialty=specialties.get(p.doctor_id) or "",
            patient_id=p.patient_id,
            patient_name=_name(users[p.patient_id]),
            patient_date_of_birth=births.get(p.patient_id),
            medication_name=p.medication_name,
            strength=p.strength,
            form=p.form,
            dose=p.dose,
            route=p.route,
            frequency=p.frequency,
            duration=p.duration,
            quantity=p.quantity,
            repeats=p.repeats,
            instructions=p.instructions,
        )
        for p in prescriptions
    ]


def prescription_document_data(p: Prescription) -> PrescriptionDocument:
    """One prescription's document data (3 queries)."""
    return _documents([p])[0]


def prescriptions_for(consultation: Consultation) -> list[PrescriptionDocument]:
    """Every prescription of the consultation (issued and cancelled), oldest first."""
    return _documents(list(Prescription.objects.filter(consultation=consultation).order_by("id")))


@dataclass(frozen=True)
class NoteCode:
    system: str
    code: str
    display: str


@dataclass(frozen=True)
class AmendmentView:
    id: int
    author_id: int
    author_name: str
    created_at: dt.datetime
    reason: str
    text: str


@dataclass(frozen=True)
class SharedNote:
    """A signed note its patient may read, with its amendments (oldest first)."""

    id: int
    consultation_id: int
    doctor_id: int
    doctor_name: str
    reason: str
    findings: str
    assessment: str
    plan: str
    follow_up: str
    codes: tuple[NoteCode, ...]
    signed_at: dt.datetime
    shared_at: dt.datetime
    amendments: tuple[AmendmentView, ...]


def shared_notes_for(consultation: Consultation) -> list[SharedNote]:
    """The consultation's signed and shared notes (drafts and unshared notes never)."""
    notes = _notes().filter(consultation=consultation, state=VisitNote.State.SIGNED, shared_at__isnull=False)
    out: list[SharedNote] = []
    for note in notes.order_by("id"):
        assert note.signed_at is not None
        assert note.shared_at is not None
        out.append(
            SharedNote(
                id=note.pk,
                consultation_id=note.consultation_id,
                doctor_id=note.author_id,
                doctor_name=_name(note.author),
                reason=note.reason,
                findings=note.findings,
                assessment=note.assessment,
                plan=note.plan,
                follow_up=note.follow_up,
                codes=tuple(NoteCode(c["system"], c["code"], c.get("display", "")) for c in note.codes),
                signed_at=note.signed_at,
                shared_at=note.shared_at,
                amendments=tuple(
                    AmendmentView(
                        id=a.pk,
                        author_id=a.author_id,
                        author_name=_name(a.author),
                        created_at=a.created_at,
                        reason=a.reason,
                        text=a.text,
                    )
                    for a in note.amendments.all()
                ),
            )
        )
    return out
