"""The frame the server sends about consultations, typed (registered with messaging's protocol in
``PaymentsConfig.ready``): ``consultation.updated``, a hint that one of the user's consultations
changed state (``GET /api/v1/consultations/{id}`` is the truth; not logged, not replayed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from messaging.frames import EventFrame, WireModel


class ConsultationSummary(WireModel):
    """A consultation as ``consultation.updated`` carries it (``payments.services.consultation_data``)."""

    id: int
    patient_id: int
    doctor_id: int
    kind: Literal["chat", "voice", "video"]
    state: Literal[
        "requested",
        "paid",
        "accepted",
        "in_progress",
        "completed",
        "declined",
        "cancelled",
        "expired",
        "refunded",
    ]
    price: int
    currency: str
    conversation_id: int


class ConsultationUpdatedData(WireModel):
    consultation: ConsultationSummary


class ConsultationUpdatedFrame(EventFrame):
    """A consultation of the user's changed state (a hint: ``GET consultations/{id}`` is the truth)."""

    type: Literal["consultation.updated"]
    data: ConsultationUpdatedData


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (ConsultationUpdatedFrame,)
