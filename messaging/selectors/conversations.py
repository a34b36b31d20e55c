"""The caller's conversations, their members as the caller sees them, and their wire shape."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet

from accounts.models import User
from messaging.models import Block, Conversation, Membership


# --- Conversations -----------------------------------------------------------------------
def conversation_list(*, user: User) -> QuerySet[Membership]:
    """The caller's conversations with unread counts, in one query (no N+1)."""
    return (
        Membership.objects.filter(user=user, left_at__isnull=True)
        .select_related("conversation", "conversation__avatar")
        .annotate(unread=F("conversation__last_seq") - F("read_seq"))
        .order_by("-conversation__last_message_at", "-conversation_id")
    )


def conversation_members(*, conversation_ids: list[int], viewer_id: int) -> dict[int, list[dict[str, Any]]]:
    """The active members as ``viewer_id`` sees them: the receipts (``delivered_seq``,
    ``read_seq``) of a member in a block with the viewer, either way, are ``None``. One query."""
    in_block = Exists(
        Block.objects.filter(
            Q(blocker_id=viewer_id, blocked_id=OuterRef("user_id"))
            | Q(blocker_id=OuterRef("user_id"), blocked_id=viewer_id)
        )
    )
    rows = (
        Membership.objects.filter(conversation_id__in=conversation_ids, left_at__isnull=True)
        .select_related("user")
        .annotate(in_block=in_block)
        .order_by("conversation_id", "id")
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for m in rows:
        hidden = bool(m.in_block)
        out.setdefault(m.conversation_id, []).append(
            {
                "user_id": m.user_id,
                "display_name": m.user.display_name or "Deleted user",
                "role": m.role,
                "delivered_seq": None if hidden else m.delivered_seq,
                "read_seq": None if hidden else m.read_seq,
            }
        )
    return out


def conversation_data(
    membership: Membership, members: list[dict[str, Any]], *, pinned: list[dict[str, Any]]
) -> dict[str, Any]:
    c = membership.conversation
    unread = getattr(membership, "unread", c.last_seq - membership.read_seq)
    return {
        "id": c.pk,
        "kind": c.kind,
        "e2ee": c.e2ee,
        "name": c.name,
        "description": c.description,
        "last_seq": c.last_seq,
        "last_message_at": c.last_message_at.isoformat() if c.last_message_at else None,
        "created_at": c.created_at.isoformat(),
        "unread_count": max(0, unread),
        "my_role": membership.role,
        "delivered_seq": membership.delivered_seq,
        "read_seq": membership.read_seq,
        "members": members,
        "pinned": pinned,
        "avatar": avatar_data(c),
    }


def avatar_data(conversation: Conversation) -> dict[str, Any] | None:
    """A group's avatar as members see it: an attachment they may download (``GET
    attachments/{id}``: a link to the image and its thumbnail). Read with ``conversation__avatar``
    joined (``conversation_list``, ``membership_get``)."""
    if conversation.avatar_id is None:
        return None
    avatar = conversation.avatar
    assert avatar is not None
    return {
        "attachment_id": avatar.pk,
        "content_type": avatar.content_type,
        "width": avatar.width,
        "height": avatar.height,
    }
