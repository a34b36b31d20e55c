"""Message history (keyset pagination on seq, never OFFSET) and single-message access."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from core.errors import NotFound
from messaging.models import Membership, Message, MessageCiphertext

from .members import membership_get, visible_seq_range
from .wire import message_data

HISTORY_MAX_LIMIT = 200


# --- History (keyset pagination on seq, never OFFSET) ------------------------------------
def message_history(
    *,
    user: User,
    conversation_id: int,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
    device_id: int | None = None,
) -> tuple[list[Message], bool]:
    """Messages the caller may read, ascending by seq. Returns (messages, has_more).

    In an end-to-end encrypted conversation each message carries the ciphertext of the
    caller's own ``device_id`` (prefetched; none without a device)."""
    membership = membership_get(user=user, conversation_id=conversation_id, active=False)
    lower, upper = visible_seq_range(membership)
    limit = max(1, min(limit, HISTORY_MAX_LIMIT))
    qs = Message.objects.filter(conversation_id=conversation_id, seq__gt=lower).prefetch_related(
        "attachments"
    )
    if membership.conversation.e2ee and device_id is not None:
        qs = qs.prefetch_related(
            Prefetch(
                "ciphertexts",
                queryset=MessageCiphertext.objects.filter(device_id=device_id, device__user_id=user.pk),
                to_attr="device_ciphertexts",
            )
        )
    rows, has_more = _history_page(qs, after_seq=after_seq, before_seq=before_seq, upper=upper, limit=limit)
    for message in rows:
        message.conversation = membership.conversation  # message_data reads its e2ee flag
    return rows, has_more


def message_history_data(**kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
    """``message_history``'s page as clients see it (``message_data``): built where it was read
    (the primary, or the replica: ``core/replica.py: lag_tolerant``)."""
    messages, has_more = message_history(**kwargs)
    return [message_data(m) for m in messages], has_more


def _history_page(
    qs: QuerySet[Message], *, after_seq: int | None, before_seq: int | None, upper: int | None, limit: int
) -> tuple[list[Message], bool]:
    if upper is not None:
        qs = qs.filter(seq__lte=upper)
    if after_seq is not None:
        qs = qs.filter(seq__gt=after_seq)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    if after_seq is None and before_seq is not None:
        rows = list(qs.order_by("-seq")[: limit + 1])
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    if after_seq is None and before_seq is None:
        rows = list(qs.order_by("-seq")[: limit + 1])  # the latest page
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    rows = list(qs.order_by("seq")[: limit + 1])
    return rows[:limit], len(rows) > limit


def message_get_for_member(*, user: User, message_id: int) -> Message:
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if message is None:
        raise NotFound("No such message.", code="message_not_found")
    membership = Membership.objects.filter(
        conversation_id=message.conversation_id, user=user, left_at__isnull=True
    ).first()
    if membership is None:
        raise NotFound("No such message.", code="message_not_found")
    return message
