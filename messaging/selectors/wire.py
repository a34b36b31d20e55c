"""The message as clients see it: its wire shape, built in ONE place (``message_data``), and the
event frames that carry it."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from messaging import frames
from messaging.models import Attachment, Message


# --- Serialisation of what clients see --------------------------------------------------
def attachment_data(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.pk,
        "category": attachment.category,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "name": attachment.name,
        "width": attachment.width,
        "height": attachment.height,
        "duration": attachment.duration,
    }


def attachment_state_data(attachment: Attachment) -> dict[str, Any]:
    """What the uploader sees of an upload: the attachment, its processing state and, when it
    was rejected, why (``rejection``: an error code)."""
    return {
        **attachment_data(attachment),
        "state": attachment.state,
        "rejection": attachment.rejection or None,
    }


@dataclass(frozen=True, slots=True)
class WrittenMessage:
    """A plaintext text message a batch's send statement has just written (no row read back):
    the fields ``message_data`` reads, under a ``Message``'s names."""

    pk: int
    conversation_id: int
    seq: int
    client_id: uuid.UUID
    sender_id: int
    created_at: datetime
    body: str
    reply_to_id: int | None
    kind: str = "text"
    edited_at: None = None
    edit_count: int = 0
    deleted_at: None = None
    system: None = None
    mentions: list[dict[str, int]] | None = None
    reactions: None = None


def message_data(
    message: Message | WrittenMessage,
    attachments: list[Attachment] | None = None,
    *,
    encrypted: bool | None = None,
    ciphertext: bytes | None = None,
) -> dict[str, Any]:
    """The message as clients see it: the ONE place its wire shape is built (through
    ``frames.message_wire``, which spells the keys), for ``ack`` (single and batched sends, on
    either writer: a ``WrittenMessage``), ``message.new`` / ``message.updated``, ``sync``
    replays, group events and REST history. ``attachments`` given, or prefetched on the message.

    A text message of an end-to-end encrypted conversation (``encrypted``, or read from its
    conversation when that is loaded) has ``body: ""`` and ``ciphertext``: this device's copy
    (given, or prefetched as ``device_ciphertexts``), base64, or null.
    """
    deleted = message.deleted_at is not None
    if attachments is None:
        attachments = (
            []
            if deleted or message.kind == "system" or isinstance(message, WrittenMessage)
            else list(message.attachments.all())
        )
    text_encrypted = (
        encrypted
        if encrypted is not None
        else isinstance(message, Message)
        and Message.conversation.is_cached(message)
        and message.conversation.e2ee
    ) and message.kind == Message.Kind.TEXT
    if text_encrypted and ciphertext is None:
        mine = getattr(message, "device_ciphertexts", None)
        ciphertext = bytes(mine[0].ciphertext) if mine else None
    return frames.message_wire(
        message_id=message.pk,
        conversation_id=message.conversation_id,
        seq=message.seq,
        client_id=str(message.client_id),
        sender_id=message.sender_id,
        kind=message.kind,
        created_at=message.created_at.isoformat(),
        body="" if deleted else message.body,
        attachments=[] if deleted else [attachment_data(a) for a in attachments],
        reply_to=message.reply_to_id,
        edited_at=message.edited_at.isoformat() if message.edited_at else None,
        deleted=deleted,
        system=message.system,
        ciphertext=(None if deleted or ciphertext is None else b64(ciphertext)) if text_encrypted else False,
        mentions=[] if deleted else list(message.mentions or ()),
        reactions=[] if deleted else list(message.reactions or ()),
        edit_count=0 if deleted else message.edit_count,
    )


def b64(raw: bytes | memoryview) -> str:
    return base64.b64encode(bytes(raw)).decode("ascii")


def event_frame(
    kind: str, message: Message, number: int, *, encrypted: bool = False, ciphertext: bytes | None = None
) -> dict[str, Any]:
    """message.new / message.updated carry the message; member.* and group.updated carry their
    system message (with its seq) plus its payload at the top level of ``data``."""
    data: dict[str, Any] = {"message": message_data(message, encrypted=encrypted, ciphertext=ciphertext)}
    if kind not in ("message.new", "message.updated") and message.system:
        data = {"conversation_id": message.conversation_id, **message.system, **data}
    return {"type": kind, "data": data, "event": number}
