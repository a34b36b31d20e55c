"""Group avatars: an image a group's owner or admin uploaded (``POST /api/v1/attachments``: the
upload pipeline strips its metadata and makes its thumbnail) set as the group's picture.

The upload becomes the group's (``Conversation.avatar``): it can no longer be sent as a message
attachment, the orphan purge leaves it, and every active member may download it like an
attachment (``GET attachments/{id}``; access checked on every link and download). Setting,
replacing and removing it are group changes: a ``group.updated`` system message (``avatar: set |
removed``) reaches every member, live and through ``sync``. A replaced or removed image is
deleted (row and files) after the commit.
"""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from core.errors import ApplicationError, NotFound
from messaging import reach
from messaging import services as messaging
from messaging.models import Attachment, Conversation

from . import services


def _retire(attachment_id: int | None) -> None:
    """Delete a former avatar (row and files) once the change is committed."""
    if attachment_id is None:
        return

    def go() -> None:
        old = Attachment.objects.filter(pk=attachment_id, message__isnull=True).first()
        if old is None or Conversation.objects.filter(avatar_id=attachment_id).exists():
            return
        names = [old.file.name, old.thumbnail.name if old.thumbnail else None]
        old.delete()
        messaging.storage_delete(names)

    transaction.on_commit(go)


def group_avatar_set(*, actor: User, group_id: int, attachment_id: int) -> Conversation:
    """Set (or replace) the avatar: the actor's own unsent, ready image upload."""
    with transaction.atomic():
        services.group_lock_as_admin(actor=actor, group_id=group_id)
        reach.check(sender=actor, conversation_id=group_id)
        upload = (
            Attachment.objects.select_for_update()
            .filter(pk=attachment_id, uploader=actor, message__isnull=True, deleted_at__isnull=True)
            .first()
        )
        if upload is None:
            raise NotFound("No such attachment.", code="attachment_not_found")
        if upload.category != Attachment.Category.IMAGE or upload.state != Attachment.State.READY:
            raise ApplicationError(
                "avatar_not_an_image", "A group avatar is an image upload (JPEG, PNG, WebP...).", status=422
            )
        conversation = Conversation.objects.get(pk=group_id)
        previous = conversation.avatar_id
        if previous == upload.pk:
            return conversation
        if Conversation.objects.filter(avatar_id=upload.pk).exists():  # another group's already
            raise ApplicationError("attachment_already_used", "This upload is in use.", status=409)
        if not upload.thumbnail:
            messaging.attachment_make_thumbnail(attachment_id=upload.pk)
        Conversation.objects.filter(pk=group_id).update(avatar=upload)
        messaging.system_message_create(
            conversation_id=group_id,
            actor=actor,
            kind="group.updated",
            payload={"by": actor.pk, "avatar": "set"},
        )
        _retire(previous)
    return Conversation.objects.select_related("avatar").get(pk=group_id)


def group_avatar_remove(*, actor: User, group_id: int) -> None:
    with transaction.atomic():
        services.group_lock_as_admin(actor=actor, group_id=group_id)
        previous = Conversation.objects.filter(pk=group_id).values_list("avatar_id", flat=True).first()
        if previous is None:
            return  # no avatar: nothing changes, nothing is announced
        Conversation.objects.filter(pk=group_id).update(avatar=None)
        messaging.system_message_create(
            conversation_id=group_id,
            actor=actor,
            kind="group.updated",
            payload={"by": actor.pk, "avatar": "removed"},
        )
        _retire(previous)
