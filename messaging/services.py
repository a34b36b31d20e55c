"""Messaging actions: open conversations, send/edit/delete messages, receipts, typing.

Each action is one function that owns its transaction; live events and the "message needs
push" hook fire only after commit. The channel layer is a fast path only: every event is also
in the per-conversation log that ``sync`` replays.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import Q, QuerySet, Sum, prefetch_related_objects
from django.db.models.functions import Greatest
from django.dispatch import Signal
from django.utils import timezone

from accounts.actors import Actor, Operator, require_permission
from accounts.models import DoctorProfile, User
from audit import actions as audited
from audit import services as audit
from audit.client import COMMAND, SYSTEM, Client
from core.errors import ApplicationError, NotFound, PermissionDenied
from core.realtime import publish, publish_on_commit, user_group

from . import frames, reach, selectors
from . import validators as v
from .models import Attachment, Block, Conversation, Event, Membership, Message, MessageCiphertext
from .reach import Reach

logger = logging.getLogger("healthchat.messaging")

# Sent after commit for every new message: the push worker listens (issue "Push").
# kwargs: message_id, conversation_id, sender_id, recipient_ids
message_committed = Signal()
# Sent after commit when a message is edited or deleted (push lets notified devices refresh or
# withdraw the notification). kwargs: message_id, conversation_id, event
message_updated = Signal()

# Extra rules that let a doctor open a conversation with a patient (e.g. a consultation).
contact_rules: list[Any] = []


@dataclass(frozen=True)
class BatchStatement:
    """One PostgreSQL statement of a group-commit batch and what its answer means, so that both
    batch writers run it: the worker thread's (Django's connection) and the event loop's
    (``messaging.loop_writer``, async psycopg). ``answer(rows)`` interprets the statement's rows
    (a rule: ``{index: error}``); for a batch hook it is called after the COMMIT, only when the
    statement returned rows, and may block (the loop writer runs it in a worker thread)."""

    sql: str
    params: Any
    answer: Callable[[list[tuple[Any, ...]]], Any]


# Called inside a group-commit batch's transaction with [(message_id, conversation_id, sender_id)]
# for the messages it created (the push outbox is written with them, in one statement). When no
# hook is registered, each message announces itself with ``message_committed`` instead. A hook
# with a ``statement`` attribute (``statement(written) -> BatchStatement | None``, PostgreSQL)
# can also run in the event loop's writer; without one, batches take the worker thread.
batch_written_hooks: list[Any] = []
# Who may reach whom (e.g. payments: read-only for the patient after a consultation) is asked
# through ``messaging.reach`` by every path that puts a user's content in front of others.


# --- Live fan-out -----------------------------------------------------------------------
def fan_out(*, user_ids: list[int], frame: dict[str, Any], exclude_channel: str | None = None) -> None:
    """Send ``frame`` to every device of ``user_ids`` (on whatever process they are)."""
    event: dict[str, Any] = {"type": "client.event", "frame": frame}
    if exclude_channel:
        event["exclude_channel"] = exclude_channel
    for user_id in user_ids:
        publish(user_group(user_id), event)


def fan_out_encrypted(
    *, per_user: dict[int, dict[str, str]], frame: dict[str, Any], exclude_channel: str | None = None
) -> None:
    """Send ``frame`` (a message whose ``ciphertext`` is null) to each user's sockets with that
    user's ``{device_id: ciphertext}``: each socket fills in its own device's copy, so no device
    receives another's (a socket without a device id gets none)."""
    for user_id, ciphertexts in per_user.items():
        event: dict[str, Any] = {"type": "client.event", "frame": frame, "ciphertexts": ciphertexts}
        if exclude_channel:
            event["exclude_channel"] = exclude_channel
        publish(user_group(user_id), event)


def fan_out_on_commit(
    *, user_ids: list[int], frame: dict[str, Any], exclude_channel: str | None = None
) -> None:
    transaction.on_commit(lambda: fan_out(user_ids=user_ids, frame=frame, exclude_channel=exclude_channel))


def _announce_on_commit(message: Message, *, sender_id: int, recipients: list[int]) -> None:
    """After commit: ``message_committed`` for the push worker (recipients other than the sender)."""
    others = [uid for uid in recipients if uid != sender_id]
    transaction.on_commit(
        lambda: message_committed.send(
            sender=Message,
            message_id=message.pk,
            conversation_id=message.conversation_id,
            sender_id=sender_id,
            recipient_ids=others,
        )
    )


# --- Counters under the conversation's row lock ------------------------------------------
def _allocate(conversation_id: int, *, message: bool) -> tuple[int, int]:
    """Take the next (seq, event number) for the conversation, locking its row until commit."""
    with connection.cursor() as cursor:
        if message:
            cursor.execute(
                "UPDATE messaging_conversation SET last_seq = last_seq + 1, last_event = last_event + 1,"
                " last_message_at = %s WHERE id = %s RETURNING last_seq, last_event",
                [timezone.now(), conversation_id],
            )
        else:
            cursor.execute(
                "UPDATE messaging_conversation SET last_event = last_event + 1"
                " WHERE id = %s RETURNING last_seq, last_event",
                [conversation_id],
            )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return int(row[0]), int(row[1])


def _lock(conversation_id: int) -> tuple[int, int]:
    """Lock the conversation row without taking a number; returns (last_seq, last_event)."""
    row = (
        Conversation.objects.select_for_update()
        .filter(pk=conversation_id)
        .values_list("last_seq", "last_event")
        .first()
    )
    if row is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return row


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


def _verified_doctor(user: User) -> bool:
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
    if user.role == User.Role.PATIENT and _verified_doctor(peer):
        return
    if _verified_doctor(user) and _verified_doctor(peer):
        return
    if _verified_doctor(user) and peer.role == User.Role.PATIENT:
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


def _patient_doctor(role: str | None, other_role: str | None) -> bool:
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
            e2ee_for_new_conversation(requested=e2ee, patient_doctor=_patient_doctor(user.role, peer_role))
        return existing, False
    peer = User.objects.filter(pk=peer_id).first()
    if peer is None:
        raise NotFound("No such user.", code="user_not_found")
    check_can_contact(user=user, peer=peer)
    use_e2ee = e2ee_for_new_conversation(requested=e2ee, patient_doctor=_patient_doctor(user.role, peer.role))
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


# --- Messages -----------------------------------------------------------------------------
class SendResult:
    """A send's outcome: the message as clients see it (``data``), whether this call created
    it, and the ``Message`` (built from ``data`` on first use when the batch path wrote it)."""

    __slots__ = ("_message", "created", "data")

    def __init__(self, message: Message | None, created: bool, data: dict[str, Any]) -> None:
        self._message = message
        self.created = created
        self.data = data

    @property
    def message(self) -> Message:
        if self._message is None:
            d = self.data
            self._message = Message(
                id=d["id"],
                conversation_id=d["conversation_id"],
                seq=d["seq"],
                sender_id=d["sender_id"],
                client_id=uuid.UUID(d["client_id"]),
                kind=d["kind"],
                body=d["body"],
                reply_to_id=d["reply_to"],
                created_at=datetime.fromisoformat(d["created_at"]),
            )
        return self._message


def _existing_send(sender: User, client_id: uuid.UUID, conversation_id: int) -> Message | None:
    message = Message.objects.filter(sender=sender, client_id=client_id).first()
    if message is not None and message.conversation_id != conversation_id:
        raise ApplicationError(
            "client_id_reused", "This client_id was already used for another conversation.", status=409
        )
    return message


def check_can_send(*, sender: User, conversation_id: int) -> Membership:
    membership = selectors.membership_get(user=sender, conversation_id=conversation_id)
    conversation = membership.conversation
    if conversation.kind == Conversation.Kind.DIRECT:
        peer_ids = [
            uid for uid in map(int, (conversation.direct_key or "0:0").split(":")) if uid != sender.pk
        ]
        if peer_ids and is_blocked(sender.pk, peer_ids[0]):
            raise PermissionDenied("This conversation is blocked.", code="blocked")
    return membership


class _Duplicate(Exception):
    """The client_id was already used: roll back and return the original."""


