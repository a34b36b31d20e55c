"""Messaging actions: open conversations, send/edit/delete messages, receipts, typing.

Each action is one function that owns its transaction; live events and the "message needs
push" hook fire only after commit. The channel layer is a fast path only: every event is also
in the per-conversation log that ``sync`` replays.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Greatest
from django.dispatch import Signal
from django.utils import timezone

from accounts.models import DoctorProfile, User
from healthchat.errors import ApplicationError, NotFound, PermissionDenied
from healthchat.realtime import publish, user_group

from . import selectors
from . import validators as v
from .models import Attachment, Block, Conversation, Event, Membership, Message, MessageCiphertext

logger = logging.getLogger("healthchat.messaging")

# Sent after commit for every new message: the push worker listens (issue "Push").
# kwargs: message_id, conversation_id, sender_id, recipient_ids
message_committed = Signal()
# Sent after commit when a message is edited or deleted (push lets notified devices refresh or
# withdraw the notification). kwargs: message_id, conversation_id, event
message_updated = Signal()

# Extra rules that let a doctor open a conversation with a patient (e.g. a consultation).
contact_rules: list[Any] = []
# Called inside a group-commit batch's transaction with [(message_id, conversation_id, sender_id)]
# for the messages it created (the push outbox is written with them, in one statement). When no
# hook is registered, each message announces itself with ``message_committed`` instead.
batch_written_hooks: list[Any] = []
# Extra rules checked inside a send's transaction, after the conversation is locked:
# ``rule(sender, peer_id)`` for direct conversations (peer_id the other member), raising
# ApplicationError to refuse (e.g. payments: read-only for the patient after a consultation).
direct_send_rules: list[Any] = []


def _check_direct_send_rules(sender: User, direct_key: str | None) -> None:
    if not direct_send_rules or not direct_key:
        return
    a, b = (int(x) for x in direct_key.split(":"))
    peer_id = b if a == sender.pk else a
    for rule in direct_send_rules:
        rule(sender, peer_id)


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
    if is_blocked(user.pk, peer.pk):
        raise PermissionDenied("This user cannot be contacted.", code="blocked")
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


def contacts_of(user: User) -> set[int]:
    """Users told when ``user``'s identity key changes: everyone sharing a conversation."""
    return selectors.contact_ids(user=user)


def conversation_open_direct(
    *, user: User, peer_id: int, e2ee: bool | None = None
) -> tuple[Conversation, bool]:
    """Open (or return) the one direct conversation between ``user`` and ``peer_id``."""
    key = f"{min(user.pk, peer_id)}:{max(user.pk, peer_id)}"
    existing = Conversation.objects.filter(direct_key=key).first()
    if existing is not None:
        if not Membership.objects.filter(conversation=existing, user=user).exists():
            raise NotFound("No such conversation.", code="conversation_not_found")
        return existing, False
    peer = User.objects.filter(pk=peer_id).first()
    if peer is None:
        raise NotFound("No such user.", code="user_not_found")
    check_can_contact(user=user, peer=peer)
    use_e2ee = settings.HEALTHCHAT_E2EE_DEFAULT if e2ee is None else bool(e2ee)
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.DIRECT, direct_key=key, e2ee=use_e2ee, created_by=user
            )
            Membership.objects.bulk_create(
                [
                    Membership(conversation=conversation, user=user, role=Membership.Role.MEMBER),
                    Membership(conversation=conversation, user=peer, role=Membership.Role.MEMBER),
                ]
            )
    except IntegrityError:
        existing = Conversation.objects.filter(direct_key=key).first()
        if existing is None:
            raise
        return existing, False
    return conversation, True


def block_user(*, user: User, blocked_id: int) -> None:
    if blocked_id == user.pk:
        raise ApplicationError("cannot_block_self", "You cannot block yourself.")
    if not User.objects.filter(pk=blocked_id).exists():
        raise NotFound("No such user.", code="user_not_found")
    Block.objects.get_or_create(blocker=user, blocked_id=blocked_id)


def unblock_user(*, user: User, blocked_id: int) -> None:
    Block.objects.filter(blocker=user, blocked_id=blocked_id).delete()


