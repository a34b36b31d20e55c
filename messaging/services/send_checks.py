"""Messaging's own checks of a new message, each defined ONCE (``SendCheck``: its SQL, its ORM
form, its refusal) and registered in the send registry like any app's rule
(``MessagingConfig.ready``). Every writer runs these definitions: the send statement
(``send_batch.send_statement``) is built from them for the loop writer, the thread's batch
writer, the single send, the encrypted send and the sends with attachments; the ORM writer
(other databases) asks their ``orm`` forms. In this order: the first failing check answers."""

from __future__ import annotations

from django.db.models import Q

from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.models import Block, Conversation, Message
from messaging.send_rules import SendCheck, SendContext


def _not_found(_encrypted: bool) -> ApplicationError:
    return NotFound("No such conversation.", code="conversation_not_found")


def e2ee_mismatch(e2ee: bool, encrypted: bool) -> ApplicationError | None:
    if e2ee and not encrypted:
        return ApplicationError(
            "e2ee_required", "This conversation is end-to-end encrypted: send ciphertexts, not a body."
        )
    if encrypted and not e2ee:
        return ApplicationError(
            "e2ee_not_enabled", "This conversation is not end-to-end encrypted: send a body, not ciphertexts."
        )
    return None


def _e2ee_refusal(encrypted: bool) -> ApplicationError | None:
    return e2ee_mismatch(not encrypted, encrypted)


def _member_orm(ctx: SendContext) -> bool:
    return ctx.membership is not None and ctx.membership.left_at is None


def _e2ee_orm(ctx: SendContext) -> bool:
    return bool(ctx.conversation.e2ee) == ctx.encrypted


def _not_blocked_orm(ctx: SendContext) -> bool:
    if ctx.conversation.kind != Conversation.Kind.DIRECT:
        return True
    others = ctx.conversation.memberships.filter(left_at__isnull=True).exclude(user_id=ctx.sender_id)
    peers = list(others.values_list("user_id", flat=True))
    return not Block.objects.filter(
        Q(blocker_id=ctx.sender_id, blocked_id__in=peers) | Q(blocker_id__in=peers, blocked_id=ctx.sender_id)
    ).exists()


def _reply_orm(ctx: SendContext) -> bool:
    return (
        ctx.reply_to is None
        or Message.objects.filter(pk=ctx.reply_to, conversation_id=ctx.conversation_id).exists()
    )


def _first_use_orm(ctx: SendContext) -> bool:
    return not Message.objects.filter(sender_id=ctx.sender_id, client_id=ctx.client_id).exists()


MEMBER = SendCheck(
    name="messaging.member",
    # the sender's membership joined on the unique (conversation, user) pair
    passes_sql="m.id IS NOT NULL AND m.left_at IS NULL",
    orm=_member_orm,
    refusal=_not_found,
)
E2EE = SendCheck(
    name="messaging.e2ee",
    passes_sql="c.e2ee = i.enc",
    orm=_e2ee_orm,
    refusal=_e2ee_refusal,
)
NOT_BLOCKED = SendCheck(
    name="messaging.not_blocked",
    passes_sql="""NOT (c.kind = 'direct' AND EXISTS (
            SELECT 1 FROM messaging_membership o
            JOIN messaging_block b ON (b.blocker_id = o.user_id AND b.blocked_id = i.sender)
                                   OR (b.blocker_id = i.sender AND b.blocked_id = o.user_id)
            WHERE o.conversation_id = i.conv AND o.user_id <> i.sender AND o.left_at IS NULL))""",
    orm=_not_blocked_orm,
    refusal=lambda _encrypted: PermissionDenied("This conversation is blocked.", code="blocked"),
)
REPLY_TO = SendCheck(
    name="messaging.reply_to",
    passes_sql="""i.reply IS NULL OR EXISTS (SELECT 1 FROM messaging_message r
                                    WHERE r.id = i.reply AND r.conversation_id = i.conv)""",
    orm=_reply_orm,
    refusal=lambda _encrypted: ApplicationError(
        "invalid_reply_to", "reply_to must be a message of this conversation."
    ),
)
FIRST_USE_OF_CLIENT_ID = SendCheck(
    name="messaging.client_id_first_use",
    # an earlier use of the client_id: not an error, the original is the answer. A scalar
    # subquery, not NOT EXISTS: in a select list PostgreSQL may run an EXISTS as a hashed
    # subplan (one scan of every message per batch); this one is always an index probe per send.
    passes_sql="""(SELECT d.id FROM messaging_message d
                   WHERE d.sender_id = i.sender AND d.client_id = i.cid) IS NULL""",
    orm=_first_use_orm,
    refusal=lambda _encrypted: None,
)

# Messaging's checks, in the order they answer (registered by ``MessagingConfig.ready``).
CHECKS = (MEMBER, E2EE, NOT_BLOCKED, REPLY_TO, FIRST_USE_OF_CLIENT_ID)
