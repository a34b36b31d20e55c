"""The frames the server sends about appointments, typed (registered with messaging's protocol in
``AppointmentsConfig.ready``): ``appointment.updated``, a hint that one of the user's
appointments changed state (``GET /api/v1/appointments/{id}`` is the truth; not replayed); the
waiting room's ``waiting_room.updated`` (to the doctor) and ``waiting_room.position`` (to each
waiting patient) (``appointments.queue``); the ``ack`` data of ``appointment.check_in`` and
``waiting_room.admit``; and ``on_demand.updated`` about the on-demand queue by specialty
(``appointments.on_demand``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from calls.frames import Call
from messaging.frames import EventFrame, WireModel
from payments.frames import ConsultationSummary


class AppointmentSummary(WireModel):
    """An appointment as ``appointment.updated`` carries it (``services.appointment_data``)."""

    id: int
    patient_id: int
    doctor_id: int
    state: Literal[
        "held",
        "confirmed",
        "released",
        "cancelled",
        "no_show_doctor",
        "checked_in",
        "admitted",
        "no_show_patient",
    ]
    starts_at: str
    ends_at: str
    consultation_id: int | None
    checked_in_at: str | None
    admitted_at: str | None


class AppointmentUpdatedData(WireModel):
    appointment: AppointmentSummary


class AppointmentUpdatedFrame(EventFrame):
    """An appointment of the user was held, confirmed, released or cancelled (a hint)."""

    type: Literal["appointment.updated"]
    data: AppointmentUpdatedData


class WaitingEntry(WireModel):
    """A checked-in patient in the doctor's queue (patient id and display name only)."""

    appointment_id: int
    patient_id: int
    display_name: str
    checked_in_at: str
    starts_at: str
    position: int
    estimated_wait_seconds: int


class WaitingRoomData(WireModel):
    doctor_id: int
    as_of: str
    queue: list[WaitingEntry]


class WaitingRoomUpdatedFrame(EventFrame):
    """The doctor's waiting room changed (a check-in, an admission, a cancel, a no-show): the
    whole queue, in order. Keep the newest ``as_of``; ``GET waiting-room`` is the truth."""

    type: Literal["waiting_room.updated"]
    data: WaitingRoomData


class WaitingPosition(WireModel):
    """A waiting patient's place: ``position`` 1 is next; the estimate is in docs/appointments.md."""

    appointment_id: int
    doctor_id: int
    position: int
    ahead: int
    estimated_wait_seconds: int
    as_of: str


class WaitingRoomPositionFrame(EventFrame):
    """The patient's place in the waiting room changed (or was re-estimated)."""

    type: Literal["waiting_room.position"]
    data: WaitingPosition


class CheckInAck(WireModel):
    """``appointment.check_in``: the appointment (``checked_in``) and the patient's place."""

    appointment: AppointmentSummary
    position: WaitingPosition | None


class CallError(WireModel):
    code: str
    message: str


class AdmitAck(WireModel):
    """``waiting_room.admit``: the appointment (``admitted``), its consultation (open), and the
    call when ``start_call`` was asked (``call_error`` when it could not start)."""

    appointment: AppointmentSummary
    consultation: ConsultationSummary
    call: Call | None
    call_error: CallError | None


class OnDemandSummary(WireModel):
    """An on-demand request as ``on_demand.updated`` carries it (``on_demand.request_data``):
    never the reason or the patient (a doctor reads those in ``GET /api/v1/on-demand``)."""

    id: int
    specialty: str
    kind: Literal["chat", "voice", "video"]
    state: Literal["open", "accepted", "cancelled", "expired"]
    created_at: str
    expires_at: str
    doctor_id: int | None
    consultation_id: int | None


class OnDemandUpdatedData(WireModel):
    request: OnDemandSummary


class OnDemandUpdatedFrame(EventFrame):
    """An on-demand request was opened (to the doctors who can take it), accepted (the patient
    learns the doctor and the consultation; the other doctors drop it), cancelled or expired."""

    type: Literal["on_demand.updated"]
    data: OnDemandUpdatedData


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (
    AppointmentUpdatedFrame,
    WaitingRoomUpdatedFrame,
    WaitingRoomPositionFrame,
    OnDemandUpdatedFrame,
)
ACK_MODELS: tuple[type[BaseModel], ...] = (CheckInAck, AdmitAck)