_SEND_SQL = """
WITH me AS (
    SELECT 1 FROM messaging_membership
    WHERE conversation_id = %(c)s AND user_id = %(u)s AND left_at IS NULL
), blocked AS (
    SELECT 1 FROM messaging_block b
    JOIN messaging_membership o ON o.conversation_id = %(c)s AND o.user_id <> %(u)s AND o.left_at IS NULL
    WHERE %(direct)s AND ((b.blocker_id = o.user_id AND b.blocked_id = %(u)s)
                       OR (b.blocker_id = %(u)s AND b.blocked_id = o.user_id))
), reply_ok AS (
    SELECT %(reply)s::bigint IS NULL
        OR EXISTS (SELECT 1 FROM messaging_message WHERE id = %(reply)s AND conversation_id = %(c)s) AS ok
), msg AS (
    INSERT INTO messaging_message
        (conversation_id, seq, sender_id, client_id, kind, body, system, reply_to_id, created_at)
    SELECT %(c)s, %(seq)s, %(u)s, %(cid)s, 'text', %(body)s, NULL, %(reply)s, %(now)s
    WHERE EXISTS (SELECT 1 FROM me) AND NOT EXISTS (SELECT 1 FROM blocked) AND (SELECT ok FROM reply_ok)
    ON CONFLICT (sender_id, client_id) DO NOTHING
    RETURNING id
), ev AS (
    INSERT INTO messaging_event (conversation_id, number, kind, message_id, data, created_at)
    SELECT %(c)s, %(num)s, 'message.new', id, NULL, %(now)s FROM msg
), mine AS (
    UPDATE messaging_membership
    SET read_seq = GREATEST(read_seq, %(seq)s), delivered_seq = GREATEST(delivered_seq, %(seq)s)
    WHERE conversation_id = %(c)s AND user_id = %(u)s AND EXISTS (SELECT 1 FROM msg)
)
SELECT (SELECT id FROM msg), EXISTS (SELECT 1 FROM me), EXISTS (SELECT 1 FROM blocked),
       (SELECT ok FROM reply_ok),
       ARRAY(SELECT user_id FROM messaging_membership WHERE conversation_id = %(c)s AND left_at IS NULL)
"""


def _e2ee_mismatch(e2ee: bool, encrypted: bool) -> ApplicationError | None:
    if e2ee and not encrypted:
        return ApplicationError(
            "e2ee_required", "This conversation is end-to-end encrypted: send ciphertexts, not a body."
        )
    if encrypted and not e2ee:
        return ApplicationError(
            "e2ee_not_enabled", "This conversation is not end-to-end encrypted: send a body, not ciphertexts."
        )
    return None


def _write_message_sql(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    encrypted: bool = False,
) -> tuple[Message, int, list[int]]:
    """PostgreSQL: the whole send in two statements after BEGIN (lock + allocate; then check,
    insert message and event, advance the sender's cursors, read the recipients)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE messaging_conversation SET last_seq = last_seq + 1, last_event = last_event + 1,"
            " last_message_at = %s WHERE id = %s RETURNING last_seq, last_event, kind, e2ee",
            [now, conversation_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFound("No such conversation.", code="conversation_not_found")
        seq, number, kind, e2ee = int(row[0]), int(row[1]), row[2], bool(row[3])
        cursor.execute(
            _SEND_SQL,
            {
                "c": conversation_id,
                "u": sender.pk,
                "seq": seq,
                "num": number,
                "cid": cid,
                "body": text,
                "reply": reply_to,
                "now": now,
                "direct": kind == Conversation.Kind.DIRECT,
            },
        )
        message_id, is_member, blocked, reply_ok, recipients = cursor.fetchone()
    if not is_member:
        raise NotFound("No such conversation.", code="conversation_not_found")
    if e2ee != encrypted:
        mismatch = _e2ee_mismatch(e2ee, encrypted)
        assert mismatch is not None
        raise mismatch
    if blocked:
        raise PermissionDenied("This conversation is blocked.", code="blocked")
    if not reply_ok:
        raise ApplicationError("invalid_reply_to", "reply_to must be a message of this conversation.")
    if message_id is None:
        raise _Duplicate
    reach.check(sender=sender, conversation_id=conversation_id)
    message = Message(
        id=message_id,
        conversation_id=conversation_id,
        seq=seq,
        sender=sender,
        client_id=cid,
        kind=Message.Kind.TEXT,
        body=text,
        reply_to_id=reply_to,
        created_at=now,
    )
    return message, number, list(recipients)


def _write_message_orm(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    encrypted: bool = False,
) -> tuple[Message, int, list[int]]:
    """Other databases (the embedded SQLite run): the same steps through the ORM."""
    membership = check_can_send(sender=sender, conversation_id=conversation_id)
    mismatch = _e2ee_mismatch(membership.conversation.e2ee, encrypted)
    if mismatch is not None:
        raise mismatch
    if (
        reply_to is not None
        and not Message.objects.filter(pk=reply_to, conversation_id=conversation_id).exists()
    ):
        raise ApplicationError("invalid_reply_to", "reply_to must be a message of this conversation.")
    if Message.objects.filter(sender=sender, client_id=cid).exists():
        raise _Duplicate
    seq, number = _allocate(conversation_id, message=True)
    reach.check(sender=sender, conversation_id=conversation_id)
    recipients = selectors.active_member_ids(conversation_id=conversation_id)
    if sender.pk not in recipients:  # removed between the check and the lock
        raise NotFound("No such conversation.", code="conversation_not_found")
    message = Message.objects.create(
        conversation_id=conversation_id,
        seq=seq,
        sender=sender,
        client_id=cid,
        body=text,
        reply_to_id=reply_to,
    )
    Event.objects.create(
        conversation_id=conversation_id, number=number, kind=Event.Kind.MESSAGE_NEW, message=message
    )
    Membership.objects.filter(conversation_id=conversation_id, user=sender).update(
        read_seq=Greatest("read_seq", seq), delivered_seq=Greatest("delivered_seq", seq)
    )
    return message, number, recipients


def message_send(
    *,
    sender: User,
    conversation_id: int,
    client_id: str | uuid.UUID,
    body: str | None,
    reply_to: int | None = None,
    attachment_ids: list[int] | None = None,
    origin_channel: str | None = None,
    ciphertexts: dict[str, str] | None = None,
    sender_device_id: int | None = None,
) -> SendResult:
    """Send a message. Idempotent on ``client_id``; returns only once committed.

    The conversation row lock orders sends (gapless ``seq``) and membership changes, so a
    member removed before this commit never receives it. End-to-end encrypted conversations
    take ``ciphertexts`` instead of ``body`` (``message_send_encrypted``).
    """
    cid = v.validate_client_id(client_id)
    ids = v.validate_attachment_ids(attachment_ids)
    if ciphertexts is not None:
        return message_send_encrypted(
            sender=sender,
            conversation_id=conversation_id,
            cid=cid,
            body=body,
            ciphertexts=ciphertexts,
            sender_device_id=sender_device_id,
            reply_to=reply_to,
            attachment_ids=ids,
            origin_channel=origin_channel,
        )
    text = _plain_text(body, ids)
    try:
        with transaction.atomic():
            return _send_in_transaction(
                sender=sender,
                conversation_id=conversation_id,
                cid=cid,
                text=text,
                reply_to=reply_to,
                attachment_ids=ids,
                origin_channel=origin_channel,
            )
    except (IntegrityError, _Duplicate):
        return _original_send(sender, cid, conversation_id)


def _plain_text(body: str | None, attachment_ids: list[int]) -> str:
    return v.validate_body(body or "") if (body and body.strip()) or not attachment_ids else ""


def _original_send(sender: User, cid: uuid.UUID, conversation_id: int) -> SendResult:
    """Sent before (a lost ack), or a concurrent send of the same client_id won."""
    existing = _existing_send(sender, cid, conversation_id)
    if existing is None:
        raise ApplicationError("conflict", "The message could not be stored; send it again.", status=409)
    return SendResult(existing, False, selectors.message_data(existing))


def _send_in_transaction(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    attachment_ids: list[int],
    origin_channel: str | None,
    announce: bool = True,
) -> SendResult:
    """The writes of a plaintext send, inside the caller's transaction; events on commit."""
    write = _write_message_sql if connection.vendor == "postgresql" else _write_message_orm
    message, number, recipients = write(
        sender=sender, conversation_id=conversation_id, cid=cid, text=text, reply_to=reply_to
    )
    attachments = (
        _attach(sender=sender, message=message, attachment_ids=attachment_ids) if attachment_ids else []
    )
    data = selectors.message_data(message, attachments)
    frame = {"type": "message.new", "data": {"message": data}, "event": number}
    fan_out_on_commit(user_ids=recipients, frame=frame, exclude_channel=origin_channel)
    if announce:
        _announce_on_commit(message, sender_id=sender.pk, recipients=recipients)
    return SendResult(message, True, data)


_GENERIC_PLANS_SQL = "SET LOCAL plan_cache_mode = force_generic_plan"

_LOCK_BATCH_SQL = """
SELECT id, kind, direct_key FROM messaging_conversation
WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
"""

# The kinds of conversations (they never change), without a lock: the loop writer learns a
# conversation's kind before its first batch, so that batch's rules share the first round trip.
_KINDS_SQL = "SELECT id, kind, direct_key FROM messaging_conversation WHERE id = ANY(%(ids)s::bigint[])"

