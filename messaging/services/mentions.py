"""Mentions: structured entities (``{user_id, offset, length}``, offsets in Unicode code points
of the body) a client sends with ``message.send``. They ride the ONE send path:

- ``validate_mentions`` (bounds, offsets within the body) when the ``SendRequest`` is built;
- the send statement writes them on the message (``Message.mentions``, the input column
  ``ment``) and the send check ``MENTIONS_ARE_MEMBERS`` refuses a mention of anyone who is not an
  active member (``mention_not_member``), on every writer (both batch writers, the single send,
  the ORM writer), after messaging's own checks;
- the same send statement writes one ``Mention`` row per mentioned member (not the sender),
  behind ``GET /api/v1/mentions`` (its ``mn`` step: no statement more per send; the ORM writer
  calls ``mention_rows_orm``);
- notifications' push outbox pushes a mentioned member even when the conversation is muted,
  unless their preference ``mentions_when_muted`` is off.

End-to-end encrypted sends refuse them (``e2ee_mention``): who is mentioned is part of the
content, kept inside the ciphertext (docs/e2ee.md#reactions-and-mentions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from accounts.models import User
from core.errors import ApplicationError
from messaging.models import Membership, Mention, Message
from messaging.send_rules import SendCheck, SendContext


def mentions_max() -> int:
    return int(settings.HEALTHCHAT_MENTIONS_MAX)


def _invalid(problem: str) -> ApplicationError:
    return ApplicationError("invalid_mentions", f"mentions: {problem}.")


def validate_mentions(value: Any, body: str | None) -> tuple[dict[str, int], ...] | None:
    """The entities as stored (``{user_id, offset, length}``, sorted by offset), or ``None``
    for none. Each must lie within ``body``; at most ``HEALTHCHAT_MENTIONS_MAX``."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _invalid("must be a list")
    if not value:
        return None
    if len(value) > mentions_max():
        raise _invalid(f"at most {mentions_max()} entities")
    text = body or ""
    out: list[dict[str, int]] = []
    for entity in value:
        if isinstance(entity, dict):
            raw = entity
        elif hasattr(entity, "model_dump"):
            raw = entity.model_dump()
        else:
            raise _invalid("each entity is an object {user_id, offset, length}")
        if set(raw) != {"user_id", "offset", "length"}:
            raise _invalid("each entity has exactly user_id, offset and length")
        user_id, offset, length = raw["user_id"], raw["offset"], raw["length"]
        if not all(type(x) is int for x in (user_id, offset, length)):
            raise _invalid("user_id, offset and length are integers")
        if user_id < 1 or offset < 0 or length < 1 or offset + length > len(text):
            raise _invalid("each entity lies within the body (offset >= 0, length >= 1)")
        out.append({"user_id": user_id, "offset": offset, "length": length})
    out.sort(key=lambda e: (e["offset"], e["length"], e["user_id"]))
    return tuple(out)


def mentions_json(mentions: Sequence[dict[str, int]] | None) -> str | None:
    """The send statement's ``ment`` input for one send (jsonb text), ``None`` without mentions."""
    return None if not mentions else json.dumps(list(mentions), separators=(",", ":"))


# --- The send check: every mentioned user is an active member -------------------------------
def _members_orm(ctx: SendContext) -> bool:
    return not mentioned_non_members(ctx.conversation_id, ctx.mentions)


def mentioned_non_members(conversation_id: int, mentions: Sequence[dict[str, int]] | None) -> set[int]:
    """The mentioned users who are not active members (the ORM writer's form of the check)."""
    wanted = {e["user_id"] for e in mentions or ()}
    if not wanted:
        return set()
    members = set(
        Membership.objects.filter(
            conversation_id=conversation_id, user_id__in=wanted, left_at__isnull=True
        ).values_list("user_id", flat=True)
    )
    return wanted - members


def not_member_refusal(_encrypted: bool) -> ApplicationError:
    return ApplicationError(
        "mention_not_member", "Only active members of the conversation can be mentioned.", status=422
    )


MENTIONS_ARE_MEMBERS = SendCheck(
    name="messaging.mentions_are_members",
    passes_sql="""i.ment IS NULL OR NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements(i.ment) e
            WHERE NOT EXISTS (SELECT 1 FROM messaging_membership x
                              WHERE x.conversation_id = i.conv AND x.user_id = (e->>'user_id')::bigint
                                AND x.left_at IS NULL))""",
    orm=_members_orm,
    refusal=not_member_refusal,
)


# --- The "mentions of me" rows ----------------------------------------------------------------
# PostgreSQL: the send statement's ``mn`` step writes them with the message (no statement more
# per send); other databases: ``write_message_orm`` calls this.
def mention_rows_orm(message: Message) -> None:
    users = sorted({e["user_id"] for e in message.mentions or ()} - {message.sender_id})
    Mention.objects.bulk_create(
        [
            Mention(
                message=message,
                conversation_id=message.conversation_id,
                user_id=u,
                created_at=message.created_at,
            )
            for u in users
        ],
        ignore_conflicts=True,
    )


# --- Erasure, retention, export ---------------------------------------------------------------
def mentions_delete_for_messages(message_ids: list[int]) -> None:
    """A message that loses its content loses its mentions (entities and rows)."""
    if message_ids:
        Mention.objects.filter(message_id__in=message_ids).delete()
        Message.objects.filter(pk__in=message_ids, mentions__isnull=False).update(mentions=None)


def mentions_erase_user(user: User) -> None:
    """An erased account is no longer listed as mentioned (the messages keep their text's ids)."""
    Mention.objects.filter(user=user).delete()


def export_user_mentions(user: User) -> list[dict[str, Any]]:
    return [
        {"message_id": message_id, "conversation_id": conversation_id, "created_at": created_at.isoformat()}
        for message_id, conversation_id, created_at in Mention.objects.filter(user=user)
        .order_by("id")
        .values_list("message_id", "conversation_id", "created_at")
    ]
