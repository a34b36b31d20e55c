"""Group lifecycle and membership rules, on top of messaging's conversations.

Every membership change locks the conversation row (the same lock that orders messages), is
recorded as a system message with its own ``seq`` (``member.added``, ``member.removed``,
``member.left``, ``member.role_changed``, ``group.updated``) and takes effect at once: a send
that commits after a removal is never delivered to the removed member, on any process, live or
through ``sync``/history. A removed member keeps read access to history up to (and including)
their removal.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging import reach
from messaging import selectors as messaging_selectors
from messaging import services as messaging
from messaging import validators as mv
from messaging.models import Conversation, Membership

logger = logging.getLogger("healthchat.groups")

Role = Membership.Role
ROLE_RANK = {Role.OWNER: 3, Role.ADMIN: 2, Role.MEMBER: 1}


def max_group_size() -> int:
    return int(settings.HEALTHCHAT_MAX_GROUP_SIZE)


def _group_membership(*, user: User, group_id: int, for_update: bool = False) -> Membership:
    """The caller's active membership of a group; 404 for non-members (they learn nothing)."""
    qs = Membership.objects.select_related("conversation").filter(
        conversation_id=group_id, conversation__kind=Conversation.Kind.GROUP, user=user, left_at__isnull=True
    )
    if for_update:
        qs = qs.select_for_update()
    membership = qs.first()
    if membership is None:
        raise NotFound("No such group.", code="group_not_found")
    return membership


def _lock_group(group_id: int) -> None:
    """Lock the group's conversation row (it orders membership changes). An id that is no
    conversation at all reads exactly like a group the caller is not in: ``group_not_found``."""
    try:
        messaging.lock(group_id)
    except NotFound as exc:
        raise NotFound("No such group.", code="group_not_found") from exc


def _require_admin(membership: Membership) -> None:
    if membership.role not in (Role.OWNER, Role.ADMIN):
        raise PermissionDenied("Only the group's owner or admins may do this.", code="not_group_admin")


def _target_user(user_id: int) -> User:
    user = User.objects.filter(pk=user_id, is_active=True, deleted_at__isnull=True).first()
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


def _active_count(group_id: int) -> int:
    return Membership.objects.filter(conversation_id=group_id, left_at__isnull=True).count()


# --- Create and update --------------------------------------------------------------------
def group_create(
    *,
    creator: User,
    name: str,
    description: str = "",
    member_ids: list[int] | None = None,
    history_visible_to_new_members: bool = False,
    e2ee: bool = False,
) -> Conversation:
    """A group; ``e2ee`` (fixed at creation; refused when the deployment's policy is ``off``) makes
    it end-to-end encrypted: messages are sent as one Signal-protocol ciphertext per member device
    (no sender keys yet, see docs/e2ee.md)."""
    name = mv.validate_group_name(name)
    description = mv.validate_group_description(description)
    wanted = [uid for uid in dict.fromkeys(member_ids or []) if uid != creator.pk]
    if len(wanted) + 1 > max_group_size():
        raise ApplicationError("group_full", f"A group has at most {max_group_size()} members.", status=409)
    members = [_target_user(uid) for uid in wanted]
    for member in members:
        messaging.check_can_contact(user=creator, peer=member)
    reach.check(sender=creator, recipient_ids=tuple(m.pk for m in members))
    encrypted = messaging.e2ee_for_new_conversation(requested=e2ee, patient_doctor=False)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            kind=Conversation.Kind.GROUP,
            name=name,
            description=description,
            created_by=creator,
            history_visible_to_new_members=history_visible_to_new_members,
            e2ee=encrypted,
        )
        messaging.lock(conversation.pk)
        messaging.membership_join(conversation=conversation, user=creator, role=Role.OWNER, added_by=creator)
        for member in members:
            conversation.refresh_from_db(fields=["last_seq", "last_event"])
            messaging.membership_join(
                conversation=conversation, user=member, role=Role.MEMBER, added_by=creator
            )
            messaging.system_message_create(
                conversation_id=conversation.pk,
                actor=creator,
                kind="member.added",
                payload={"user_id": member.pk, "by": creator.pk},
            )
    logger.info("group %s created by %s with %s members", conversation.pk, creator.pk, len(members) + 1)
    conversation.refresh_from_db()
    return conversation