# One statement for a whole batch of plaintext sends whose conversations are already locked
# (so this statement's snapshot sees every send committed before the locks were granted): check
# membership, blocks, reply_to, e2ee and earlier use of the client_id per send; number the
# accepted ones per conversation in arrival order (gapless); insert messages and events; advance
# the senders' own cursors; return each send's outcome and each conversation's recipients.
_SEND_BATCH_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ord)s::int[], %(conv)s::bigint[], %(sender)s::bigint[], %(cid)s::uuid[],
                         %(body)s::text[], %(reply)s::bigint[]) AS t(ord, conv, sender, cid, body, reply)
), checked AS (
    SELECT i.*, c.e2ee, (m.id IS NOT NULL AND m.left_at IS NULL) AS member,
        c.kind = 'direct' AND EXISTS (
            SELECT 1 FROM messaging_membership o
            JOIN messaging_block b ON (b.blocker_id = o.user_id AND b.blocked_id = i.sender)
                                   OR (b.blocker_id = i.sender AND b.blocked_id = o.user_id)
            WHERE o.conversation_id = i.conv AND o.user_id <> i.sender AND o.left_at IS NULL) AS blocked,
        (i.reply IS NULL OR EXISTS (SELECT 1 FROM messaging_message r
                                    WHERE r.id = i.reply AND r.conversation_id = i.conv)) AS reply_ok,
        (SELECT d.id FROM messaging_message d WHERE d.sender_id = i.sender AND d.client_id = i.cid) AS dup_id
    FROM input i JOIN messaging_conversation c ON c.id = i.conv
    -- the sender's membership joined on the unique (conversation, user) pair: at most one row
    -- per send, probed by index (an EXISTS here was planned as a hash of every active
    -- membership when the statistics were stale: work growing with the table, per batch)
    LEFT JOIN messaging_membership m ON m.conversation_id = i.conv AND m.user_id = i.sender
), ok AS (
    SELECT ord, conv, sender, cid, body, reply, row_number() OVER (PARTITION BY conv ORDER BY ord) AS k
    FROM checked WHERE member AND NOT e2ee AND NOT blocked AND reply_ok AND dup_id IS NULL
), counts AS (
    SELECT conv, count(*) AS n FROM ok GROUP BY conv
), bumped AS (
    UPDATE messaging_conversation c
    SET last_seq = c.last_seq + counts.n, last_event = c.last_event + counts.n, last_message_at = %(now)s
    FROM counts WHERE c.id = counts.conv
    RETURNING c.id, c.last_seq - counts.n AS seq0, c.last_event - counts.n AS event0
), numbered AS (
    SELECT ok.*, b.seq0 + ok.k AS seq, b.event0 + ok.k AS number FROM ok JOIN bumped b ON b.id = ok.conv
), msg AS (
    INSERT INTO messaging_message
        (conversation_id, seq, sender_id, client_id, kind, body, system, reply_to_id, created_at)
    SELECT conv, seq, sender, cid, 'text', body, NULL, reply, %(now)s FROM numbered
    ON CONFLICT (sender_id, client_id) DO NOTHING
    RETURNING id, conversation_id, seq
), ev AS (
    INSERT INTO messaging_event (conversation_id, number, kind, message_id, data, created_at)
    SELECT n.conv, n.number, 'message.new', m.id, NULL, %(now)s
    FROM msg m JOIN numbered n ON n.conv = m.conversation_id AND n.seq = m.seq
), mine AS (
    UPDATE messaging_membership mm
    SET read_seq = GREATEST(mm.read_seq, x.seq), delivered_seq = GREATEST(mm.delivered_seq, x.seq)
    FROM (SELECT conv, sender, max(seq) AS seq FROM numbered GROUP BY conv, sender) x
    WHERE mm.conversation_id = x.conv AND mm.user_id = x.sender
), rcpt AS (
    SELECT conversation_id AS conv, array_agg(user_id) AS users FROM messaging_membership
    WHERE conversation_id IN (SELECT conv FROM counts) AND left_at IS NULL GROUP BY conversation_id
)
SELECT c.ord, m.id, n.seq, n.number, c.member, c.e2ee, c.blocked, c.reply_ok, c.dup_id,
       CASE WHEN n.k = 1 THEN r.users END
