"""Membership and visibility: who is in a conversation, who may see whom (blocks, presence)."""

from __future__ import annotations

from django.db.models import Q

from accounts.models import DeviceIdentity, User
from core.errors import NotFound
from messaging.models import Block, Membership


# --- Membership and visibility ----------------------------------------------------------
def membership_get(*, user: User, conversation_id: int, active: bool = True) -> Membership:
    """The caller's membership; 404 (never 403) so non-members learn nothing."""
    qs = Membership.objects.select_related("conversation", "conversation__avatar").filter(
        conversation_id=conversation_id, user=user
    )
    if active:
        qs = qs.filter(left_at__isnull=True)
    membership = qs.first()
    if membership is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return membership


def visible_seq_range(membership: Membership) -> tuple[int, int | None]:
    """(exclusive lower bound, inclusive upper bound or None) of the seqs a member may read:
    both fixed in the membership row (at join and at removal), never read from the group's
    settings of today."""
    return membership.visible_after_seq, membership.left_seq


def active_member_ids(*, conversation_id: int) -> list[int]:
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values_list(
            "user_id", flat=True
        )
    )


def active_member_bounds(*, conversation_id: int) -> list[tuple[int, int]]:
    """``(user_id, visible_after_seq)`` of the active members: who may read a given seq."""
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values_list(
            "user_id", "visible_after_seq"
        )
    )


def shares_conversation(*, user_id: int, other_id: int) -> bool:
    """Both are active members of some conversation."""
    mine = Membership.objects.filter(user_id=user_id, left_at__isnull=True).values("conversation_id")
    return Membership.objects.filter(
        conversation_id__in=mine, user_id=other_id, left_at__isnull=True
    ).exists()


def e2ee_device_owners(*, user_ids: list[int]) -> dict[int, int]:
    """``{device_id: user_id}`` of the devices of ``user_ids`` that published keys (the devices
    an encrypted message must be encrypted for)."""
    return dict(
        DeviceIdentity.objects.filter(device__user_id__in=user_ids).values_list(
            "device_id", "device__user_id"
        )
    )


def contact_ids(*, user: User) -> set[int]:
    """Users who share an active conversation with ``user`` (who may watch their presence)."""
    mine = Membership.objects.filter(user=user, left_at__isnull=True).values("conversation_id")
    return set(
        Membership.objects.filter(conversation_id__in=mine, left_at__isnull=True)
        .exclude(user=user)
        .values_list("user_id", flat=True)
    )


def _block_partners(user_id: int) -> Q:
    """Rows of users in a block with ``user_id``, either way (for a ``user_id`` column)."""
    return Q(user_id__in=Block.objects.filter(blocker_id=user_id).values("blocked_id")) | Q(
        user_id__in=Block.objects.filter(blocked_id=user_id).values("blocker_id")
    )


def presence_contact_ids(*, user_id: int) -> set[int]:
    """Whose presence ``user_id`` may watch (and who may watch theirs): users sharing an active
    conversation with them, not erased, and not in a block with them either way."""
    mine = Membership.objects.filter(user_id=user_id, left_at__isnull=True).values("conversation_id")
    return set(
        Membership.objects.filter(
            conversation_id__in=mine, left_at__isnull=True, user__deleted_at__isnull=True
        )
        .exclude(user_id=user_id)
        .exclude(_block_partners(user_id))
        .values_list("user_id", flat=True)
        .distinct()
    )


def signal_audience_ids(*, conversation_id: int, user_id: int) -> list[int]:
    """Who gets ``user_id``'s typing and receipts in a conversation: the other active members
    who are not in a block with them either way."""
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True)
        .exclude(user_id=user_id)
        .exclude(_block_partners(user_id))
        .values_list("user_id", flat=True)
    )


def block_partner_ids(*, user_ids: set[int], among: set[int]) -> dict[int, set[int]]:
    """``{user: the users of among in a block with them, either way}`` in one query."""
    rows = Block.objects.filter(
        Q(blocker_id__in=user_ids, blocked_id__in=among) | Q(blocked_id__in=user_ids, blocker_id__in=among)
    ).values_list("blocker_id", "blocked_id")
    partners: dict[int, set[int]] = {uid: set() for uid in user_ids}
    for blocker, blocked in rows:
        if blocker in partners:
            partners[blocker].add(blocked)
        if blocked in partners:
            partners[blocked].add(blocker)
    return partners