def group_update(*, actor: User, group_id: int, data: dict[str, Any]) -> Conversation:
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = mv.validate_group_name(data["name"])
    if "description" in data:
        changes["description"] = mv.validate_group_description(data["description"])
    if "history_visible_to_new_members" in data:
        changes["history_visible_to_new_members"] = bool(data["history_visible_to_new_members"])
    if not changes:
        raise ApplicationError(
            "nothing_to_update", "Give name, description or history_visible_to_new_members."
        )
    with transaction.atomic():
        _lock_group(group_id)
        membership = _group_membership(user=actor, group_id=group_id, for_update=True)
        _require_admin(membership)
        reach.check(sender=actor, conversation_id=group_id)
        Conversation.objects.filter(pk=group_id).update(**changes)
        messaging.system_message_create(
            conversation_id=group_id, actor=actor, kind="group.updated", payload={"by": actor.pk, **changes}
        )
    return Conversation.objects.get(pk=group_id)


def group_lock_as_admin(*, actor: User, group_id: int) -> Membership:
    """Inside the caller's transaction: lock the group and return the caller's membership,
    refused unless they are its owner or an admin (``group_not_found`` / ``not_group_admin``)."""
    _lock_group(group_id)
    membership = _group_membership(user=actor, group_id=group_id, for_update=True)
    _require_admin(membership)
    return membership


# --- Membership ---------------------------------------------------------------------------
def member_add(*, actor: User, group_id: int, user_id: int) -> Membership:
    target = _target_user(user_id)
    with transaction.atomic():
        _lock_group(group_id)
        membership = _group_membership(user=actor, group_id=group_id, for_update=True)
        _require_admin(membership)
        messaging.check_can_contact(user=actor, peer=target)
        reach.check(sender=actor, recipient_ids=(target.pk,))
        if Membership.objects.filter(conversation_id=group_id, user=target, left_at__isnull=True).exists():
            raise ApplicationError("already_member", "This user is already a member.", status=409)
        if _active_count(group_id) >= max_group_size():
            raise ApplicationError(
                "group_full", f"A group has at most {max_group_size()} members.", status=409
            )
        conversation = Conversation.objects.get(pk=group_id)
        added = messaging.membership_join(
            conversation=conversation, user=target, role=Role.MEMBER, added_by=actor
        )
        messaging.system_message_create(
            conversation_id=group_id,
            actor=actor,
            kind="member.added",
            payload={"user_id": target.pk, "by": actor.pk},
        )
    return added


def _close_membership(membership: Membership, *, by: User | None) -> None:
    conversation = Conversation.objects.get(pk=membership.conversation_id)
    membership.left_at = timezone.now()
    # The removal's own system message is the last thing they may see: it takes the next seq.
    membership.left_seq = conversation.last_seq + 1
    membership.left_event = conversation.last_event + 1
    membership.removed_by = by
    membership.save(update_fields=["left_at", "left_seq", "left_event", "removed_by"])
    # Whoever watched presence only through this group stops, both ways, on every socket.
    messaging.presence_end_lost_contacts(
        user_id=membership.user_id,
        candidates=set(messaging_selectors.active_member_ids(conversation_id=membership.conversation_id)),
    )