FROM checked c
LEFT JOIN numbered n ON n.ord = c.ord
LEFT JOIN msg m ON m.conversation_id = n.conv AND m.seq = n.seq
LEFT JOIN rcpt r ON r.conv = c.conv
"""


class _BatchConflict(Exception):
    """The batch's transaction is undone and redone send by send: a concurrent send took a
    client_id between the check and the insert (the seqs already numbered would leave a gap),
    or a batch hook failed (the slow path runs hooks in savepoints, so a failing hook never
    undoes the messages)."""


# (index in the batch, the item, its client_id, attachment ids, validated text)
_Prepared = tuple[int, dict[str, Any], uuid.UUID, list[int], str]


Refusals = Callable[[], dict[int, Exception]]


def _drop_refused(
    entries: list[_Prepared], results: list[SendResult | Exception | None], refusals: Refusals | None
) -> list[_Prepared]:
    """Entries the caller's limit (``refusals``: ``{index in the batch: error}``) lets through;
    the others get their error."""
    refused = refusals() if refusals is not None else {}
    if not refused:
        return entries
    kept: list[_Prepared] = []
    for entry in entries:
        error = refused.get(entry[0])
        if error is None:
            kept.append(entry)
        else:
            results[entry[0]] = error
    return kept


def message_send_many(
    *, items: list[dict[str, Any]], refusals: Refusals | None = None
) -> list[SendResult | Exception]:
    """Group commit: plaintext sends of many sockets in ONE transaction (one COMMIT, one thread
    hop), each refused send without undoing the others.

    Each item has ``message_send``'s keyword arguments. On PostgreSQL the whole batch is a few
    statements (lock the conversations in ascending id order, so batches cannot deadlock; one
    statement that checks, numbers and writes every send; the batch hooks); sends with
    attachments, and other databases, take one savepoint per send. A socket's own sends keep
    their order. A result is the ``SendResult`` or the exception that refused that send.
    Nothing is acked before the commit. ``refusals`` (the send limit) is asked once the
    transaction has begun and locked, before anything is written: sends it refuses are not
    stored.
    """
    results: list[SendResult | Exception | None] = [None] * len(items)
    prepared: list[_Prepared] = []
    for index, item in enumerate(items):
        try:
            cid = v.validate_client_id(item["client_id"])
            ids = v.validate_attachment_ids(item.get("attachment_ids"))
            prepared.append((index, item, cid, ids, _plain_text(item.get("body"), ids)))
        except ApplicationError as exc:
            results[index] = exc
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]] = []
    if prepared:
        batched = connection.vendor == "postgresql"
        if batched:
            try:
                try:
                    _write_batch(prepared, results, duplicates, refusals)
                except OperationalError:
                    if connection.in_atomic_block or not _retry_on_fresh_connection(
                        prepared, results, duplicates
                    ):
                        raise
                    _write_batch(prepared, results, duplicates, refusals)
            except _BatchConflict:
                for index, *_ in prepared:
                    results[index] = None
                duplicates.clear()
                batched = False
        if not batched:
            _write_one_by_one(_drop_refused(prepared, results, refusals), results, duplicates)
    for index, item, cid in duplicates:
        try:
            results[index] = _original_send(item["sender"], cid, item["conversation_id"])
        except ApplicationError as exc:
            results[index] = exc
    return [
        r if r is not None else ApplicationError("internal_error", "Not processed.", status=500)
        for r in results
    ]


def _retry_on_fresh_connection(
    prepared: list[_Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
) -> bool:
    """After the batch's connection failed (closed by the server: a restart, a failover, an
    idle connection terminated while pooled), whether to run the batch once more on a new one:
    nothing of it can have been committed unless the failure hit the COMMIT itself, and even
    then its sends come back as the originals (client_id). Sends refused before the failure
    keep their refusal."""
    if connection.is_usable():
        return False  # not a dead connection: an error the retry would meet again
    connection.close()
    for index, *_ in prepared:
        results[index] = None
    duplicates.clear()
    logger.warning("batch's database connection was closed; retrying the batch on a new one")
    return True


def _run_batch_hooks(written: list[tuple[int, int, int]], hooks: list[Any], *, guarded: bool = True) -> None:
    """Run the batch hooks in the batch's transaction: ``guarded``, each in a savepoint (a
    failing hook is logged and never undoes the messages); unguarded (the fast path, two
    statements fewer per batch), a failure raises ``_BatchConflict`` to redo the batch guarded."""
    for hook in hooks:
        if not guarded:
            try:
                hook(written)
            except Exception as exc:
                logger.exception("batch hook failed: %s", getattr(hook, "__name__", hook))
                raise _BatchConflict from exc
            continue
        try:
            with transaction.atomic():
                hook(written)
        except Exception:  # a hook never undoes the messages
            logger.exception("batch hook failed: %s", getattr(hook, "__name__", hook))


@contextmanager
def _batch_transaction() -> Iterator[None]:
    """``transaction.atomic()`` for a batch of savepoints that raises instead of rolling back
    silently. A savepoint that cannot be rolled back (the connection died inside it) marks the
    whole transaction for rollback, and Django then ends the block with a ROLLBACK and no
    exception: the sends already written in it would be acked without being stored."""
    with transaction.atomic():
        yield
        if transaction.get_rollback():
            raise DatabaseError("the batch's transaction was lost (connection closed)")


def _write_one_by_one(
    prepared: list[_Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
) -> None:
    """The batch in one transaction, one savepoint per send."""
    hooks = list(batch_written_hooks)
    written: list[tuple[int, int, int]] = []
    with _batch_transaction():
        for index, item, cid, ids, text in sorted(prepared, key=lambda p: p[1]["conversation_id"]):
            _write_in_savepoint(index, item, cid, ids, text, results, duplicates, written, announce=not hooks)
        if written:
            _run_batch_hooks(written, hooks)


def _write_in_savepoint(
    index: int,
    item: dict[str, Any],
    cid: uuid.UUID,
    ids: list[int],
    text: str,
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
    written: list[tuple[int, int, int]],
    *,
    announce: bool,
) -> None:
    try:
        with transaction.atomic():
            result = _send_in_transaction(
                sender=item["sender"],
                conversation_id=item["conversation_id"],
                cid=cid,
                text=text,
                reply_to=item.get("reply_to"),
                attachment_ids=ids,
                origin_channel=item.get("origin_channel"),
                announce=announce,
            )
            written.append((result.message.pk, item["conversation_id"], item["sender"].pk))
            results[index] = result
    except (IntegrityError, _Duplicate):
        duplicates.append((index, item, cid))
    except Exception as exc:  # this send is refused; the savepoint undid it
        results[index] = exc


@contextmanager
def _pipeline() -> Iterator[None]:
    """psycopg's pipeline mode for the statements in the block (sent without waiting for each
    reply; one round trip until a result is fetched)."""
    # The health check (CONN_HEALTH_CHECKS: a SELECT 1 on a reused connection) before the
    # pipeline: inside it, the check's query would still be pending when Django sets autocommit.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw is None or not hasattr(raw, "pipeline"):
        yield
        return
    # An error can surface when the pipeline syncs, outside Django's cursor wrappers: wrapped
    # here too, so it becomes Django's exception and a broken connection is marked (closed at
    # the end of the thread hop instead of failing the next batch as well).
    with connection.wrap_database_errors, raw.pipeline():
        yield


# The kind and direct_key of conversations this process has locked before (they never change):
# with them known, a batch's locks, send statement and reach rules share one round trip.
_KINDS_MAX = 100_000
_kinds: dict[int, tuple[str, str | None]] = {}


def _remember_kinds(asked: set[int], locked: dict[int, tuple[str, str | None]]) -> None:
    """What the locks answered: the kinds of the conversations found; the others are gone."""
    for conversation_id in asked - set(locked):
        _kinds.pop(conversation_id, None)
    if len(_kinds) + len(locked) > _KINDS_MAX:
        _kinds.clear()
    _kinds.update(locked)


def _write_batch(
    prepared: list[_Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
    refusals: Refusals | None = None,
) -> None:
    """PostgreSQL group commit: lock, limit, rules, one statement for the plain sends, hooks,
    commit, pipelined (psycopg's pipeline mode spans the commit, so the hooks' statements and
    the COMMIT share one round trip): two round trips for a batch whose conversations this
    process has seen before, else three or four."""
    hooks = list(batch_written_hooks)
    written: list[tuple[int, int, int]] = []
    first_use: set[tuple[int, uuid.UUID]] = set()
    fresh: list[_Prepared] = []
    for entry in prepared:
        key = (entry[1]["sender"].pk, entry[2])
        if key in first_use:  # the same send twice in one batch: the later one returns the first
            duplicates.append((entry[0], entry[1], entry[2]))
        else:
            first_use.add(key)
            fresh.append(entry)
    known = not any(e[3] for e in fresh) and all(e[1]["conversation_id"] in _kinds for e in fresh)
    with _pipeline(), _batch_transaction():
        if known:
            written += _write_known_batch(fresh, results, duplicates, refusals, announce=not hooks)
        else:
            written += _write_locked_batch(fresh, results, duplicates, refusals, announce=not hooks)
        if written:
            _run_batch_hooks(written, hooks, guarded=False)


def _begin_and_lock(cursor: Any, fresh: list[_Prepared]) -> None:
    # The batch's statements are prepared after a few uses (DATABASE_PREPARE_THRESHOLD); a
    # generic plan spares planning them again for every batch (the default would re-plan the
    # send statement each time, its array parameters making the generic plan look dearer).
    cursor.execute(_GENERIC_PLANS_SQL)
    cursor.execute(_LOCK_BATCH_SQL, {"ids": sorted({e[1]["conversation_id"] for e in fresh})})


def _write_known_batch(
    fresh: list[_Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
    refusals: Refusals | None,
    *,
    announce: bool,
) -> list[tuple[int, int, int]]:
    """One round trip: BEGIN, the locks, the send statement and the reach rules' queries
    (taken when the kinds are remembered from earlier batches), then the answers. A send a rule
    refuses was written already: the batch is undone and redone send by send (rules refuse
    rarely: a patient writing after the consultation closed)."""
    with connection.cursor() as lock_cursor, connection.cursor() as send_cursor:
        _begin_and_lock(lock_cursor, fresh)
        plain = _drop_refused(fresh, results, refusals)
        if not plain:
            lock_cursor.fetchall()
            return []
        now = _execute_plain_batch(send_cursor, plain)
        ruled = reach.refusals(send_reaches(plain))  # its query's answer ends the round trip
        locked = {int(row[0]): (row[1], row[2]) for row in lock_cursor.fetchall()}
        rows = sorted(send_cursor.fetchall())
    _remember_kinds({e[1]["conversation_id"] for e in fresh}, locked)
    if ruled:
        raise _BatchConflict
    return _plain_batch_results(plain, rows, now, results, duplicates, announce=announce)


def _write_locked_batch(
    fresh: list[_Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
    refusals: Refusals | None,
    *,
    announce: bool,
) -> list[tuple[int, int, int]]:
    """BEGIN and the locks first (their answer names each conversation's kind), then the rules,
    the send statement, and the sends with attachments one by one."""
    written: list[tuple[int, int, int]] = []
    with connection.cursor() as cursor:
        _begin_and_lock(cursor, fresh)
        locked = {int(row[0]): (row[1], row[2]) for row in cursor.fetchall()}
    _remember_kinds({e[1]["conversation_id"] for e in fresh}, locked)
    fresh = _drop_refused(fresh, results, refusals)
    one_by_one = {e[1]["conversation_id"] for e in fresh if e[3]}  # sends with attachments
    plain: list[_Prepared] = []
    slow: list[_Prepared] = []
    for entry in fresh:
        conversation_id = entry[1]["conversation_id"]
        if conversation_id not in locked:
            results[entry[0]] = NotFound("No such conversation.", code="conversation_not_found")
        elif conversation_id in one_by_one:
            slow.append(entry)
        else:
            plain.append(entry)
    plain = _apply_reach_rules(plain, results)
    if plain:
        with connection.cursor() as cursor:
            now = _execute_plain_batch(cursor, plain)
            rows = sorted(cursor.fetchall())
        written += _plain_batch_results(plain, rows, now, results, duplicates, announce=announce)
    for index, item, cid, ids, text in slow:
        _write_in_savepoint(index, item, cid, ids, text, results, duplicates, written, announce=announce)
    return written


def send_reaches(plain: list[_Prepared]) -> list[Reach]:
    """What each send of ``plain`` reaches (the other members of its conversation), by position."""
    return [Reach(entry[1]["sender"], entry[1]["conversation_id"]) for entry in plain]


def _apply_reach_rules(
    plain: list[_Prepared], results: list[SendResult | Exception | None]
) -> list[_Prepared]:
    """Ask the reach rules once for every send of the batch; refused sends get the rule's error
    and are left out."""
    refused = reach.refusals(send_reaches(plain))
    if not refused:
        return plain
    for position, error in refused.items():
        results[plain[position][0]] = error
    return [entry for position, entry in enumerate(plain) if position not in refused]


def _execute_plain_batch(cursor: Any, plain: list[_Prepared]) -> datetime:
    """Send the batch's one statement (its answer is fetched by the caller); returns its time."""
    now = timezone.now()
    cursor.execute(_SEND_BATCH_SQL, send_batch_params(plain, now))
    return now


def send_batch_params(plain: list[_Prepared], now: datetime) -> dict[str, Any]:
    """The parameters of the batch's send statement (``_SEND_BATCH_SQL``)."""
    return {
        "ord": list(range(len(plain))),
        "conv": [e[1]["conversation_id"] for e in plain],
        "sender": [e[1]["sender"].pk for e in plain],
        "cid": [e[2] for e in plain],
        "body": [e[4] for e in plain],
        "reply": [e[1].get("reply_to") for e in plain],
        "now": now,
    }


def _plain_batch_results(
    plain: list[_Prepared],
    rows: list[Any],
    now: datetime,
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
    *,
    announce: bool,
) -> list[tuple[int, int, int]]:
    written, fan_outs, recipients = batch_outcome(plain, rows, now, results, duplicates)
    if announce:
        for ord_, _message_id, *_rest in rows:
            result = results[plain[ord_][0]]
            if isinstance(result, SendResult):
                conversation_id = plain[ord_][1]["conversation_id"]
                _announce_on_commit(
                    result.message, sender_id=result.data["sender_id"], recipients=recipients[conversation_id]
                )
    if fan_outs:
        transaction.on_commit(lambda: _fan_out_all(fan_outs))
    return written


FanOut = tuple[list[int], dict[str, Any], str | None]


def batch_outcome(
    plain: list[_Prepared],
    rows: list[Any],
    now: datetime,
    results: list[SendResult | Exception | None],
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]],
) -> tuple[list[tuple[int, int, int]], list[FanOut], dict[int, list[int]]]:
    """What the send statement answered, for both batch writers: each send's result (in
    ``results``), earlier uses of a client_id (``duplicates``), and the messages written, their
    ``message.new`` fan-outs (to publish after the commit) and each conversation's members.
    Raises ``_BatchConflict`` when a send lost its insert to a concurrent one."""
    created_at = now.isoformat()
    answered = {row[0] for row in rows}
    for ord_, entry in enumerate(plain):
        if ord_ not in answered:  # its conversation does not exist (any more)
            results[entry[0]] = NotFound("No such conversation.", code="conversation_not_found")
    recipients: dict[int, list[int]] = {}
    for row in rows:
        if row[9] is not None:
            recipients[plain[row[0]][1]["conversation_id"]] = list(row[9])
    written: list[tuple[int, int, int]] = []
    fan_outs: list[FanOut] = []
    for ord_, message_id, seq, number, member, e2ee, blocked, reply_ok, dup_id, _users in rows:
        index, item, cid, _ids, text = plain[ord_]
        conversation_id = item["conversation_id"]
        sender: User = item["sender"]
        if not member:
            results[index] = NotFound("No such conversation.", code="conversation_not_found")
        elif e2ee:
            results[index] = _e2ee_mismatch(True, False)
        elif blocked:
            results[index] = PermissionDenied("This conversation is blocked.", code="blocked")
        elif not reply_ok:
            results[index] = ApplicationError(
                "invalid_reply_to", "reply_to must be a message of this conversation."
            )
        elif dup_id is not None:
            duplicates.append((index, item, cid))
        elif message_id is None:
            raise _BatchConflict
        else:
            data = frames.message_wire(
                message_id=message_id,
                conversation_id=conversation_id,
                seq=seq,
                client_id=str(cid),
                sender_id=sender.pk,
                kind="text",
                created_at=created_at,
                body=text,
                attachments=[],
                reply_to=item.get("reply_to"),
                edited_at=None,
                deleted=False,
            )
            members = recipients[conversation_id]
            frame = {"type": "message.new", "data": {"message": data}, "event": number}
            fan_outs.append((members, frame, item.get("origin_channel")))
            written.append((message_id, conversation_id, sender.pk))
            results[index] = SendResult(None, True, data)
    return written, fan_outs, recipients


