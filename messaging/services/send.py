"""The send model (``SendRequest``, built by every way in: the socket, commands, admin, tests; the
encrypted path included) and the send of one message: idempotent on client_id, announced after
commit. Many sockets' plaintext sends go through ``send_batch`` (group commit); both ask the
same registered rules (``messaging.send_rules``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound
from messaging import reach, selectors
from messaging import validators as v
from messaging.models import Conversation, Event, Membership, Message, MessageCiphertext
from messaging.send_rules import HookFailed, SendContext, first_refusal, registry

from .attachments import attach_uploads
from .counters import allocate
from .events import announce_on_commit, fan_out_encrypted, fan_out_on_commit
from .mentions import mention_rows_orm, mentions_json, validate_mentions
from .statements import LOCK_BATCH_SQL, send_statement

logger = logging.getLogger("healthchat.messaging")


# --- Messages -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message to send, as every way in builds it (``message.send`` from a socket, commands,
    the admin, tests), plaintext or end-to-end encrypted (``ciphertexts``: one per device, from
    ``sender_device_id``). ``client_id`` makes it idempotent; ``origin_channel`` is the sending
    socket (left out of the live fan-out: its ack carries the message)."""

    sender: User
    conversation_id: int
    client_id: str | uuid.UUID
    body: str | None = None
    reply_to: int | None = None
    attachment_ids: list[int] | None = None
    origin_channel: str | None = None
    ciphertexts: dict[str, str] | None = None
    sender_device_id: int | None = None
    # Mention entities ``[{user_id, offset, length}]`` (``mentions.validate_mentions``: checked
    # against the body here, so every way in refuses the same bad entities before any write).
    mentions: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        if self.mentions is not None:
            if self.ciphertexts is not None:
                raise ApplicationError(
                    "e2ee_mention",
                    "This conversation is end-to-end encrypted: put mentions inside the ciphertext.",
                    status=422,
                )
            object.__setattr__(self, "mentions", validate_mentions(self.mentions, self.body))


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
                mentions=d.get("mentions") or None,
            )
        return self._message


def existing_send(sender: User, client_id: uuid.UUID, conversation_id: int) -> Message | None:
    message = Message.objects.filter(sender=sender, client_id=client_id).first()
    if message is not None and message.conversation_id != conversation_id:
        raise ApplicationError(
            "client_id_reused", "This client_id was already used for another conversation.", status=409
        )
    return message


class DuplicateSend(Exception):
    """The client_id was already used: roll back and return the original."""


def write_message_sql(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    encrypted: bool = False,
    mentions: Sequence[dict[str, int]] | None = None,
) -> tuple[Message, int, list[int]]:
    """PostgreSQL: one send through the batch writers' statements (``statements``): the
    conversation's lock, then the send statement (the registered checks, the numbering, the
    writes, the recipients) for a batch of one; then the reach rules."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(LOCK_BATCH_SQL, {"ids": [conversation_id]})
        if cursor.fetchone() is None:
            raise NotFound("No such conversation.", code="conversation_not_found")
        cursor.execute(
            send_statement(single=True),
            {
                "ord": [0],
                "conv": [conversation_id],
                "sender": [sender.pk],
                "cid": [cid],
                "body": [text],
                "reply": [reply_to],
                "enc": [encrypted],
                "ment": [mentions_json(mentions)],
                "now": now,
            },
        )
        _ord, message_id, seq, number, recipients, *passes = cursor.fetchone()
    failed, refusal = first_refusal(registry.checks, passes, encrypted)
    if failed:
        if refusal is None:
            raise DuplicateSend
        raise refusal
    if message_id is None:
        raise DuplicateSend
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
        mentions=list(mentions) if mentions else None,
    )
    return message, number, list(recipients)


def write_message_orm(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    encrypted: bool = False,
    mentions: Sequence[dict[str, int]] | None = None,
) -> tuple[Message, int, list[int]]:
    """Other databases (the embedded SQLite run): the same registered checks, their ORM forms."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    context = SendContext(
        sender_id=sender.pk,
        conversation_id=conversation_id,
        client_id=cid,
        reply_to=reply_to,
        encrypted=encrypted,
        conversation=conversation,
        membership=Membership.objects.filter(conversation_id=conversation_id, user=sender).first(),
        mentions=mentions,
    )
    checks = registry.checks
    failed, refusal = first_refusal(checks, [check.orm(context) for check in checks], encrypted)
    if failed:
        if refusal is None:
            raise DuplicateSend
        raise refusal
    seq, number = allocate(conversation_id, message=True)
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
        mentions=list(mentions) if mentions else None,
    )
    mention_rows_orm(message)
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
    mentions: Sequence[Any] | None = None,
) -> SendResult:
    """``send`` with the request's fields as keyword arguments."""
    return send(
        SendRequest(
            sender=sender,
            conversation_id=conversation_id,
            client_id=client_id,
            body=body,
            reply_to=reply_to,
            attachment_ids=attachment_ids,
            origin_channel=origin_channel,
            ciphertexts=ciphertexts,
            sender_device_id=sender_device_id,
            mentions=mentions,
        )
    )


