"""Delivery and read receipts (logged, monotonic) and typing indicators (ephemeral, never stored)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from accounts.models import User
from core.errors import ApplicationError
from messaging import reach, selectors
from messaging import validators as v
from messaging.models import Event, Membership

from .counters import allocate, lock
from .events import fan_out, fan_out_on_commit

logger = logging.getLogger("healthchat.messaging")


# --- Receipts -------------------------------------------------------------------------------
def receipt_mark(
    *, user: User, conversation_id: int, seq: int, kind: str, origin_channel: str | None = None
) -> dict[str, Any]:
    """``delivered`` or ``read`` up to ``seq``; monotonic (a lower value changes nothing)."""
    v.validate_seq(seq)
    field = {"delivered": "delivered_seq", "read": "read_seq"}.get(kind)
    if field is None:
        raise ApplicationError("invalid_receipt", "Receipt kind must be delivered or read.")
    membership = selectors.membership_get(user=user, conversation_id=conversation_id)
    last_seq = membership.conversation.last_seq
    if seq > last_seq:
        raise ApplicationError("seq_out_of_range", f"seq must be at most {last_seq}.")
    current = getattr(membership, field)
    if seq <= current and not (kind == "read" and membership.delivered_seq < seq):
        return {"conversation_id": conversation_id, "user_id": user.pk, field: current}
    with transaction.atomic():
        lock(conversation_id)
        fresh = Membership.objects.select_for_update().get(pk=membership.pk)
        updates: dict[str, int] = {}
        if seq > getattr(fresh, field):
            updates[field] = seq
        if kind == "read" and seq > fresh.delivered_seq:
            updates["delivered_seq"] = seq  # read implies delivered
        if not updates:
            return {"conversation_id": conversation_id, "user_id": user.pk, field: getattr(fresh, field)}
        Membership.objects.filter(pk=fresh.pk).update(**updates)
        _seq, number = allocate(conversation_id, message=False)
        data = {"user_id": user.pk, **updates}
        Event.objects.create(
            conversation_id=conversation_id, number=number, kind=Event.Kind.RECEIPT, data=data
        )
        frame = {"type": "receipt", "data": {"conversation_id": conversation_id, **data}, "event": number}
        # The user's own other devices, and the members not in a block with them.
        audience = selectors.signal_audience_ids(conversation_id=conversation_id, user_id=user.pk)
        fan_out_on_commit(user_ids=[user.pk, *audience], frame=frame, exclude_channel=origin_channel)
    return {"conversation_id": conversation_id, **data}


# --- Typing (ephemeral: never stored) -------------------------------------------------------
def typing_notify(
    *, user: User, conversation_id: int, active: bool, origin_channel: str | None = None
) -> None:
    selectors.membership_get(user=user, conversation_id=conversation_id)
    reach.check(sender=user, conversation_id=conversation_id)
    others = selectors.signal_audience_ids(conversation_id=conversation_id, user_id=user.pk)
    frame = {
        "type": "typing",
        "data": {"conversation_id": conversation_id, "user_id": user.pk, "active": bool(active)},
    }
    fan_out(user_ids=others, frame=frame, exclude_channel=origin_channel)
