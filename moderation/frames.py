"""The frames the server sends about reports and moderation (registered with messaging's protocol
in ``ModerationConfig.ready``), to every device of one user, not logged, not replayed by ``sync``
(hints: the REST lists are the truth):

- ``report.updated``: to the reporter, when staff take their report (``in_review``) or resolve it
  (``resolved``, with its ``outcome``); ``GET /api/v1/reports``.
- ``moderation.notice``: to a user staff warned or muted; ``GET /api/v1/moderation/notices``.

And the send path's error ``sender_muted`` (a muted user's ``message.send`` / ``message.edit``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from messaging.frames import EventFrame, WireModel


class ReportSummary(WireModel):
    """A report as its reporter sees it (``moderation.selectors.report_data``)."""

    id: int
    target: Literal["message", "user"]
    message_id: int | None
    conversation_id: int | None
    user_id: int = Field(description="the user reported (a message's sender)")
    reason: Literal["spam", "abuse", "harassment", "inappropriate", "privacy", "other"]
    text: str
    shared_text: str | None = Field(description="encrypted conversations: the text the reporter shared")
    unverified: bool = Field(description="true when shared_text is given: the server cannot check it")
    status: Literal["open", "in_review", "resolved"]
    outcome: Literal["warn", "mute", "deactivate", "dismiss"] | None = Field(
        description="resolved: what the moderators did"
    )
    created_at: str
    resolved_at: str | None


class ReportUpdatedData(WireModel):
    report: ReportSummary


class ReportUpdatedFrame(EventFrame):
    """One of the caller's reports changed status (taken in review, or resolved with its outcome)."""

    type: Literal["report.updated"]
    data: ReportUpdatedData


class NoticeSummary(WireModel):
    """What moderators did to the caller's account (``moderation.selectors.notice_data``)."""

    id: int
    action: Literal["warn", "mute", "deactivate"]
    text: str
    muted_until: str | None = Field(description="mute: until when sending and editing are refused")
    created_at: str


class ModerationNoticeData(WireModel):
    notice: NoticeSummary


class ModerationNoticeFrame(EventFrame):
    """A moderator warned or muted the caller."""

    type: Literal["moderation.notice"]
    data: ModerationNoticeData


SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (ReportUpdatedFrame, ModerationNoticeFrame)
ERROR_CODES: tuple[str, ...] = ("sender_muted",)
