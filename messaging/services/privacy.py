"""Account erasure and export (registered with accounts)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from messaging import selectors
from messaging.models import Attachment, Membership, Message, MessageCiphertext, MessageVersion

from .annotations import annotations_delete_for_messages, annotations_erase_user
from .attachments import attachments_delete_for_messages, storage_delete
from .contacts import presence_revoke_on_commit

logger = logging.getLogger("healthchat.messaging")


# --- Account erasure and export (registered with accounts) -----------------------------------
def erase_user_messages(user: User) -> None:
    """Messages a deleted user sent stay (as from a deleted user) with their content erased,
    and the texts kept of them (edit history, unsent texts) too."""
    Message.objects.filter(sender=user, kind=Message.Kind.TEXT).update(body="", deleted_at=timezone.now())
    MessageVersion.objects.filter(message__sender=user).delete()
    MessageCiphertext.objects.filter(message__sender=user).delete()
    sent = list(Message.objects.filter(sender=user).values_list("pk", flat=True))
    attachments_delete_for_messages(sent)
    annotations_delete_for_messages(sent)
    annotations_erase_user(user)
    orphans = list(Attachment.objects.filter(uploader=user, message__isnull=True))
    names = [a.file.name for a in orphans] + [a.thumbnail.name for a in orphans if a.thumbnail]
    Attachment.objects.filter(pk__in=[a.pk for a in orphans]).delete()
    transaction.on_commit(lambda: storage_delete(names))
    Membership.objects.filter(user=user, left_at__isnull=True).update(muted_until=None)


def erase_user_presence(user: User) -> None:
    """Nobody watches an erased user's presence any more, nor they anyone's (after commit)."""
    presence_revoke_on_commit(user_id=user.pk, other_ids=selectors.contact_ids(user=user))


def export_user_messages(user: User) -> dict[str, Any]:
    memberships = Membership.objects.filter(user=user).select_related("conversation")
    messages = (
        Message.objects.filter(sender=user, kind=Message.Kind.TEXT)
        .prefetch_related("attachments")
        .order_by("conversation_id", "seq")
    )
    return {
        "conversations": [
            {
                "id": m.conversation_id,
                "kind": m.conversation.kind,
                "name": m.conversation.name,
                "role": m.role,
                "joined_at": m.joined_at.isoformat(),
                "left_at": m.left_at.isoformat() if m.left_at else None,
            }
            for m in memberships
        ],
        "messages_sent": [selectors.message_data(message) for message in messages],
        # Earlier texts of the user's messages: what edits replaced and what unsending erased
        # (kept for the retention period, docs/record.md "Edit history").
        "message_versions": [
            {
                "message_id": version.message_id,
                "version": version.number,
                "reason": version.reason,
                "body": version.body,
                "written_at": version.written_at.isoformat(),
                "replaced_at": version.edited_at.isoformat(),
            }
            for version in MessageVersion.objects.filter(message__sender=user).order_by(
                "message_id", "number"
            )
        ],
    }


def export_user_uploads(user: User) -> list[dict[str, Any]]:
    """Files ``user`` uploaded and never attached to a message (those attached are in their
    messages): metadata, and ``download``, the request that gives the uploader a short-lived
    link to the bytes (exports hold no files, and no links that would outlive them)."""
    from django.urls import reverse

    unattached = Attachment.objects.filter(uploader=user, message__isnull=True, deleted_at__isnull=True)
    return [
        {
            **selectors.attachment_data(attachment),
            "created_at": attachment.created_at.isoformat(),
            "download": reverse("attachment-detail", args=[attachment.pk]),
        }
        for attachment in unattached.order_by("id")
    ]
