"""Reads for groups, scoped to the caller's active membership (non-members get 404)."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from core.errors import NotFound
from messaging import annotation_selectors
from messaging import selectors as messaging_selectors
from messaging.models import Conversation, Membership


def group_get(*, user: User, group_id: int) -> dict[str, Any]:
    membership = (
        Membership.objects.select_related("conversation", "conversation__avatar")
        .filter(
            conversation_id=group_id,
            conversation__kind=Conversation.Kind.GROUP,
            user=user,
            left_at__isnull=True,
        )
        .first()
    )
    if membership is None:
        raise NotFound("No such group.", code="group_not_found")
    members = messaging_selectors.conversation_members(conversation_ids=[group_id], viewer_id=user.pk)
    pinned = annotation_selectors.pinned_lists([membership])[group_id]
    data = messaging_selectors.conversation_data(membership, members.get(group_id, []), pinned=pinned)
    data["history_visible_to_new_members"] = membership.conversation.history_visible_to_new_members
    return data
