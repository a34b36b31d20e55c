"""The frame the server sends about scheduled messages (registered with messaging's protocol in
``ScheduledConfig.ready``): ``scheduled_message.updated``, to every device of the author when one
of their scheduled messages is created, edited, cancelled, sent or refused at send time (a
hint: ``GET /api/v1/scheduled-messages`` is the truth; not logged, not replayed by ``sync``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from messaging.frames import EventFrame, WireModel


class ScheduledMessageSummary(WireModel):
    """A scheduled message as its author sees it (``scheduled.selectors.scheduled_data``)."""

    id: int
    conversation_id: int
    client_id: str
    body: str
    send_at: str
    state: Literal["pending", "sent", "failed", "cancelled"]
    message_id: int | None
    failure_code: str | None
    consultation_id: int | None
    created_at: str
    updated_at: str


class ScheduledMessageUpdatedData(WireModel):
    scheduled_message: ScheduledMessageSummary


class ScheduledMessageUpdatedFrame(EventFrame):
    """One of the author's scheduled messages changed (``failed``: refused at send time, with the
    send path's error code in ``failure_code``)."""

    type: Literal["scheduled_message.updated"]
    data: ScheduledMessageUpdatedData


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (ScheduledMessageUpdatedFrame,)