def member_remove(*, actor: User, group_id: int, user_id: int) -> None:
    if user_id == actor.pk:
        raise ApplicationError("use_leave", "To leave a group use POST groups/{id}/leave.")
    with transaction.atomic():
        _lock_group(group_id)
        membership = _group_membership(user=actor, group_id=group_id, for_update=True)
        _require_admin(membership)
        target = (
            Membership.objects.select_for_update()
            .filter(conversation_id=group_id, user_id=user_id, left_at__isnull=True)
            .first()
        )
        if target is None:
            raise NotFound("This user is not a member.", code="not_a_member")
        if ROLE_RANK[Role(target.role)] >= ROLE_RANK[Role(membership.role)]:
            raise PermissionDenied(
                "You cannot remove a member of equal or higher role.", code="cannot_remove_member"
            )
        _close_membership(target, by=actor)
        messaging.system_message_create(
            conversation_id=group_id,
            actor=actor,
            kind="member.removed",
            payload={"user_id": user_id, "by": actor.pk},
            also_notify=[user_id],
        )


def member_leave(*, user: User, group_id: int) -> None:
    """Leave a group; an owner's ownership passes to the longest-serving admin, else member."""
    with transaction.atomic():
        _lock_group(group_id)
        membership = _group_membership(user=user, group_id=group_id, for_update=True)
        new_owner = None
        if membership.role == Role.OWNER:
            candidates = Membership.objects.filter(conversation_id=group_id, left_at__isnull=True).exclude(
                pk=membership.pk
            )
            new_owner = (
                candidates.filter(role=Role.ADMIN).order_by("joined_at", "id").first()
                or candidates.order_by("joined_at", "id").first()
            )
        _close_membership(membership, by=None)
        messaging.system_message_create(
            conversation_id=group_id,
            actor=user,
            kind="member.left",
            payload={"user_id": user.pk},
            also_notify=[user.pk],
        )
        if new_owner is not None:
            Membership.objects.filter(pk=new_owner.pk).update(role=Role.OWNER)
            messaging.system_message_create(
                conversation_id=group_id,
                actor=user,
                kind="member.role_changed",
                payload={"user_id": new_owner.user_id, "role": Role.OWNER, "by": user.pk},
            )


def erase_user_groups(user: User) -> None:
    """Account erasure (registered with accounts): the user leaves every group they are in, as
    ``member_leave`` does (an owner's ownership passes on), inside the erasure's transaction.
    Groups are locked in id order, as concurrent erasures then queue instead of deadlocking."""
    group_ids = (
        Membership.objects.filter(user=user, left_at__isnull=True, conversation__kind=Conversation.Kind.GROUP)
        .order_by("conversation_id")
        .values_list("conversation_id", flat=True)
    )
    for group_id in list(group_ids):
        member_leave(user=user, group_id=group_id)


def member_set_role(*, actor: User, group_id: int, user_id: int, role: str) -> None:
    """Owner only: promote/demote admins, or hand ownership over (the old owner becomes admin)."""
    if role not in (Role.OWNER, Role.ADMIN, Role.MEMBER):
        raise ApplicationError("invalid_role", "Role must be owner, admin or member.")
    with transaction.atomic():
        _lock_group(group_id)
        membership = _group_membership(user=actor, group_id=group_id, for_update=True)
        if membership.role != Role.OWNER:
            raise PermissionDenied("Only the owner may change roles.", code="not_group_owner")
        if user_id == actor.pk:
            raise ApplicationError("cannot_change_own_role", "Transfer ownership to another member instead.")
        target = (
            Membership.objects.select_for_update()
            .filter(conversation_id=group_id, user_id=user_id, left_at__isnull=True)
            .first()
        )
        if target is None:
            raise NotFound("This user is not a member.", code="not_a_member")
        if target.role == role:
            return
        Membership.objects.filter(pk=target.pk).update(role=role)
        messaging.system_message_create(
            conversation_id=group_id,
            actor=actor,
            kind="member.role_changed",
            payload={"user_id": user_id, "role": role, "by": actor.pk},
        )
        if role == Role.OWNER:
            Membership.objects.filter(pk=membership.pk).update(role=Role.ADMIN)
            messaging.system_message_create(
                conversation_id=group_id,
                actor=actor,
                kind="member.role_changed",
                payload={"user_id": actor.pk, "role": Role.ADMIN, "by": actor.pk},
            )
