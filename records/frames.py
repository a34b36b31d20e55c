"""The frames the server sends about the clinical record, typed (registered with messaging's
protocol in ``RecordsConfig.ready``). Each is a hint to the consultation's patient and doctor
(every socket of each); the REST resources are the truth; not replayed by ``sync``.

- ``visit_note.shared``: a signed note became readable by the patient.
- ``visit_note.amended``: an amendment was added to a shared note.
- ``prescription.issued`` / ``prescription.cancelled``.

They carry ids, states and times, never the note's or the prescription's text.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from messaging.frames import EventFrame, WireModel


class NoteEvent(WireModel):
    """A note as ``visit_note.*`` carries it (``services.note_event_data``)."""

    id: int
    consultation_id: int
    doctor_id: int
    state: Literal["signed"]
    signed_at: str
    shared_at: str
    amendment_count: int


class NoteEventData(WireModel):
    note: NoteEvent


class VisitNoteSharedFrame(EventFrame):
    """The doctor shared a signed visit note: ``GET /api/v1/notes/{id}`` reads it."""

    type: Literal["visit_note.shared"]
    data: NoteEventData


class VisitNoteAmendedFrame(EventFrame):
    """An amendment was appended to a shared visit note (``amendment_count`` is the new total)."""

    type: Literal["visit_note.amended"]
    data: NoteEventData


class PrescriptionEvent(WireModel):
    """A prescription as ``prescription.*`` carries it (``services.prescription_event_data``)."""

    id: int
    number: str
    consultation_id: int
    patient_id: int
    doctor_id: int
    status: Literal["issued", "cancelled"]
    issued_at: str
    cancelled_at: str | None


class PrescriptionEventData(WireModel):
    prescription: PrescriptionEvent


class PrescriptionIssuedFrame(EventFrame):
    """The doctor issued a prescription: ``GET /api/v1/prescriptions/{id}`` reads it."""

    type: Literal["prescription.issued"]
    data: PrescriptionEventData


class PrescriptionCancelledFrame(EventFrame):
    """The doctor cancelled a prescription (its verification now answers ``cancelled``)."""

    type: Literal["prescription.cancelled"]
    data: PrescriptionEventData


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (
    VisitNoteSharedFrame,
    VisitNoteAmendedFrame,
    PrescriptionIssuedFrame,
    PrescriptionCancelledFrame,
)
