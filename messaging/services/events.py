"""Messaging events: the signals other apps listen to, and the live fan-out of frames to users' sockets (after commit)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from core.realtime import publish, user_group
from messaging.models import Message

logger = logging.getLogger("healthchat.messaging")


# Sent after commit for every new message: the push worker listens (issue "Push").
# kwargs: message_id, conversation_id, sender_id, recipient_ids
message_committed = Signal()
# Sent after commit when a message is edited or deleted (push lets notified devices refresh or
# withdraw the notification). kwargs: message_id, conversation_id, event
message_updated = Signal()


# --- Live fan-out -----------------------------------------------------------------------
def fan_out(*, user_ids: list[int], frame: dict[str, Any], exclude_channel: str | None = None) -> None:
    """Send ``frame`` to every device of ``user_ids`` (on whatever process they are)."""
    event: dict[str, Any] = {"type": "client.event", "frame": frame}
    if exclude_channel:
        event["exclude_channel"] = exclude_channel
    for user_id in user_ids:
        publish(user_group(user_id), event)


def fan_out_encrypted(
    *, per_user: dict[int, dict[str, str]], frame: dict[str, Any], exclude_channel: str | None = None
) -> None:
    """Send ``frame`` (a message whose ``ciphertext`` is null) to each user's sockets with that
    user's ``{device_id: ciphertext}``: each socket fills in its own device's copy, so no device
    receives another's (a socket without a device id gets none)."""
    for user_id, ciphertexts in per_user.items():
        event: dict[str, Any] = {"type": "client.event", "frame": frame, "ciphertexts": ciphertexts}
        if exclude_channel:
            event["exclude_channel"] = exclude_channel
        publish(user_group(user_id), event)


def fan_out_on_commit(
    *, user_ids: list[int], frame: dict[str, Any], exclude_channel: str | None = None
) -> None:
    transaction.on_commit(lambda: fan_out(user_ids=user_ids, frame=frame, exclude_channel=exclude_channel))


# A committed message, as ``message_committed`` tells it: (message_id, conversation_id,
# sender_id, the conversation's active members).
Committed = tuple[int, int, int, list[int]]


def announce_committed(committed: Sequence[Committed]) -> None:
    """``message_committed`` for each message (every writer calls this after its COMMIT,
    whatever hooks are registered: the push outbox is a written hook, in the transaction)."""
    for message_id, conversation_id, sender_id, members in committed:
        message_committed.send(
            sender=Message,
            message_id=message_id,
            conversation_id=conversation_id,
            sender_id=sender_id,
            recipient_ids=[uid for uid in members if uid != sender_id],
        )


def announce_on_commit(message: Message, *, sender_id: int, recipients: list[int]) -> None:
    """After commit: ``message_committed`` for one message (recipients other than the sender)."""
    committed = [(message.pk, message.conversation_id, sender_id, recipients)]
    transaction.on_commit(lambda: announce_committed(committed))
