"""The frame the server sends about appointments, typed (registered with messaging's protocol in
``AppointmentsConfig.ready``): ``appointment.updated``, a hint that one of the user's
appointments changed state (``GET /api/v1/appointments/{id}`` is the truth; not replayed), and
``on_demand.updated`` about the on-demand queue by specialty (``appointments.on_demand``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from messaging.frames import EventFrame, WireModel


class AppointmentSummary(WireModel):
    """An appointment as ``appointment.updated`` carries it (``services.appointment_data``)."""

    id: int
    patient_id: int
    doctor_id: int
    state: Literal["held", "confirmed", "released", "cancelled", "no_show_doctor"]
    starts_at: str
    ends_at: str
    consultation_id: int | None


class AppointmentUpdatedData(WireModel):
    appointment: AppointmentSummary


class AppointmentUpdatedFrame(EventFrame):
    """An appointment of the user was held, confirmed, released or cancelled (a hint)."""

    type: Literal["appointment.updated"]
    data: AppointmentUpdatedData


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


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (AppointmentUpdatedFrame, OnDemandUpdatedFrame)
