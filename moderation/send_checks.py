"""Moderation's send check: a muted user cannot send (``sender_muted``), on every writer.

One ``SendCheck`` (``messaging.send_rules``), registered in ``ModerationConfig.ready`` after
messaging's own (a non-member still hears ``conversation_not_found`` first; a retried send of a
message made before the mute still answers its original). Its SQL is one primary-key probe of
``moderation_usermute`` inside the send statement (no statement more per send or batch: the
table is read by every send, and holds only the users ever muted). ``sender_only``: the edit
path asks it too (``SendRegistry.sender_refusal``)."""

from __future__ import annotations

from django.utils import timezone

from core.errors import ApplicationError, PermissionDenied
from messaging.send_rules import SendCheck, SendContext

from .models import UserMute


def _not_muted_orm(ctx: SendContext) -> bool:
    return not UserMute.objects.filter(user_id=ctx.sender_id, until__gt=timezone.now()).exists()


def muted_refusal(_encrypted: bool = False) -> ApplicationError:
    return PermissionDenied(
        "You are muted by the moderators and cannot send messages for now.", code="sender_muted"
    )


SENDER_NOT_MUTED = SendCheck(
    name="moderation.sender_not_muted",
    # a scalar subquery (an index probe per send), as messaging's client_id check
    passes_sql="""NOT COALESCE((SELECT u.until > statement_timestamp() FROM moderation_usermute u
                                WHERE u.user_id = i.sender), false)""",
    orm=_not_muted_orm,
    refusal=muted_refusal,
    sender_only=True,
)