def _fan_out_all(fan_outs: list[FanOut]) -> None:
    for user_ids, frame, exclude_channel in fan_outs:
        fan_out(user_ids=user_ids, frame=frame, exclude_channel=exclude_channel)


def _devices_mismatch(owners: dict[int, int], missing: set[int], extra: set[int]) -> ApplicationError:
    current: dict[int, list[int]] = {}
    for device_id, user_id in sorted(owners.items()):
        current.setdefault(user_id, []).append(device_id)
    return ApplicationError(
        "devices_mismatch",
        "ciphertexts must have one entry for every device of every member except the sending "
        "device: fetch the missing devices' keys (GET /api/v1/keys/{user_id}) and send again.",
        status=409,
        extra={
            "missing_devices": sorted(missing),
            "extra_devices": sorted(extra),
            "devices": [{"user_id": uid, "device_ids": dids} for uid, dids in sorted(current.items())],
        },
    )


def message_send_encrypted(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    body: str | None,
    ciphertexts: dict[str, str],
    sender_device_id: int | None,
    reply_to: int | None = None,
    attachment_ids: list[int] | None = None,
    origin_channel: str | None = None,
) -> SendResult:
    """Send to an end-to-end encrypted conversation: one Signal-protocol ciphertext for every
    device (with published keys) of every active member, except the sending device (the
    sender's other devices included). A missing or unknown device refuses the send with the
    current device list (``devices_mismatch``), as Signal's server does. Each device is later
    handed only its own ciphertext; the server stores no text (``body`` stays empty).
    """
    if body:
        raise ApplicationError("invalid_ciphertext", "Send ciphertexts without a body.")
    if sender_device_id is None:
        raise ApplicationError(
            "device_required", "Name this device (X-Device-Id or the auth frame) to send encrypted messages."
        )
    parsed = v.validate_ciphertexts(ciphertexts)
    ids = attachment_ids or []
    write = _write_message_sql if connection.vendor == "postgresql" else _write_message_orm
    try:
        with transaction.atomic():
            message, number, recipients = write(
                sender=sender,
                conversation_id=conversation_id,
                cid=cid,
                text="",
                reply_to=reply_to,
                encrypted=True,
            )
            owners = selectors.e2ee_device_owners(user_ids=recipients)
            expected = set(owners) - {sender_device_id}
            if set(parsed) != expected:
                raise _devices_mismatch(owners, expected - set(parsed), set(parsed) - expected)
            MessageCiphertext.objects.bulk_create(
                [MessageCiphertext(message=message, device_id=d, ciphertext=raw) for d, raw in parsed.items()]
            )
            attachments = (
                _attach(sender=sender, message=message, attachment_ids=ids, encrypted=True) if ids else []
            )
            data = selectors.message_data(message, attachments, encrypted=True)
            frame = {"type": "message.new", "data": {"message": data}, "event": number}
            per_user: dict[int, dict[str, str]] = {uid: {} for uid in recipients}
            for device_id, raw in parsed.items():
                per_user.setdefault(owners[device_id], {})[str(device_id)] = selectors.b64(raw)
            transaction.on_commit(
                lambda: fan_out_encrypted(per_user=per_user, frame=frame, exclude_channel=origin_channel)
            )
            _announce_on_commit(message, sender_id=sender.pk, recipients=recipients)
    except (IntegrityError, _Duplicate):
        existing = _existing_send(sender, cid, conversation_id)
        if existing is None:
            raise
        return SendResult(existing, False, selectors.message_data(existing, encrypted=True))
    return SendResult(message, True, data)


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
    seq, number = _allocate(conversation_id, message=True)
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
    seq, number = _allocate(conversation_id, message=True)
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
        _announce_on_commit(message, sender_id=actor.pk, recipients=recipients)
    return message


def lock(conversation_id: int) -> tuple[int, int]:
    """Lock the conversation row for a membership change; returns (last_seq, last_event)."""
    return _lock(conversation_id)


def _own_message_for_update(*, user: User, message_id: int) -> Message:
    message = selectors.message_get_for_member(user=user, message_id=message_id)
    if message.sender_id != user.pk or message.kind != Message.Kind.TEXT:
        raise PermissionDenied("You can only change your own messages.", code="not_message_sender")
    if message.deleted_at is not None:
        raise ApplicationError("message_deleted", "This message was deleted.", status=409)
    return message


def _record_update(message: Message, number: int) -> None:
    _record_updates([(message, number)])


