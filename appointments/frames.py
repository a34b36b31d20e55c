"""The frame the server sends about appointments, typed (registered with messaging's protocol in
``AppointmentsConfig.ready``): ``appointment.updated``, a hint that one of the user's
appointments changed state (``GET /api/v1/appointments/{id}`` is the truth; not replayed)."""

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


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (AppointmentUpdatedFrame,)
