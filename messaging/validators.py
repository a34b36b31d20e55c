"""Validation rules for messaging, shared by REST serializers, socket frames and services."""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from django.conf import settings

from core.errors import ApplicationError

CONVERSATION_KINDS = ("direct", "group")
MEMBER_ROLES = ("owner", "admin", "member")
MESSAGE_KINDS = ("text", "system")
MEMBER_EVENT_KINDS = ("member.added", "member.removed", "member.left", "member.role_changed", "group.updated")
# A contact's device changed: logged in each of the owner's conversations, data {user_id, device_id}.
DEVICE_EVENT_KINDS = ("identity.changed", "device.added")
# Kinds whose log entry carries ``data`` instead of pointing at a message.
# Reactions and pins (issue 24): data {message_id, seq, user_id, ...}, about a message.
FEATURE_EVENT_KINDS = ("reaction.added", "reaction.removed", "message.pinned", "message.unpinned")
DATA_EVENT_KINDS = ("receipt", *DEVICE_EVENT_KINDS, *FEATURE_EVENT_KINDS)
EVENT_KINDS = (
    "message.new",
    "message.updated",
    "receipt",
    *MEMBER_EVENT_KINDS,
    *DEVICE_EVENT_KINDS,
    *FEATURE_EVENT_KINDS,
)
ATTACHMENT_CATEGORIES = ("image", "video", "audio", "document", "encrypted")
GROUP_NAME_MAX = 100
GROUP_DESCRIPTION_MAX = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def max_body_length() -> int:
    return int(settings.HEALTHCHAT_MESSAGE_MAX_LENGTH)


def validate_body(value: str) -> str:
    """A message body: not blank, within the length limit, no control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ApplicationError("empty_message", "A message needs a body.")
    if len(value) > max_body_length():
        raise ApplicationError(
            "message_too_long", f"A message may have at most {max_body_length()} characters."
        )
    if _CONTROL.search(value):
        raise ApplicationError("invalid_body", "The message contains control characters.")
    return value


def validate_client_id(value: str | uuid.UUID) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError) as exc:
        raise ApplicationError("invalid_client_id", "client_id must be a UUID.") from exc


def validate_seq(value: int, *, field: str = "seq") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApplicationError("invalid_seq", f"{field} must be a non-negative integer.")
    return value


def validate_group_name(value: str) -> str:
    name = " ".join(str(value).split())
    if not name:
        raise ApplicationError("invalid_group_name", "A group needs a name.", fields={"name": ["blank"]})
    if len(name) > GROUP_NAME_MAX or _CONTROL.search(name):
        raise ApplicationError(
            "invalid_group_name",
            f"A group name has at most {GROUP_NAME_MAX} printable characters.",
            fields={"name": ["invalid"]},
        )
    return name


def validate_group_description(value: str) -> str:
    text = str(value).strip()
    if len(text) > GROUP_DESCRIPTION_MAX or _CONTROL.search(text):
        raise ApplicationError(
            "invalid_description",
            f"A description has at most {GROUP_DESCRIPTION_MAX} characters.",
            fields={"description": ["invalid"]},
        )
    return text


def validate_attachment_ids(value: list[int] | None) -> list[int]:
    ids = list(dict.fromkeys(value or []))
    if len(ids) > 10:
        raise ApplicationError("too_many_attachments", "A message may carry at most 10 attachments.")
    return ids


MAX_CIPHERTEXT_DEVICES = 1000


def validate_ciphertexts(value: dict[str, str]) -> dict[int, bytes]:
    """``{device_id: base64}`` → ``{device_id: bytes}``: device ids, non-empty ciphertexts within
    ``HEALTHCHAT_CIPHERTEXT_MAX_BYTES``. The server never looks inside."""
    limit = int(settings.HEALTHCHAT_CIPHERTEXT_MAX_BYTES)
    if not isinstance(value, dict) or not value or len(value) > MAX_CIPHERTEXT_DEVICES:
        raise ApplicationError(
            "invalid_ciphertext", "ciphertexts must map each device id to its base64 ciphertext."
        )
    out: dict[int, bytes] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not key.isascii() or not key.isdigit() or len(key) > 18:
            raise ApplicationError("invalid_ciphertext", "ciphertexts keys must be device ids.")
        if not isinstance(text, str) or not text or len(text) > (limit * 4) // 3 + 4:
            raise ApplicationError(
                "invalid_ciphertext", f"Each ciphertext must be base64 of 1 to {limit} bytes."
            )
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApplicationError("invalid_ciphertext", "Each ciphertext must be base64.") from exc
        if not raw or len(raw) > limit:
            raise ApplicationError(
                "invalid_ciphertext", f"Each ciphertext must be base64 of 1 to {limit} bytes."
            )
        out[int(key)] = raw
    return out
