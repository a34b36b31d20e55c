"""Legal hold and retention: what is erased when, in keyset batches, never a held conversation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet, prefetch_related_objects
from django.utils import timezone

from accounts.actors import Actor, Operator, require_permission
from audit import actions as audited
from audit import services as audit
from audit.client import COMMAND, SYSTEM, Client
from core.errors import NotFound
from messaging.models import Attachment, Conversation, Message, MessageCiphertext, MessageVersion

from .annotations import annotations_delete_for_messages
from .attachments import attachments_delete_for_messages
from .edit import record_updates

logger = logging.getLogger("healthchat.messaging")


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
    """Messages erased (tombstoned), attachments deleted (files and rows) and kept texts
    (``MessageVersion``: edit history, unsent texts) deleted."""

    messages: int = 0
    attachments: int = 0
    versions: int = 0


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


def _versions_due(cutoff: datetime) -> QuerySet[MessageVersion]:
    """Kept texts of messages older than the cutoff (the message itself may be a tombstone
    already: unsent, or erased by an earlier run) outside a legal hold."""
    return MessageVersion.objects.filter(
        message__created_at__lt=cutoff, message__conversation__legal_hold=False
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


def _tombstone_batch(
    message_ids: list[int], conversation_ids: set[int], now: datetime
) -> tuple[int, int, int]:
    """One transaction: erase these messages as ``message_delete`` does (body, ciphertexts,
    files, kept texts), each with its ``message.updated`` event. Returns (messages,
    attachments, kept texts)."""
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
            return 0, 0, 0
        ids = [m.pk for m in messages]
        Message.objects.filter(pk__in=ids).update(body="", deleted_at=now)
        for message in messages:
            message.body, message.deleted_at = "", now
        MessageCiphertext.objects.filter(message_id__in=ids).delete()
        versions, _ = MessageVersion.objects.filter(message_id__in=ids).delete()
        annotations_delete_for_messages(ids)
        files = attachments_delete_for_messages(ids, keep_rows=False)
        record_updates(_number_updates(messages))
    return len(messages), files, versions


def _purge_versions_batch(version_ids: list[int], conversation_ids: set[int]) -> int:
    """One transaction: delete these kept texts, except those of a conversation placed under a
    legal hold meanwhile (locked and re-read as the tombstone batches do). No event: members
    never saw these rows change (the versions of a live message go with its tombstone)."""
    with transaction.atomic():
        unheld = _lock_unheld(conversation_ids)
        deleted, _ = MessageVersion.objects.filter(
            pk__in=version_ids, message__conversation_id__in=unheld
        ).delete()
    return deleted


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
        record_updates(_number_updates(live))
    return deleted


def retention_due(*, now: datetime | None = None) -> RetentionCounts:
    """What ``retention_purge`` would erase now (its dry run)."""
    now = now or timezone.now()
    message_cutoff, attachment_cutoff = _retention_cutoffs(now)
    messages = _messages_due(message_cutoff).count() if message_cutoff else 0
    versions = _versions_due(message_cutoff).count() if message_cutoff else 0
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
    return RetentionCounts(messages=messages, attachments=attachments, versions=versions)


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
    older files go on their own (files and rows) when their retention is shorter. The kept
    texts of those messages (``MessageVersion``: edit history, unsent texts) go with them, also
    those of messages unsent earlier (already tombstones). System
    messages (membership changes, no free text) stay. Batches of ``RETENTION_BATCH_SIZE``
    rows, one short transaction each; a second run finds nothing to do. The audit log is not
    touched (it is append-only, and kept)."""
    now = now or timezone.now()
    size = int(batch_size or settings.RETENTION_BATCH_SIZE)
    message_cutoff, attachment_cutoff = _retention_cutoffs(now)
    messages = attachments = versions = 0
    if message_cutoff is not None:
        for rows in _keyset_batches(_messages_due(message_cutoff), size, "conversation_id"):
            erased, files, texts = _tombstone_batch([r[1] for r in rows], {r[2] for r in rows}, now)
            messages += erased
            attachments += files
            versions += texts
        versions += _purge_versions(message_cutoff, size)
    if attachment_cutoff is not None:
        for rows in _keyset_batches(_attachments_due(attachment_cutoff), size, "message_id"):
            attachments += _strip_attachments_batch({r[2] for r in rows})
    if messages or attachments or versions:
        audit.record(audited.RETENTION_PURGE, client=SYSTEM)
        logger.info(
            "retention erased %s messages, %s attachments and %s kept texts", messages, attachments, versions
        )
    return RetentionCounts(messages=messages, attachments=attachments, versions=versions)


def _purge_versions(cutoff: datetime, size: int) -> int:
    """The kept texts due (``_versions_due``), in keyset batches on their id."""
    purged = 0
    after = 0
    while True:
        rows = list(
            _versions_due(cutoff)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", "message__conversation_id")[:size]
        )
        if not rows:
            return purged
        purged += _purge_versions_batch([r[0] for r in rows], {r[1] for r in rows})
        if len(rows) < size:
            return purged
        after = rows[-1][0]