def send(request: SendRequest) -> SendResult:
    """Send one message. Idempotent on ``client_id``; returns only once committed.

    The conversation row lock orders sends (gapless ``seq``) and membership changes, so a
    member removed before this commit never receives it. End-to-end encrypted conversations
    take ``ciphertexts`` instead of ``body`` (``message_send_encrypted``).
    """
    cid = v.validate_client_id(request.client_id)
    ids = v.validate_attachment_ids(request.attachment_ids)
    if request.ciphertexts is not None:
        return message_send_encrypted(
            sender=request.sender,
            conversation_id=request.conversation_id,
            cid=cid,
            body=request.body,
            ciphertexts=request.ciphertexts,
            sender_device_id=request.sender_device_id,
            reply_to=request.reply_to,
            attachment_ids=ids,
            origin_channel=request.origin_channel,
        )
    text = plain_text(request.body, ids)
    try:
        try:
            return _send_and_hooks(request, cid, text, ids, guarded=False)
        except HookFailed:  # undone: written again, the hooks in savepoints
            return _send_and_hooks(request, cid, text, ids, guarded=True)
    except (IntegrityError, DuplicateSend):
        return original_send(request.sender, cid, request.conversation_id)


def _send_and_hooks(
    request: SendRequest, cid: uuid.UUID, text: str, ids: list[int], *, guarded: bool
) -> SendResult:
    """One plaintext send and the written hooks (the push outbox) in one transaction."""
    with transaction.atomic():
        result = send_in_transaction(
            sender=request.sender,
            conversation_id=request.conversation_id,
            cid=cid,
            text=text,
            reply_to=request.reply_to,
            attachment_ids=ids,
            origin_channel=request.origin_channel,
            mentions=request.mentions,
        )
        registry.run_hooks([(result.message.pk, request.conversation_id, request.sender.pk)], guarded=guarded)
        return result


def plain_text(body: str | None, attachment_ids: list[int]) -> str:
    return v.validate_body(body or "") if (body and body.strip()) or not attachment_ids else ""


def original_send(sender: User, cid: uuid.UUID, conversation_id: int) -> SendResult:
    """Sent before (a lost ack), or a concurrent send of the same client_id won."""
    existing = existing_send(sender, cid, conversation_id)
    if existing is None:
        raise ApplicationError("conflict", "The message could not be stored; send it again.", status=409)
    return SendResult(existing, False, selectors.message_data(existing))


def send_in_transaction(
    *,
    sender: User,
    conversation_id: int,
    cid: uuid.UUID,
    text: str,
    reply_to: int | None,
    attachment_ids: list[int],
    origin_channel: str | None,
    mentions: Sequence[dict[str, int]] | None = None,
) -> SendResult:
    """The writes of a plaintext send, inside the caller's transaction (the caller runs the
    written hooks); its frame and ``message_committed`` on commit."""
    write = write_message_sql if connection.vendor == "postgresql" else write_message_orm
    message, number, recipients = write(
        sender=sender,
        conversation_id=conversation_id,
        cid=cid,
        text=text,
        reply_to=reply_to,
        mentions=mentions,
    )
    attachments = (
        attach_uploads(sender=sender, message=message, attachment_ids=attachment_ids)
        if attachment_ids
        else []
    )
    data = selectors.message_data(message, attachments)
    frame = {"type": "message.new", "data": {"message": data}, "event": number}
    fan_out_on_commit(user_ids=recipients, frame=frame, exclude_channel=origin_channel)
    announce_on_commit(message, sender_id=sender.pk, recipients=recipients)
    return SendResult(message, True, data)


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
    write = write_message_sql if connection.vendor == "postgresql" else write_message_orm
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
                attach_uploads(sender=sender, message=message, attachment_ids=ids, encrypted=True)
                if ids
                else []
            )
            data = selectors.message_data(message, attachments, encrypted=True)
            frame = {"type": "message.new", "data": {"message": data}, "event": number}
            per_user: dict[int, dict[str, str]] = {uid: {} for uid in recipients}
            for device_id, raw in parsed.items():
                per_user.setdefault(owners[device_id], {})[str(device_id)] = selectors.b64(raw)
            transaction.on_commit(
                lambda: fan_out_encrypted(per_user=per_user, frame=frame, exclude_channel=origin_channel)
            )
            announce_on_commit(message, sender_id=sender.pk, recipients=recipients)
            registry.run_hooks([(message.pk, conversation_id, sender.pk)])
    except (IntegrityError, DuplicateSend):
        existing = existing_send(sender, cid, conversation_id)
        if existing is None:
            raise
        return SendResult(existing, False, selectors.message_data(existing, encrypted=True))
    return SendResult(message, True, data)
