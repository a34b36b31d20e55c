"""A conversation's counters under its row lock: the next seq and event number, or the lock alone."""

from __future__ import annotations

import logging

from django.db import connection
from django.utils import timezone

from core.errors import NotFound
from messaging.models import Conversation

logger = logging.getLogger("healthchat.messaging")


# --- Counters under the conversation's row lock ------------------------------------------
def allocate(conversation_id: int, *, message: bool) -> tuple[int, int]:
    """Take the next (seq, event number) for the conversation, locking its row until commit."""
    with connection.cursor() as cursor:
        if message:
            cursor.execute(
                "UPDATE messaging_conversation SET last_seq = last_seq + 1, last_event = last_event + 1,"
                " last_message_at = %s WHERE id = %s RETURNING last_seq, last_event",
                [timezone.now(), conversation_id],
            )
        else:
            cursor.execute(
                "UPDATE messaging_conversation SET last_event = last_event + 1"
                " WHERE id = %s RETURNING last_seq, last_event",
                [conversation_id],
            )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return int(row[0]), int(row[1])


def lock(conversation_id: int) -> tuple[int, int]:
    """Lock the conversation row without taking a number (a membership change, a receipt);
    returns (last_seq, last_event)."""
    row = (
        Conversation.objects.select_for_update()
        .filter(pk=conversation_id)
        .values_list("last_seq", "last_event")
        .first()
    )
    if row is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return row
