"""Reads of what hangs off messages (issue 24): a conversation's pinned list, "mentions of me"."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import User

from .models import Membership, Mention, Pin


def pinned_lists(memberships: list[Membership]) -> dict[int, list[dict[str, Any]]]:
    """Each conversation's pinned messages as its member sees them (only messages within the
    member's visible range), pinned first first. One query for any number of conversations."""
    bounds = {m.conversation_id: (m.visible_after_seq, m.left_seq) for m in memberships}
    out: dict[int, list[dict[str, Any]]] = {c: [] for c in bounds}
    if not bounds:
        return out
    rows = (
        Pin.objects.filter(conversation_id__in=list(bounds), message__deleted_at__isnull=True)
        .order_by("conversation_id", "created_at", "id")
        .values_list("conversation_id", "message_id", "message__seq", "pinned_by_id", "created_at")
    )
    for conversation_id, message_id, seq, pinned_by, created_at in rows:
        lower, upper = bounds[conversation_id]
        if seq > lower and (upper is None or seq <= upper):
            out[conversation_id].append(
                {
                    "message_id": message_id,
                    "seq": seq,
                    "pinned_by": pinned_by,
                    "pinned_at": created_at.isoformat(),
                }
            )
    return out


def mention_list(*, user: User) -> QuerySet[Mention]:
    """Where ``user`` was mentioned, newest first (``-id``, cursor pagination): messages still
    there (not deleted) in conversations the user may still read them in (an active member, or
    a former one up to their removal)."""
    may_read = Membership.objects.filter(conversation_id=OuterRef("conversation_id"), user_id=user.pk).filter(
        Q(left_seq__isnull=True) | Q(left_seq__gte=OuterRef("message__seq"))
    )
    return (
        Mention.objects.filter(user=user, message__deleted_at__isnull=True)
        .filter(Exists(may_read))
        .select_related("message", "message__conversation")
        .prefetch_related("message__attachments")
        .order_by("-id")
    )
