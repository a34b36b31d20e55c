"""Who may contact whom: blocks, the contact rules (a registry other apps plug into), the key
directory's fetch rule, and presence subscriptions that end with a relationship."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from django.db.models import Q

from accounts.models import DoctorProfile, User
from core.errors import ApplicationError, NotFound, PermissionDenied
from core.realtime import publish, user_group
from core.registry import Registry
from messaging import selectors
from messaging.models import Block, Conversation

logger = logging.getLogger("healthchat.messaging")


# Extra rules that let a doctor open a conversation with a patient: ``rule(doctor, patient)``
# (e.g. a consultation: payments registers ``contact_rules.register(name, rule)``).
ContactRule = Callable[[User, User], bool]
contact_rules: Registry[ContactRule] = Registry("contact rule")


# --- Contact rules and blocking -----------------------------------------------------------
def is_blocked(a_id: int, b_id: int) -> bool:
    return Block.objects.filter(
        Q(blocker_id=a_id, blocked_id=b_id) | Q(blocker_id=b_id, blocked_id=a_id)
    ).exists()


def check_not_blocked(*, user_id: int, peer_id: int) -> None:
    """The one block check of every path that opens contact (a new or existing conversation, a
    group, a consultation): refused when either side blocked the other."""
    if is_blocked(user_id, peer_id):
        raise PermissionDenied("This user cannot be contacted.", code="blocked")


def verified_doctor(user: User) -> bool:
    return (
        user.role == User.Role.DOCTOR
        and DoctorProfile.objects.filter(
            user=user, verification_status=DoctorProfile.Verification.VERIFIED
        ).exists()
    )


def check_can_contact(*, user: User, peer: User) -> None:
    """Who may open a direct conversation with whom.

    A patient with a verified doctor; verified doctors with each other; a doctor with a patient
    when a registered contact rule (e.g. a consultation) allows it. Never when either side
    blocked the other, never with oneself or a deleted/inactive user.
    """
    if peer.pk == user.pk:
        raise ApplicationError("cannot_contact_self", "You cannot open a conversation with yourself.")
    if not peer.is_active or peer.deleted_at is not None:
        raise NotFound("No such user.", code="user_not_found")
    check_not_blocked(user_id=user.pk, peer_id=peer.pk)
    if user.role == User.Role.PATIENT and verified_doctor(peer):
        return
    if verified_doctor(user) and verified_doctor(peer):
        return
    if verified_doctor(user) and peer.role == User.Role.PATIENT:
        # "Their" patients: one who already has a conversation with them, or whom a
        # registered rule (e.g. a consultation) connects to them.
        key = f"{min(user.pk, peer.pk)}:{max(user.pk, peer.pk)}"
        if Conversation.objects.filter(direct_key=key).exists() or any(
            rule(user, peer) for rule in contact_rules
        ):
            return
    raise PermissionDenied("You may not start a conversation with this user.", code="contact_not_allowed")


def may_fetch_keys(requester: User, owner: User) -> bool:
    """Key directory rule: ``requester`` may fetch ``owner``'s prekey bundles when they share an
    active conversation (direct or group) or ``requester`` may open one with them; never when
    either blocked the other."""
    if is_blocked(requester.pk, owner.pk):
        return False
    if selectors.shares_conversation(user_id=requester.pk, other_id=owner.pk):
        return True
    try:
        check_can_contact(user=requester, peer=owner)
    except ApplicationError:
        return False
    return True


# --- Presence subscriptions end with the relationship --------------------------------------
PRESENCE_REVOKE = "presence.revoke"  # channel-layer event to a user's sockets (not a client frame)


def presence_revoke_on_commit(*, user_id: int, other_ids: set[int]) -> None:
    """After commit, end the presence subscriptions between ``user_id`` and each of
    ``other_ids``, both ways, on every socket of every process: each side's user group gets a
    ``presence.revoke`` event naming the users its sockets stop watching."""
    others = sorted(other_ids - {user_id})
    if not others:
        return

    def revoke() -> None:
        publish(user_group(user_id), {"type": PRESENCE_REVOKE, "user_ids": others})
        for other in others:
            publish(user_group(other), {"type": PRESENCE_REVOKE, "user_ids": [user_id]})

    transaction.on_commit(revoke)


def presence_end_lost_contacts(*, user_id: int, candidates: set[int]) -> None:
    """A relationship of ``user_id`` ended (a removal, a leave, a block) and is written: of
    ``candidates``, those who may no longer watch each other (``presence_contact_ids``) lose
    their subscriptions after commit. Call inside the transaction, after the change."""
    lost = candidates - selectors.presence_contact_ids(user_id=user_id) - {user_id}
    presence_revoke_on_commit(user_id=user_id, other_ids=lost)


def block_user(*, user: User, blocked_id: int) -> None:
    """Block: no new direct conversation, no sends in the direct one, no presence either way (at
    once, on every socket), no typing or receipts between the two in any conversation."""
    if blocked_id == user.pk:
        raise ApplicationError("cannot_block_self", "You cannot block yourself.")
    if not User.objects.filter(pk=blocked_id).exists():
        raise NotFound("No such user.", code="user_not_found")
    with transaction.atomic():
        Block.objects.get_or_create(blocker=user, blocked_id=blocked_id)
        presence_revoke_on_commit(user_id=user.pk, other_ids={blocked_id})


def unblock_user(*, user: User, blocked_id: int) -> None:
    Block.objects.filter(blocker=user, blocked_id=blocked_id).delete()