def _record_updates(updates: list[tuple[Message, int]]) -> None:
    """``message.updated`` for each (message, event number): the replay log rows (one INSERT),
    then on commit the live frames and the ``message_updated`` signal (push refresh/withdraw).
    The numbers were taken under each conversation's lock by the caller."""
    if not updates:
        return
    Event.objects.bulk_create(
        [
            Event(conversation_id=m.conversation_id, number=n, kind=Event.Kind.MESSAGE_UPDATED, message=m)
            for m, n in updates
        ]
    )
    members: dict[int, list[tuple[int, int]]] = {}
    for message, number in updates:
        conversation_id = message.conversation_id
        if conversation_id not in members:
            members[conversation_id] = selectors.active_member_bounds(conversation_id=conversation_id)
        frame = {
            "type": "message.updated",
            "data": {"message": selectors.message_data(message)},
            "event": number,
        }
        # Only to members who may read the message (not those who joined after it, unshared).
        readers = [uid for uid, bound in members[conversation_id] if message.seq > bound]
        fan_out_on_commit(user_ids=readers, frame=frame)
        transaction.on_commit(
            partial(
                message_updated.send,
                sender=Message,
                message_id=message.pk,
                conversation_id=conversation_id,
                event=number,
            )
        )


def message_edit(*, user: User, message_id: int, body: str) -> Message:
    text = v.validate_body(body)
    message = _own_message_for_update(user=user, message_id=message_id)
    if message.conversation.e2ee:
        raise ApplicationError("e2ee_required", "Encrypted messages cannot be edited in plaintext.")
    with transaction.atomic():
        _seq, number = _allocate(message.conversation_id, message=False)
        reach.check(sender=user, conversation_id=message.conversation_id)
        message.refresh_from_db(fields=["deleted_at"])
        if message.deleted_at is not None:
            raise ApplicationError("message_deleted", "This message was deleted.", status=409)
        message.body = text
        message.edited_at = timezone.now()
        message.save(update_fields=["body", "edited_at"])
        _record_update(message, number)
    return message


def message_delete(*, user: User, message_id: int) -> Message:
    """Unsend: the message keeps its seq and loses its content."""
    message = _own_message_for_update(user=user, message_id=message_id)
    with transaction.atomic():
        _seq, number = _allocate(message.conversation_id, message=False)
        message.body = ""
        message.deleted_at = timezone.now()
        message.save(update_fields=["body", "deleted_at"])
        if message.conversation.e2ee:
            MessageCiphertext.objects.filter(message=message).delete()
        attachments_delete_for_messages([message.pk])
        _record_update(message, number)
    return message


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
        _lock(conversation_id)
        fresh = Membership.objects.select_for_update().get(pk=membership.pk)
        updates: dict[str, int] = {}
        if seq > getattr(fresh, field):
            updates[field] = seq
        if kind == "read" and seq > fresh.delivered_seq:
            updates["delivered_seq"] = seq  # read implies delivered
        if not updates:
            return {"conversation_id": conversation_id, "user_id": user.pk, field: getattr(fresh, field)}
        Membership.objects.filter(pk=fresh.pk).update(**updates)
        _seq, number = _allocate(conversation_id, message=False)
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


# --- Account erasure and export (registered with accounts) -----------------------------------
def erase_user_messages(user: User) -> None:
    """Messages a deleted user sent stay (as from a deleted user) with their content erased."""
    Message.objects.filter(sender=user, kind=Message.Kind.TEXT).update(body="", deleted_at=timezone.now())
    MessageCiphertext.objects.filter(message__sender=user).delete()
    attachments_delete_for_messages(list(Message.objects.filter(sender=user).values_list("pk", flat=True)))
    orphans = list(Attachment.objects.filter(uploader=user, message__isnull=True))
    names = [a.file.name for a in orphans] + [a.thumbnail.name for a in orphans if a.thumbnail]
    Attachment.objects.filter(pk__in=[a.pk for a in orphans]).delete()
    transaction.on_commit(lambda: _storage_delete(names))
    Membership.objects.filter(user=user, left_at__isnull=True).update(muted_until=None)


def erase_user_presence(user: User) -> None:
    """Nobody watches an erased user's presence any more, nor they anyone's (after commit)."""
    presence_revoke_on_commit(user_id=user.pk, other_ids=selectors.contact_ids(user=user))


def export_user_messages(user: User) -> dict[str, Any]:
    memberships = Membership.objects.filter(user=user).select_related("conversation")
    messages = (
        Message.objects.filter(sender=user, kind=Message.Kind.TEXT)
        .prefetch_related("attachments")
        .order_by("conversation_id", "seq")
    )
    return {
        "conversations": [
            {
                "id": m.conversation_id,
                "kind": m.conversation.kind,
                "name": m.conversation.name,
                "role": m.role,
                "joined_at": m.joined_at.isoformat(),
                "left_at": m.left_at.isoformat() if m.left_at else None,
            }
            for m in memberships
        ],
        "messages_sent": [selectors.message_data(message) for message in messages],
    }


def export_user_uploads(user: User) -> list[dict[str, Any]]:
    """Files ``user`` uploaded and never attached to a message (those attached are in their
    messages): metadata, and ``download``, the request that gives the uploader a short-lived
    link to the bytes (exports hold no files, and no links that would outlive them)."""
    from django.urls import reverse

    unattached = Attachment.objects.filter(uploader=user, message__isnull=True, deleted_at__isnull=True)
    return [
        {
            **selectors.attachment_data(attachment),
            "created_at": attachment.created_at.isoformat(),
            "download": reverse("attachment-detail", args=[attachment.pk]),
        }
        for attachment in unattached.order_by("id")
    ]


# --- Attachments ------------------------------------------------------------------------------
def _storage_delete(names: list[str | None]) -> None:
    from django.core.files.storage import default_storage

    for name in filter(None, names):
        try:
            default_storage.delete(name)
        except Exception:
            logger.warning("could not delete a stored file", exc_info=True)


def _quota_retry_after(uploader: User, since: Any, wanted: int) -> int:
    """Seconds until enough of the last day's uploads leave the 24-hour window for ``wanted``."""
    excess = wanted - settings.ATTACHMENT_DAILY_QUOTA_BYTES
    freed = 0
    rows = Attachment.objects.filter(uploader=uploader, created_at__gte=since).order_by("created_at")
    for created_at, row_size in rows.values_list("created_at", "size"):
        freed += row_size
        if freed >= excess:
            return max(1, int((created_at - since).total_seconds()) + 1)
    return 86400


def attachment_upload(*, uploader: User, upload: Any, name: str, encrypted: bool = False) -> Attachment:
    """Store an uploaded file: type from its bytes, per-category limits, daily quota, and no
    metadata (location, author, device, free text) in what is stored for recipients.

    Images and documents are rewritten here (``messaging/scrub.py``) and are ``ready`` at once.
    Video and audio are stored as uploaded in state ``processing`` and stripped by ffmpeg in
    the Celery worker (``attachment_process_media``); until then they cannot be downloaded or
    attached. Without ffmpeg they are refused (``media_processing_unavailable``).
    ``sha256`` and ``size`` describe the stored, clean bytes (what a recipient downloads).

    ``encrypted``: the client encrypted the file for an end-to-end encrypted conversation (its
    key travels inside the encrypted message). The bytes are opaque: stored as they came,
    ``application/octet-stream``, category ``encrypted``, named ``encrypted.bin`` (the real name
    is inside the message too), never sniffed, re-encoded or thumbnailed: the client strips
    metadata before it encrypts."""
    import hashlib

    from django.core.files.base import ContentFile, File

    from . import ffmpeg, filetypes, scrub

    size = int(getattr(upload, "size", 0) or 0)
    if size <= 0:
        raise ApplicationError("empty_file", "The file is empty.")
    if encrypted:
        detected = filetypes.ENCRYPTED
        name = "encrypted.bin"
    else:
        detected = filetypes.detect(upload)
    limit = settings.ATTACHMENT_MAX_BYTES[detected.category]
    if size > limit:
        raise ApplicationError(
            "file_too_large",
            f"{detected.category.capitalize()} files may be at most {limit} bytes.",
            status=413,
        )
    since = timezone.now() - timedelta(days=1)
    used = (
        Attachment.objects.filter(uploader=uploader, created_at__gte=since).aggregate(total=Sum("size"))[
            "total"
        ]
        or 0
    )
    if used + size > settings.ATTACHMENT_DAILY_QUOTA_BYTES:
        raise ApplicationError(
            "quota_exceeded",
            "Daily upload quota reached; try again later.",
            status=429,
            extra={"retry_after": _quota_retry_after(uploader, since, used + size)},
        )
    width = height = None
    content: File[Any]
    state = Attachment.State.READY
    if detected.category in ("video", "audio"):
        if not ffmpeg.available():
            raise ApplicationError(
                "media_processing_unavailable",
                "Video and audio cannot be accepted right now: this server cannot strip their metadata.",
                status=503,
            )
        content, state = File(upload), Attachment.State.PROCESSING
    elif detected.category in ("image", "document"):
        clean = scrub.scrub(upload, detected)
        content, width, height = ContentFile(clean.data), clean.width, clean.height
        detected = clean.converted or detected
    else:
        content = File(upload)
    digest = hashlib.sha256()
    content.seek(0)
    for chunk in iter(lambda: content.read(1 << 16), b""):
        digest.update(chunk)
    content.seek(0)
    attachment = Attachment(
        uploader=uploader,
        category=detected.category,
        content_type=detected.content_type,
        size=content.size or size,
        sha256=digest.hexdigest(),
        name=filetypes.sanitize_filename(name or "file", detected.extension),
        width=width,
        height=height,
        state=state,
    )
    attachment.file.save(f"upload.{detected.extension}", content, save=False)
    try:
        with transaction.atomic():
            attachment.save()
            attachment_id = attachment.pk
            if detected.category == "image":
                from .tasks import make_thumbnail

                transaction.on_commit(lambda: make_thumbnail.delay(attachment_id))
            elif state == Attachment.State.PROCESSING:
                from .tasks import process_media

                transaction.on_commit(lambda: process_media.delay(attachment_id))
    except Exception:
        _storage_delete([attachment.file.name])
        raise
    logger.info("attachment %s stored (%s, %s bytes)", attachment.pk, detected.content_type, attachment.size)
    if state == Attachment.State.PROCESSING:
        attachment.refresh_from_db()  # an eager worker (``make run``) has processed it already
    return attachment


