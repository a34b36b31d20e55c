"""Conversations and membership: the e2ee policy, joining, opening a direct conversation, device
key events in every conversation of a user, and system messages (membership changes, calls)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound
from messaging import selectors
from messaging import validators as v
from messaging.models import Conversation, Event, Membership, Message
from messaging.send_rules import registry

from .contacts import check_can_contact, check_not_blocked
from .counters import allocate
from .events import announce_on_commit, fan_out_on_commit

logger = logging.getLogger("healthchat.messaging")


_LOCK_AND_NUMBER_SQL = """
WITH locked AS (
    SELECT id FROM messaging_conversation WHERE id = ANY(%s) ORDER BY id FOR UPDATE
)
UPDATE messaging_conversation c SET last_event = c.last_event + 1
FROM locked WHERE c.id = locked.id
RETURNING c.id, c.last_event
"""


def device_keys_event_record(*, user: User, device_id: int, kind: str) -> None:
    """A device of ``user`` has a new identity key (``identity.changed``) or published its first
    keys (``device.added``): one entry in the event log of every conversation ``user`` is an
    active member of (each locked in id order and numbered), so ``sync`` replays it to everyone
    who talks to them and to their other devices; the same frames go live on commit."""
    if kind not in v.DEVICE_EVENT_KINDS:
        raise ValueError(f"not a device event: {kind}")
    conversation_ids = list(
        Membership.objects.filter(user=user, left_at__isnull=True).values_list("conversation_id", flat=True)
    )
    if not conversation_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_AND_NUMBER_SQL, [conversation_ids])
        numbers = {int(cid): int(number) for cid, number in cursor.fetchall()}
    data = {"user_id": user.pk, "device_id": device_id}
    Event.objects.bulk_create(
        [Event(conversation_id=cid, number=n, kind=kind, data=data) for cid, n in sorted(numbers.items())]
    )
    members: dict[int, list[int]] = {}
    for cid, uid in Membership.objects.filter(
        conversation_id__in=list(numbers), left_at__isnull=True
    ).values_list("conversation_id", "user_id"):
        members.setdefault(cid, []).append(uid)
    for cid, number in sorted(numbers.items()):
        frame = {"type": kind, "data": {"conversation_id": cid, **data}, "event": number}
        fan_out_on_commit(user_ids=members.get(cid, []), frame=frame)


def patient_doctor(role: str | None, other_role: str | None) -> bool:
    return {role, other_role} == {User.Role.PATIENT, User.Role.DOCTOR}


def e2ee_for_new_conversation(*, requested: bool | None, patient_doctor: bool) -> bool:
    """Whether a new conversation is end-to-end encrypted, under the deployment's policy
    (``HEALTHCHAT_E2EE_POLICY``), which the opener's ``requested`` choice cannot override:
    ``off`` refuses encryption (``e2ee_disabled``); ``required`` encrypts every patient-doctor
    direct conversation and refuses ``e2ee: false`` for one (``e2ee_mandatory``); otherwise
    (``optional``, and other conversations under ``required``) the opener chooses, plaintext
    unless asked."""
    policy = settings.HEALTHCHAT_E2EE_POLICY
    if policy == "off":
        if requested:
            raise ApplicationError(
                "e2ee_disabled",
                "This service does not offer end-to-end encrypted conversations.",
                status=422,
                fields={"e2ee": ["disabled"]},
            )
        return False
    if policy == "required" and patient_doctor:
        if requested is False:
            raise ApplicationError(
                "e2ee_mandatory",
                "Conversations between a patient and a doctor are end-to-end encrypted on this service.",
                status=422,
                fields={"e2ee": ["mandatory"]},
            )
        return True
    return bool(requested)


def membership_join(
    *, conversation: Conversation, user: User, role: str, added_by: User | None
) -> Membership:
    """The one place a user joins a conversation: a new row, or a former member's row made
    active again (one row per user and conversation). Call with the conversation row locked
    (``lock``) and ``conversation``'s counters fresh.

    The lower bound of what the member may read (``visible_after_seq``) is fixed here, from the
    group's ``history_visible_to_new_members`` as it is now: changing the setting later applies
    to members who join later, never to this membership."""
    last_seq, last_event = conversation.last_seq, conversation.last_event
    shares = conversation.kind == Conversation.Kind.DIRECT or conversation.history_visible_to_new_members
    bound = 0 if shares else last_seq
    membership = Membership.objects.filter(conversation=conversation, user=user).first()
    if membership is None:
        return Membership.objects.create(
            conversation=conversation,
            user=user,
            role=role,
            added_by=added_by,
            joined_seq=last_seq,
            joined_event=last_event,
            visible_after_seq=bound,
        )
    if membership.left_at is None:
        raise ApplicationError("already_member", "This user is already a member.", status=409)
    membership.role = role
    membership.added_by = added_by
    membership.joined_at = timezone.now()
    membership.joined_seq = last_seq
    membership.joined_event = last_event
    membership.visible_after_seq = bound
    membership.left_at = None
    membership.left_seq = None
    membership.left_event = None
    membership.removed_by = None
    membership.delivered_seq = max(membership.delivered_seq, last_seq)
    membership.read_seq = max(membership.read_seq, last_seq)
    membership.save()
    return membership


def conversation_open_direct(
    *, user: User, peer_id: int, e2ee: bool | None = None
) -> tuple[Conversation, bool]:
    """Open (or return) the one direct conversation between ``user`` and ``peer_id``; never
    while either side has blocked the other (the existing conversation included). Whether a new
    one is encrypted follows ``e2ee_for_new_conversation``."""
    key = f"{min(user.pk, peer_id)}:{max(user.pk, peer_id)}"
    existing = Conversation.objects.filter(direct_key=key).first()
    if existing is not None:
        if not Membership.objects.filter(conversation=existing, user=user).exists():
            raise NotFound("No such conversation.", code="conversation_not_found")
        check_not_blocked(user_id=user.pk, peer_id=peer_id)
        if e2ee is not None and bool(e2ee) != existing.e2ee:
            # The policy decided when it was created; a client cannot change it now either.
            peer_role = User.objects.filter(pk=peer_id).values_list("role", flat=True).first()
            e2ee_for_new_conversation(requested=e2ee, patient_doctor=patient_doctor(user.role, peer_role))
        return existing, False
    peer = User.objects.filter(pk=peer_id).first()
    if peer is None:
        raise NotFound("No such user.", code="user_not_found")
    check_can_contact(user=user, peer=peer)
    use_e2ee = e2ee_for_new_conversation(requested=e2ee, patient_doctor=patient_doctor(user.role, peer.role))
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.DIRECT, direct_key=key, e2ee=use_e2ee, created_by=user
            )
            for member in (user, peer):
                membership_join(
                    conversation=conversation, user=member, role=Membership.Role.MEMBER, added_by=None
                )
    except IntegrityError:
        existing = Conversation.objects.filter(direct_key=key).first()
        if existing is None:
            raise
        return existing, False
    return conversation, True


def system_message_create(
    *,
    conversation_id: int,
    actor: User,
    kind: str,
    payload: dict[str, Any],
    also_notify: list[int] | None = None,
) -> Message:
    """A membership change or group update, recorded in history with its own seq and event.

    Call inside the caller's transaction, after the conversation row is locked (``lock``) and
    the membership change is written, so the recipients are the members as of this event.
    """
    if kind not in v.MEMBER_EVENT_KINDS:
        raise ValueError(f"not a member event: {kind}")
    seq, number = allocate(conversation_id, message=True)
    message = Message.objects.create(
        conversation_id=conversation_id,
        seq=seq,
        sender=actor,
        client_id=uuid.uuid4(),
        kind=Message.Kind.SYSTEM,
        system={"event": kind, **payload},
    )
    Event.objects.create(conversation_id=conversation_id, number=number, kind=kind, message=message)
    recipients = selectors.active_member_ids(conversation_id=conversation_id)
    recipients += [uid for uid in also_notify or [] if uid not in recipients]
    fan_out_on_commit(user_ids=recipients, frame=selectors.event_frame(kind, message, number))
    return message


def call_log_message_create(
    *, conversation_id: int, actor: User, payload: dict[str, Any], notify: bool = False
) -> Message:
    """A call's entry in the history (for the calls app): a system message (``system.event`` is
    ``"call"``) with its own seq, logged and delivered as ``message.new``, so it needs no event
    kind of its own. ``notify``: the other members get a push for it, as for a new message (a
    missed call). Call inside the caller's transaction."""
    seq, number = allocate(conversation_id, message=True)
    message = Message.objects.create(
        conversation_id=conversation_id,
        seq=seq,
        sender=actor,
        client_id=uuid.uuid4(),
        kind=Message.Kind.SYSTEM,
        system={"event": "call", **payload},
    )
    Event.objects.create(
        conversation_id=conversation_id, number=number, kind=Event.Kind.MESSAGE_NEW, message=message
    )
    recipients = selectors.active_member_ids(conversation_id=conversation_id)
    fan_out_on_commit(user_ids=recipients, frame=selectors.event_frame("message.new", message, number))
    if notify:
        announce_on_commit(message, sender_id=actor.pk, recipients=recipients)
        registry.run_hooks([(message.pk, conversation_id, actor.pk)])
    return message
