"""Editing and deleting (unsending) one's own messages: ``message.updated`` in the log and live.

The ONE edit path (socket ``message.edit`` / ``message.delete``): an edit keeps the text it
replaces as a ``MessageVersion`` (``edit_count`` on the message's wire shape counts them;
members read them with ``selectors.message_versions``); an unsend erases the text from the
message (members see the tombstone) and keeps it as a version of reason ``delete``, never shown
to members, for the retention period (``retention.py`` purges it with the message, and never
while the conversation is under a legal hold). Encrypted conversations: edits are refused, an
unsend erases the ciphertexts (the server has no text to keep)."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, PermissionDenied
from messaging import reach, selectors
from messaging import validators as v
from messaging.models import Event, Message, MessageCiphertext, MessageVersion
from messaging.send_rules import registry

from .annotations import annotations_delete_for_messages
from .attachments import attachments_delete_for_messages
from .counters import allocate
from .events import fan_out_on_commit, message_updated

logger = logging.getLogger("healthchat.messaging")


def _own_message_for_update(*, user: User, message_id: int) -> Message:
    message = selectors.message_get_for_member(user=user, message_id=message_id)
    if message.sender_id != user.pk or message.kind != Message.Kind.TEXT:
        raise PermissionDenied("You can only change your own messages.", code="not_message_sender")
    if message.deleted_at is not None:
        raise ApplicationError("message_deleted", "This message was deleted.", status=409)
    return message


def record_update(message: Message, number: int) -> None:
    record_updates([(message, number)])


def record_updates(updates: list[tuple[Message, int]]) -> None:
    """``message.updated`` for each (message, event number): the replay log rows (one INSERT),
    then on commit the live frames and the ``message_updated`` signal (push refresh/withdraw).
    The numbers were taken under each conversation's lock by the caller."""
    if not updates:
        return
    Event.objects.bulk_create(
        [
            Event(conversation_id=m.conversation_id, number=n, kind=Event.Kind.MESSAGE_UPDATED, message=m)
            for m, n in updates
        ]
    )
    members: dict[int, list[tuple[int, int]]] = {}
    for message, number in updates:
        conversation_id = message.conversation_id
        if conversation_id not in members:
            members[conversation_id] = selectors.active_member_bounds(conversation_id=conversation_id)
        frame = {
            "type": "message.updated",
            "data": {"message": selectors.message_data(message)},
            "event": number,
        }
        # Only to members who may read the message (not those who joined after it, unshared).
        readers = [uid for uid, bound in members[conversation_id] if message.seq > bound]
        fan_out_on_commit(user_ids=readers, frame=frame)
        transaction.on_commit(
            partial(
                message_updated.send,
                sender=Message,
                message_id=message.pk,
                conversation_id=conversation_id,
                event=number,
            )
        )


def _keep_version(message: Message, *, editor: User, now: datetime, reason: str) -> None:
    """The message's current text, about to be replaced or erased, as its next version (the
    caller holds the conversation's lock and has re-read the row)."""
    MessageVersion.objects.create(
        message=message,
        number=message.edit_count + 1,
        body=message.body,
        written_at=message.edited_at or message.created_at,
        edited_at=now,
        editor=editor,
        reason=reason,
    )


def message_edit(*, user: User, message_id: int, body: str) -> Message:
    """Replace the text of one's own message; the text it had is kept as a version."""
    text = v.validate_body(body)
    message = _own_message_for_update(user=user, message_id=message_id)
    if message.conversation.e2ee:
        raise ApplicationError("e2ee_required", "Encrypted messages cannot be edited in plaintext.")
    with transaction.atomic():
        _seq, number = allocate(message.conversation_id, message=False)
        reach.check(sender=user, conversation_id=message.conversation_id)
        refusal = registry.sender_refusal(user.pk)  # e.g. moderation's mute
        if refusal is not None:
            raise refusal
        message.refresh_from_db(fields=["body", "edited_at", "edit_count", "deleted_at"])
        if message.deleted_at is not None:
            raise ApplicationError("message_deleted", "This message was deleted.", status=409)
        now = timezone.now()
        _keep_version(message, editor=user, now=now, reason=MessageVersion.Reason.EDIT)
        message.body = text
        message.edited_at = now
        message.edit_count += 1
        message.save(update_fields=["body", "edited_at", "edit_count"])
        record_update(message, number)
    return message


def message_delete(*, user: User, message_id: int) -> Message:
    """Unsend: the message keeps its seq and loses its content (its text is kept as a version
    members never see, for the retention period)."""
    message = _own_message_for_update(user=user, message_id=message_id)
    with transaction.atomic():
        _seq, number = allocate(message.conversation_id, message=False)
        message.refresh_from_db(fields=["body", "edited_at", "edit_count", "deleted_at"])
        if message.deleted_at is not None:
            raise ApplicationError("message_deleted", "This message was deleted.", status=409)
        now = timezone.now()
        if message.body:
            _keep_version(message, editor=user, now=now, reason=MessageVersion.Reason.DELETE)
        message.body = ""
        message.deleted_at = now
        message.save(update_fields=["body", "deleted_at"])
        if message.conversation.e2ee:
            MessageCiphertext.objects.filter(message=message).delete()
        attachments_delete_for_messages([message.pk])
        annotations_delete_for_messages([message.pk])
        message.reactions = message.mentions = None
        record_update(message, number)
    return message