def _attachment_updated(attachment: Attachment) -> None:
    """Tell the uploader's sockets that processing ended (on commit; REST is the fallback)."""
    frame = {
        "type": "attachment.updated",
        "data": {"attachment": selectors.attachment_state_data(attachment)},
    }
    publish_on_commit(user_group(attachment.uploader_id), {"type": "client.event", "frame": frame})


def attachment_process_media(*, attachment_id: int) -> None:
    """Celery: strip a video or audio upload with ffmpeg (``messaging/ffmpeg.py``), under its time
    and size limits. The clean copy replaces the upload (``ready``); when the tool fails the
    upload is deleted and the row says why (``rejected``). Idempotent: only ``processing`` rows
    are worked on, and only the first worker to finish changes the row."""
    import hashlib
    import tempfile
    from pathlib import Path

    from django.core.files import File

    from . import ffmpeg

    row = Attachment.objects.filter(pk=attachment_id, state=Attachment.State.PROCESSING).first()
    if row is None:
        return
    original = row.file.name
    with tempfile.TemporaryDirectory(prefix="hc-media-") as folder:
        source, target = Path(folder) / "source", Path(folder) / "target"
        with row.file.open("rb") as fh, source.open("wb") as out:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                out.write(chunk)
        try:
            result = ffmpeg.strip(source, target, row.content_type)
        except ffmpeg.MediaError as exc:
            with transaction.atomic():
                done = Attachment.objects.filter(pk=row.pk, state=Attachment.State.PROCESSING).update(
                    state=Attachment.State.REJECTED, rejection=exc.code, file=""
                )
                if done:  # the uploaded bytes go first, then the uploader hears of it
                    transaction.on_commit(lambda: _storage_delete([original]))
                    row.state, row.rejection = Attachment.State.REJECTED, exc.code
                    _attachment_updated(row)
            logger.info("attachment %s rejected (%s)", attachment_id, exc.code)
            return
        digest = hashlib.sha256()
        with target.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        with target.open("rb") as fh:
            row.file.save(f"clean.{result.extension}", File(fh), save=False)
    clean = row.file.name
    stem = row.name.rsplit(".", 1)[0]
    with transaction.atomic():
        done = Attachment.objects.filter(pk=row.pk, state=Attachment.State.PROCESSING).update(
            state=Attachment.State.READY,
            file=clean,
            size=row.file.size,
            sha256=digest.hexdigest(),
            content_type=result.content_type,
            name=f"{stem}.{result.extension}",
            duration=result.duration,
            width=result.width,
            height=result.height,
        )
        if not done:  # deleted or finished meanwhile: this copy is not needed
            transaction.on_commit(lambda: _storage_delete([clean]))
            return
        transaction.on_commit(lambda: _storage_delete([original]))
        row.refresh_from_db()
        _attachment_updated(row)
    logger.info("attachment %s stripped (%s, %s bytes)", attachment_id, row.content_type, row.size)


def attachment_make_thumbnail(*, attachment_id: int) -> None:
    """Celery: a JPEG thumbnail for an image (idempotent)."""
    from django.core.files.base import ContentFile

    from . import filetypes

    attachment = Attachment.objects.filter(
        pk=attachment_id, category="image", deleted_at__isnull=True
    ).first()
    if attachment is None or attachment.thumbnail:
        return
    with attachment.file.open("rb") as fh:
        data = fh.read()
    try:
        thumb = filetypes.thumbnail(data)
    except Exception:
        logger.warning("no thumbnail for attachment %s", attachment_id, exc_info=True)
        return
    attachment.thumbnail.save("thumb.jpg", ContentFile(thumb), save=False)
    Attachment.objects.filter(pk=attachment_id, thumbnail="").update(thumbnail=attachment.thumbnail.name)


def attachments_requeue_processing(*, older_than_seconds: float | None = None) -> int:
    """Beat: queue the strip again for uploads still ``processing`` well after their time limit
    (the task was lost with its worker or broker). Processing twice is harmless."""
    from .tasks import process_media

    if older_than_seconds is None:
        older_than_seconds = float(settings.MEDIA_PROCESSING_TIMEOUT_SECONDS) * 3 + 60
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Attachment.objects.filter(state=Attachment.State.PROCESSING, created_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    for attachment_id in ids:
        process_media.delay(attachment_id)
    return len(ids)


def _attach(
    *, sender: User, message: Message, attachment_ids: list[int], encrypted: bool = False
) -> list[Attachment]:
    """Inside the send's transaction: the sender's own, unused, live uploads only; encrypted
    uploads in end-to-end encrypted conversations, and only there."""
    rows = list(
        Attachment.objects.select_for_update().filter(
            pk__in=attachment_ids, uploader=sender, deleted_at__isnull=True
        )
    )
    if len(rows) != len(attachment_ids):
        raise NotFound("No such attachment.", code="attachment_not_found")
    if any(row.message_id is not None for row in rows):
        raise ApplicationError("attachment_already_used", "An attachment can be sent once.", status=409)
    for row in rows:
        if row.state == Attachment.State.PROCESSING:
            raise ApplicationError(
                "attachment_processing",
                "The attachment is still being processed; send it once attachment.updated says ready.",
                status=409,
            )
        if row.state == Attachment.State.REJECTED:
            raise ApplicationError(
                "attachment_rejected", "The attachment was rejected and cannot be sent.", status=422
            )
    for row in rows:
        if (row.category == Attachment.Category.ENCRYPTED) != encrypted:
            if encrypted:
                raise ApplicationError(
                    "attachment_not_encrypted",
                    "An end-to-end encrypted conversation takes only encrypted uploads (encrypted=true).",
                )
            raise ApplicationError(
                "attachment_encrypted", "Encrypted uploads belong in end-to-end encrypted conversations."
            )
    now = timezone.now()
    Attachment.objects.filter(pk__in=attachment_ids).update(message=message, attached_at=now)
    by_id = {row.pk: row for row in rows}
    ordered = [by_id[i] for i in attachment_ids]
    for row in ordered:
        row.message_id, row.attached_at = message.pk, now
    return ordered


# What a tombstone keeps instead of the file's name and digest (both say what the file was).
TOMBSTONE_NAME = "deleted"
TOMBSTONE_SHA256 = "0" * 64


def attachments_delete_for_messages(message_ids: list[int], *, keep_rows: bool = True) -> int:
    """Deleted messages lose their files (rows kept as tombstones for the history: category,
    size and times, but not the name or the digest; or with ``keep_rows=False`` deleted too:
    retention keeps no file names). Files go after commit. Returns how many were deleted."""
    rows = list(Attachment.objects.filter(message_id__in=message_ids, deleted_at__isnull=True))
    if not rows:
        return 0
    if keep_rows:
        Attachment.objects.filter(pk__in=[r.pk for r in rows]).update(
            deleted_at=timezone.now(), name=TOMBSTONE_NAME, sha256=TOMBSTONE_SHA256
        )
    else:
        Attachment.objects.filter(pk__in=[r.pk for r in rows]).delete()
    names = [r.file.name for r in rows] + [r.thumbnail.name for r in rows if r.thumbnail]
    transaction.on_commit(lambda: _storage_delete(names))
    return len(rows)


def attachments_purge_orphans(*, older_than_hours: int | None = None) -> int:
    """Uploads never attached expire after ``ATTACHMENT_ORPHAN_HOURS``."""
    hours = settings.ATTACHMENT_ORPHAN_HOURS if older_than_hours is None else older_than_hours
    cutoff = timezone.now() - timedelta(hours=hours)
    rows = list(
        Attachment.objects.filter(message__isnull=True, deleted_at__isnull=True, created_at__lt=cutoff)
    )
    names = [r.file.name for r in rows] + [r.thumbnail.name for r in rows if r.thumbnail]
    Attachment.objects.filter(pk__in=[r.pk for r in rows]).delete()
    _storage_delete(names)
    return len(rows)


# --- Legal hold and retention -----------------------------------------------------------------
def conversation_set_legal_hold(
    *, conversation_id: int, hold: bool, actor: Actor, client: Client | None = None
) -> Conversation:
    """Place or release a legal hold (needs ``messaging.manage_legal_hold``): retention erases
    nothing of a held conversation. The change and its audit entry (who, when, from where; an
    operator's on the ``command`` channel) commit together; no change, no entry."""
    require_permission(actor, "messaging.manage_legal_hold")
    if client is None:
        client = COMMAND if isinstance(actor, Operator) else SYSTEM
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None:
            raise NotFound("No such conversation.", code="conversation_not_found")
        if conversation.legal_hold != hold:
            conversation.legal_hold = hold
            conversation.save(update_fields=["legal_hold"])
            audit.record(
                audited.LEGAL_HOLD_SET if hold else audited.LEGAL_HOLD_RELEASE,
                actor=actor,
                object_type="conversation",
                object_id=conversation.pk,
                client=client,
            )
    return conversation


@dataclass(frozen=True)
class RetentionCounts:
    """Messages erased (tombstoned) and attachments deleted (files and rows)."""

    messages: int = 0
    attachments: int = 0


def _messages_due(cutoff: datetime) -> QuerySet[Message]:
    return Message.objects.filter(
        kind=Message.Kind.TEXT,
        deleted_at__isnull=True,
        created_at__lt=cutoff,
        conversation__legal_hold=False,
    )


def _attachments_due(cutoff: datetime) -> QuerySet[Attachment]:
    return Attachment.objects.filter(
        deleted_at__isnull=True,
        message__isnull=False,
        created_at__lt=cutoff,
        message__conversation__legal_hold=False,
    )


def _keyset_batches(qs: QuerySet[Any], size: int, *fields: str) -> Iterator[list[tuple[Any, ...]]]:
    """Pages of ``(created_at, pk, *fields)`` ordered by (created_at, pk), never OFFSET. Each
    page is fetched after the caller handled the previous one."""
    after: tuple[datetime, int] | None = None
    while True:
        page = qs
        if after is not None:
            page = page.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1]))
        rows = list(page.order_by("created_at", "pk").values_list("created_at", "pk", *fields)[:size])
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = (rows[-1][0], rows[-1][1])


