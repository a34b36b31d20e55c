"""Reads of scheduled messages: only their author's, and their wire shape."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from core.errors import NotFound

from .models import ScheduledMessage


def scheduled_list(*, user: User, state: str | None = None) -> QuerySet[ScheduledMessage]:
    qs = ScheduledMessage.objects.filter(author=user)
    if state is not None:
        qs = qs.filter(state=state)
    return qs


def scheduled_get(*, user: User, scheduled_id: int) -> ScheduledMessage:
    """The author's own; 404 for anyone else's (no hint that it exists)."""
    row = ScheduledMessage.objects.filter(pk=scheduled_id, author=user).first()
    if row is None:
        raise NotFound("No such scheduled message.", code="scheduled_message_not_found")
    return row


def scheduled_data(row: ScheduledMessage) -> dict[str, Any]:
    return {
        "id": row.pk,
        "conversation_id": row.conversation_id,
        "client_id": str(row.client_id),
        "body": row.body,
        "send_at": row.send_at.isoformat(),
        "state": row.state,
        "message_id": row.message_id,
        "failure_code": row.failure_code or None,
        "consultation_id": row.bindings.get("consultation"),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
