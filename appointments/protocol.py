"""The frames clients send about appointments, typed (registered with messaging's protocol in
``AppointmentsConfig.ready``; handled by ``appointments/handlers.py``)."""

from __future__ import annotations

from typing import Literal

from messaging.protocol import BigInt, ClientFrameModel, FrameData


class AppointmentIdData(FrameData):
    appointment_id: BigInt


class AdmitData(FrameData):
    appointment_id: BigInt
    start_call: Literal["audio", "video"] | None = None
    sdp: str | None = None


class AppointmentCheckInFrame(ClientFrameModel):
    """The patient checks in (``ack {appointment, position}``)."""

    type: Literal["appointment.check_in"]
    data: AppointmentIdData


class WaitingRoomAdmitFrame(ClientFrameModel):
    """The doctor admits a checked-in patient; with ``start_call`` and ``sdp`` a call starts from
    this socket (``ack {appointment, consultation, call, call_error}``)."""

    type: Literal["waiting_room.admit"]
    data: AdmitData


CLIENT_FRAME_MODELS: tuple[type[ClientFrameModel], ...] = (AppointmentCheckInFrame, WaitingRoomAdmitFrame)

# The codes these frames can answer with (``error`` frames; docs/protocol.md).
ERROR_CODES: tuple[str, ...] = (
    "appointment_not_found",
    "not_the_patient",
    "not_the_doctor",
    "appointment_not_confirmed",
    "appointment_closed",
    "already_admitted",
    "check_in_too_early",
    "check_in_closed",
    "patient_not_waiting",
    "invalid_media",
    "invalid_sdp",
    "sdp_too_large",
    "consultation_not_found",
    "not_allowed",
    "invalid_transition",
    "payment_not_authorised",
    "payment_not_captured",
    "payment_provider_error",
    "payments_unavailable",
)
