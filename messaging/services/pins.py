"""Pins: a message pinned in its conversation (both members of a direct conversation; a group's
owner and admins), at most ``HEALTHCHAT_PINS_MAX`` per conversation (``pins_full``).

Each change takes the conversation's row lock, logs ``message.pinned`` / ``message.unpinned``
(data ``{message_id, seq, user_id}``, replayed by ``sync``) and sends it after the commit to the
members who may read the message. The pinned list is in the conversation's data (``pinned``).
A pin is metadata (which message), so end-to-end encrypted conversations have pins too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.models import User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging import selectors
from messaging.models import Conversation, Event, Membership, Message, Pin

from .counters import allocate, lock
from .events import fan_out_on_commit
from .reactions import readable_message


def pins_max() -> int:
    return int(settings.HEALTHCHAT_PINS_MAX)


@dataclass(frozen=True)
class PinChange:
    conversation_id: int
    message_id: int
    seq: int
    user_id: int
    pinned: bool
    changed: bool

    def data(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "seq": self.seq,
            "user_id": self.user_id,
            "pinned": self.pinned,
            "changed": self.changed,
        }


def _check_may_pin(membership: Membership, conversation: Conversation) -> None:
    if conversation.kind == Conversation.Kind.GROUP and membership.role not in (
        Membership.Role.OWNER,
        Membership.Role.ADMIN,
    ):
        raise PermissionDenied("Only the group's owner or admins may pin messages.", code="not_group_admin")


def message_pin(*, user: User, message_id: int, origin_channel: str | None = None) -> PinChange:
    """Pin the message (idempotent: pinning it again changes nothing)."""
    message, membership = readable_message(user=user, message_id=message_id)
    _check_may_pin(membership, message.conversation)
    if message.kind != Message.Kind.TEXT:
        raise ApplicationError("pin_not_allowed", "System messages cannot be pinned.", status=422)
    conversation_id = message.conversation_id
    with transaction.atomic():
        _lock_as_pinner(membership, message)
        message.refresh_from_db(fields=["deleted_at"])
        if message.deleted_at is not None:
            raise ApplicationError("message_deleted", "This message was deleted.", status=409)
        changed = not Pin.objects.filter(message=message).exists()
        if changed:
            if Pin.objects.filter(conversation_id=conversation_id).count() >= pins_max():
                raise ApplicationError(
                    "pins_full",
                    f"A conversation may have at most {pins_max()} pinned messages: unpin one first.",
                    status=409,
                )
            Pin.objects.create(conversation_id=conversation_id, message=message, pinned_by=user)
        return _record(user, message, pinned=True, changed=changed, origin_channel=origin_channel)


def message_unpin(*, user: User, message_id: int, origin_channel: str | None = None) -> PinChange:
    """Unpin the message (idempotent)."""
    message, membership = readable_message(user=user, message_id=message_id)
    _check_may_pin(membership, message.conversation)
    with transaction.atomic():
        _lock_as_pinner(membership, message)
        changed = Pin.objects.filter(message=message).delete()[0] > 0
        return _record(user, message, pinned=False, changed=changed, origin_channel=origin_channel)


def _lock_as_pinner(membership: Membership, message: Message) -> None:
    """The conversation's row lock, then the caller's membership and role again (removed or
    demoted meanwhile)."""
    lock(message.conversation_id)
    fresh = Membership.objects.filter(pk=membership.pk, left_at__isnull=True).first()
    if fresh is None:
        raise NotFound("No such message.", code="message_not_found")
    _check_may_pin(fresh, message.conversation)


def _record(
    user: User, message: Message, *, pinned: bool, changed: bool, origin_channel: str | None
) -> PinChange:
    conversation_id = message.conversation_id
    change = PinChange(conversation_id, message.pk, message.seq, user.pk, pinned, changed)
    if not changed:
        return change
    _seq, number = allocate(conversation_id, message=False)
    kind = Event.Kind.MESSAGE_PINNED if pinned else Event.Kind.MESSAGE_UNPINNED
    data = {"message_id": message.pk, "seq": message.seq, "user_id": user.pk}
    Event.objects.create(conversation_id=conversation_id, number=number, kind=kind, data=data)
    readers = [
        uid
        for uid, bound in selectors.active_member_bounds(conversation_id=conversation_id)
        if message.seq > bound
    ]
    frame = {"type": str(kind), "data": {"conversation_id": conversation_id, **data}, "event": number}
    fan_out_on_commit(user_ids=readers, frame=frame, exclude_channel=origin_channel)
    return change


def pins_delete_for_messages(message_ids: list[int]) -> None:
    """A message that loses its content (unsent, retention, erasure) is no longer pinned."""
    if message_ids:
        Pin.objects.filter(message_id__in=message_ids).delete()


def pins_erase_user(user: User) -> None:
    """Pins stay (they belong to the conversation); the erased account no longer shows as pinner."""
    Pin.objects.filter(pinned_by=user).update(pinned_by=None)


def export_user_pins(user: User) -> list[dict[str, Any]]:
    return [
        {"message_id": message_id, "conversation_id": conversation_id, "pinned_at": created_at.isoformat()}
        for message_id, conversation_id, created_at in Pin.objects.filter(pinned_by=user)
        .order_by("id")
        .values_list("message_id", "conversation_id", "created_at")
    ]
