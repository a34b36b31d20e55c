"""Edit history as members see it (issue 23): the texts a message had, with their times.

Who may read a message's versions is who may read the message in history: a member (or a
former member, up to their removal) whose visible range holds its seq. Everyone else gets the
same 404 as for a message that does not exist. A deleted message shows no versions (members see
its tombstone; the kept text is for the retention period, not for them)."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from core.errors import NotFound
from messaging.models import Membership, Message, MessageVersion


def message_readable(*, user: User, message_id: int) -> Message:
    """The message if ``user`` may read it in history (active or former member, within their
    visible range); 404 ``message_not_found`` otherwise."""
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    membership = (
        None
        if message is None
        else Membership.objects.filter(conversation_id=message.conversation_id, user=user)
        .only("visible_after_seq", "left_seq")
        .first()
    )
    if (
        message is None
        or membership is None
        or message.seq <= membership.visible_after_seq
        or (membership.left_seq is not None and message.seq > membership.left_seq)
    ):
        raise NotFound("No such message.", code="message_not_found")
    return message


def version_data(number: int, body: str, written_at: Any, replaced_at: Any) -> dict[str, Any]:
    return {
        "version": number,
        "body": body,
        "written_at": written_at.isoformat(),
        "replaced_at": replaced_at.isoformat() if replaced_at is not None else None,
        "current": replaced_at is None,
    }


def message_versions_data(*, user: User, message_id: int) -> dict[str, Any]:
    """``GET /api/v1/messages/{id}/versions``: every text of the message, oldest first, the
    current one last (``current``: true); ``written_at`` when each became the text,
    ``replaced_at`` when an edit replaced it. A deleted message: ``deleted`` and no versions."""
    message = message_readable(user=user, message_id=message_id)
    deleted = message.deleted_at is not None
    versions: list[dict[str, Any]] = []
    if not deleted and message.kind == Message.Kind.TEXT:
        rows = MessageVersion.objects.filter(message=message, reason=MessageVersion.Reason.EDIT).order_by(
            "number"
        )
        versions = [version_data(r.number, r.body, r.written_at, r.edited_at) for r in rows]
        versions.append(
            version_data(
                message.edit_count + 1,
                "" if message.conversation.e2ee else message.body,
                message.edited_at or message.created_at,
                None,
            )
        )
    return {
        "message_id": message.pk,
        "conversation_id": message.conversation_id,
        "edit_count": 0 if deleted else message.edit_count,
        "deleted": deleted,
        "versions": versions,
    }