# --- Messages -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool
    data: dict[str, Any]


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
            " last_message_at = %s WHERE id = %s RETURNING last_seq, last_event, kind, e2ee, direct_key",
            [now, conversation_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFound("No such conversation.", code="conversation_not_found")
        seq, number, kind, e2ee, direct_key = int(row[0]), int(row[1]), row[2], bool(row[3]), row[4]
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
    _check_direct_send_rules(sender, direct_key)
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
    _check_direct_send_rules(sender, membership.conversation.direct_key)
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


def message_send_many(*, items: list[dict[str, Any]]) -> list[SendResult | Exception]:
    """Group commit: plaintext sends of many sockets in ONE transaction (one COMMIT, one thread
    hop), each in its own savepoint so one refused send does not undo the others.

    Each item has ``message_send``'s keyword arguments. Conversations are locked in ascending id
    order (no deadlock between batches); a socket's own sends keep their order. A result is the
    ``SendResult`` or the exception that refused that send. Nothing is acked before the commit.
    """
    results: list[SendResult | Exception | None] = [None] * len(items)
    prepared: list[tuple[int, dict[str, Any], uuid.UUID, list[int], str]] = []
    for index, item in enumerate(items):
        try:
            cid = v.validate_client_id(item["client_id"])
            ids = v.validate_attachment_ids(item.get("attachment_ids"))
            prepared.append((index, item, cid, ids, _plain_text(item.get("body"), ids)))
        except ApplicationError as exc:
            results[index] = exc
    duplicates: list[tuple[int, dict[str, Any], uuid.UUID]] = []
    hooks = list(batch_written_hooks)
    written: list[tuple[int, int, int]] = []
    if prepared:
        with transaction.atomic():
            for index, item, cid, ids, text in sorted(prepared, key=lambda p: p[1]["conversation_id"]):
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
                            announce=not hooks,
                        )
                        written.append((result.message.pk, item["conversation_id"], item["sender"].pk))
                        results[index] = result
                except (IntegrityError, _Duplicate):
                    duplicates.append((index, item, cid))
                except Exception as exc:  # this send is refused; the savepoint undid it
                    results[index] = exc
            if written:
                for hook in hooks:
                    try:
                        with transaction.atomic():
                            hook(written)
                    except Exception:  # a hook never undoes the messages
                        logger.exception("batch hook failed: %s", getattr(hook, "__name__", hook))
    for index, item, cid in duplicates:
        try:
            results[index] = _original_send(item["sender"], cid, item["conversation_id"])
        except ApplicationError as exc:
            results[index] = exc
    return [
        r if r is not None else ApplicationError("internal_error", "Not processed.", status=500)
        for r in results
    ]


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
    Event.objects.create(
        conversation_id=message.conversation_id,
        number=number,
        kind=Event.Kind.MESSAGE_UPDATED,
        message=message,
    )
    frame = {"type": "message.updated", "data": {"message": selectors.message_data(message)}, "event": number}
    fan_out_on_commit(
        user_ids=selectors.active_member_ids(conversation_id=message.conversation_id), frame=frame
    )
    transaction.on_commit(
        lambda: message_updated.send(
            sender=Message, message_id=message.pk, conversation_id=message.conversation_id, event=number
        )
    )


def message_edit(*, user: User, message_id: int, body: str) -> Message:
    text = v.validate_body(body)
    message = _own_message_for_update(user=user, message_id=message_id)
    if message.conversation.e2ee:
        raise ApplicationError("e2ee_required", "Encrypted messages cannot be edited in plaintext.")
    with transaction.atomic():
        _seq, number = _allocate(message.conversation_id, message=False)
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
        fan_out_on_commit(
            user_ids=selectors.active_member_ids(conversation_id=conversation_id),
            frame=frame,
            exclude_channel=origin_channel,
        )
    return {"conversation_id": conversation_id, **data}


# --- Typing (ephemeral: never stored) -------------------------------------------------------
def typing_notify(
    *, user: User, conversation_id: int, active: bool, origin_channel: str | None = None
) -> None:
    selectors.membership_get(user=user, conversation_id=conversation_id)
    others = [uid for uid in selectors.active_member_ids(conversation_id=conversation_id) if uid != user.pk]
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


# --- Attachments ------------------------------------------------------------------------------
def _storage_delete(names: list[str | None]) -> None:
    from django.core.files.storage import default_storage

    for name in filter(None, names):
        try:
            default_storage.delete(name)
        except Exception:
            logger.warning("could not delete a stored file", exc_info=True)


def attachment_upload(*, uploader: User, upload: Any, name: str, encrypted: bool = False) -> Attachment:
    """Store an uploaded file: type from its bytes, per-category limits, daily quota, SHA-256,
    images re-encoded without EXIF/GPS; the row is written only once the file is stored.

    ``encrypted``: the client encrypted the file for an end-to-end encrypted conversation (its
    key travels inside the encrypted message). The bytes are opaque: stored as they came,
    ``application/octet-stream``, category ``encrypted``, named ``encrypted.bin`` (the real name
    is inside the message too), never sniffed, re-encoded or thumbnailed."""
    import hashlib

    from django.core.files.base import ContentFile, File

    from . import filetypes

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
            "quota_exceeded", "Daily upload quota reached; try again tomorrow.", status=429
        )
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in iter(lambda: upload.read(1 << 16), b""):
        digest.update(chunk)
    upload.seek(0)
    width = height = None
    duration = None
    content: File[Any]
    if detected.category == "image":
        clean = filetypes.sanitize_image(upload, detected)
        if clean is not None:
            content, width, height = ContentFile(clean.data), clean.width, clean.height
        else:
            content = File(upload)
    else:
        if detected.content_type in (
            "video/mp4",
            "video/quicktime",
            "video/3gpp",
            "video/3gpp2",
            "audio/mp4",
        ):
            duration = filetypes.mp4_duration(upload)
            upload.seek(0)
        content = File(upload)
    attachment = Attachment(
        uploader=uploader,
        category=detected.category,
        content_type=detected.content_type,
        size=content.size or size,
        sha256=digest.hexdigest(),
        name=filetypes.sanitize_filename(name or "file", detected.extension),
        width=width,
        height=height,
        duration=duration,
    )
    attachment.file.save(f"upload.{detected.extension}", content, save=False)
    try:
        with transaction.atomic():
            attachment.save()
            if detected.category == "image":
                from .tasks import make_thumbnail

                attachment_id = attachment.pk
                transaction.on_commit(lambda: make_thumbnail.delay(attachment_id))
    except Exception:
        _storage_delete([attachment.file.name])
        raise
    logger.info("attachment %s stored (%s, %s bytes)", attachment.pk, detected.content_type, attachment.size)
    return attachment


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


def attachments_delete_for_messages(message_ids: list[int]) -> None:
    """Deleted messages lose their files (rows kept as tombstones for the history)."""
    rows = list(Attachment.objects.filter(message_id__in=message_ids, deleted_at__isnull=True))
    if not rows:
        return
    Attachment.objects.filter(pk__in=[r.pk for r in rows]).update(deleted_at=timezone.now())
    names = [r.file.name for r in rows] + [r.thumbnail.name for r in rows if r.thumbnail]
    transaction.on_commit(lambda: _storage_delete(names))


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