def _lock_unheld(conversation_ids: set[int]) -> set[int]:
    """Lock the conversations (in id order: no deadlock with another batch) and keep those
    without a legal hold, as of now (a hold placed meanwhile is seen here)."""
    return set(
        Conversation.objects.select_for_update()
        .filter(pk__in=conversation_ids, legal_hold=False)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _number_updates(messages: list[Message]) -> list[tuple[Message, int]]:
    """Event numbers for ``message.updated`` of each message, one UPDATE per conversation
    (whose row the caller holds locked)."""
    by_conversation: dict[int, list[Message]] = {}
    for message in messages:
        by_conversation.setdefault(message.conversation_id, []).append(message)
    numbered: list[tuple[Message, int]] = []
    with connection.cursor() as cursor:
        for conversation_id, group in by_conversation.items():
            cursor.execute(
                "UPDATE messaging_conversation SET last_event = last_event + %s WHERE id = %s"
                " RETURNING last_event",
                [len(group), conversation_id],
            )
            row = cursor.fetchone()
            assert row is not None  # locked by the caller
            first = int(row[0]) - len(group) + 1
            numbered.extend((message, first + i) for i, message in enumerate(group))
    return numbered


def _tombstone_batch(message_ids: list[int], conversation_ids: set[int], now: datetime) -> tuple[int, int]:
    """One transaction: erase these messages as ``message_delete`` does (body, ciphertexts,
    files), each with its ``message.updated`` event. Returns (messages, attachments)."""
    with transaction.atomic():
        unheld = _lock_unheld(conversation_ids)
        messages = list(
            Message.objects.select_related("conversation")
            .filter(
                pk__in=message_ids,
                conversation_id__in=unheld,
                kind=Message.Kind.TEXT,
                deleted_at__isnull=True,
            )
            .order_by("conversation_id", "seq")
        )
        if not messages:
            return 0, 0
        ids = [m.pk for m in messages]
        Message.objects.filter(pk__in=ids).update(body="", deleted_at=now)
        for message in messages:
            message.body, message.deleted_at = "", now
        MessageCiphertext.objects.filter(message_id__in=ids).delete()
        files = attachments_delete_for_messages(ids, keep_rows=False)
        _record_updates(_number_updates(messages))
    return len(messages), files


def _strip_attachments_batch(message_ids: set[int]) -> int:
    """One transaction: these messages lose their files (files and rows); each message that
    stays gets a ``message.updated`` event with its remaining attachments."""
    with transaction.atomic():
        conversation_ids = set(
            Message.objects.filter(pk__in=message_ids).values_list("conversation_id", flat=True)
        )
        unheld = _lock_unheld(conversation_ids)
        messages = list(
            Message.objects.select_related("conversation")
            .filter(pk__in=message_ids, conversation_id__in=unheld)
            .order_by("conversation_id", "seq")
        )
        deleted = attachments_delete_for_messages([m.pk for m in messages], keep_rows=False)
        if not deleted:
            return 0
        live = [m for m in messages if m.deleted_at is None]
        prefetch_related_objects(live, "attachments")
        _record_updates(_number_updates(live))
    return deleted


def retention_due(*, now: datetime | None = None) -> RetentionCounts:
    """What ``retention_purge`` would erase now (its dry run)."""
    now = now or timezone.now()
    message_cutoff, attachment_cutoff = _retention_cutoffs(now)
    messages = _messages_due(message_cutoff).count() if message_cutoff else 0
    due = Q(pk__in=[])
    if message_cutoff is not None:
        due |= Q(message__in=_messages_due(message_cutoff))
    if attachment_cutoff is not None:
        due |= Q(pk__in=_attachments_due(attachment_cutoff).values("pk"))
    attachments = (
        Attachment.objects.filter(deleted_at__isnull=True, message__isnull=False).filter(due).count()
        if message_cutoff or attachment_cutoff
        else 0
    )
    return RetentionCounts(messages=messages, attachments=attachments)


def _retention_cutoffs(now: datetime) -> tuple[datetime | None, datetime | None]:
    message_days = int(settings.MESSAGE_RETENTION_DAYS)
    attachment_days = int(settings.ATTACHMENT_RETENTION_DAYS)
    return (
        now - timedelta(days=message_days) if message_days > 0 else None,
        now - timedelta(days=attachment_days) if attachment_days > 0 else None,
    )


def retention_purge(*, now: datetime | None = None, batch_size: int | None = None) -> RetentionCounts:
    """Erase what is older than ``MESSAGE_RETENTION_DAYS`` / ``ATTACHMENT_RETENTION_DAYS``
    (0: kept for ever) in conversations without a legal hold.

    Messages become tombstones as with ``message_delete`` (body and ciphertexts erased, kind
    and seq kept, files deleted) and members learn it through ``sync`` (``message.updated``);
    older files go on their own (files and rows) when their retention is shorter. System
    messages (membership changes, no free text) stay. Batches of ``RETENTION_BATCH_SIZE``
    rows, one short transaction each; a second run finds nothing to do. The audit log is not
    touched (it is append-only, and kept)."""
    now = now or timezone.now()
    size = int(batch_size or settings.RETENTION_BATCH_SIZE)
    message_cutoff, attachment_cutoff = _retention_cutoffs(now)
    messages = attachments = 0
    if message_cutoff is not None:
        for rows in _keyset_batches(_messages_due(message_cutoff), size, "conversation_id"):
            erased, files = _tombstone_batch([r[1] for r in rows], {r[2] for r in rows}, now)
            messages += erased
            attachments += files
    if attachment_cutoff is not None:
        for rows in _keyset_batches(_attachments_due(attachment_cutoff), size, "message_id"):
            attachments += _strip_attachments_batch({r[2] for r in rows})
    if messages or attachments:
        audit.record(audited.RETENTION_PURGE, client=SYSTEM)
        logger.info("retention erased %s messages and %s attachments", messages, attachments)
    return RetentionCounts(messages=messages, attachments=attachments)
