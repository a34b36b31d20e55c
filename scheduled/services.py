"""Scheduled messages: create, edit and cancel while pending (the author only); the account
holder's export and erasure. The sending is ``dispatch.py`` (Celery's side).

Exactly once (``dispatch.scheduled_dispatch``): it claims the row (``SELECT ... FOR UPDATE SKIP LOCKED``,
pending and due), sends it with ``messaging.services.send`` (all send checks and reach rules, as
of now; idempotent on the row's ``client_id``) and marks it ``sent`` in ONE transaction. Two
dispatchers never hold the same row (the second skips it); a dispatcher that dies before its
COMMIT leaves no message and a row still pending, taken by the next sweep. A refusal (the
author left, the consultation closed, a block...) marks it ``failed`` with the refusal's code and
tells the author's devices (``scheduled_message.updated``) and phones (a push without the text).
A scheduled message is bound to what it was written in (messaging's deferred rules: the
consultation open in the conversation): once that is over, it is refused (``consultation_closed``)
even though its author, a doctor, could still write there. Edits and cancels lock the row
(waiting for a dispatch in flight) and apply only while it is pending.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound, PermissionDenied
from healthchat.celery import app as celery_app
from messaging import reach
from messaging import validators as v
from messaging.models import Membership, Message
from messaging.send_rules import registry as send_registry
from messaging.services import fan_out_on_commit

from . import selectors
from .models import ScheduledMessage

logger = logging.getLogger("healthchat.scheduled")
State = ScheduledMessage.State
DISPATCH_TASK = "scheduled.tasks.dispatch_scheduled"


def announce(row: ScheduledMessage) -> None:
    """Tell the author's devices (after commit): ``scheduled_message.updated``."""
    fan_out_on_commit(
        user_ids=[row.author_id],
        frame={
            "type": "scheduled_message.updated",
            "data": {"scheduled_message": selectors.scheduled_data(row)},
        },
    )


def _queue_on_commit(row: ScheduledMessage) -> None:
    """A task at ``send_at`` for the workers (the beat's sweep sends any due one whose task was
    lost). Not with an eager Celery (tests, ``make run``): a task run now would find it not due."""
    if celery_app.conf.task_always_eager:
        return
    scheduled_id, eta = row.pk, row.send_at
    transaction.on_commit(lambda: celery_app.send_task(DISPATCH_TASK, args=(scheduled_id,), eta=eta))


def validate_send_at(value: datetime, *, now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    if timezone.is_naive(value):
        raise ApplicationError(
            "invalid_send_at", "send_at needs a UTC offset.", fields={"send_at": ["invalid"]}
        )
    latest = now + timedelta(days=int(settings.SCHEDULED_MESSAGE_MAX_DAYS))
    if value <= now or value > latest:
        raise ApplicationError(
            "invalid_send_at",
            f"send_at must be in the future, at most {settings.SCHEDULED_MESSAGE_MAX_DAYS} days ahead.",
            fields={"send_at": ["out_of_range"]},
        )
    return value


def _check_author(author: User, conversation_id: int) -> None:
    """A doctor, an active member of a plaintext conversation they may reach now."""
    if not author.is_doctor:
        raise PermissionDenied("Only doctors can schedule messages.", code="scheduling_not_allowed")
    membership = (
        Membership.objects.select_related("conversation")
        .filter(conversation_id=conversation_id, user=author, left_at__isnull=True)
        .first()
    )
    if membership is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    if membership.conversation.e2ee:
        raise ApplicationError(
            "scheduling_e2ee_unsupported",
            "End-to-end encrypted conversations cannot have scheduled messages (the server "
            "cannot encrypt for the members' devices).",
            status=422,
        )
    reach.check(sender=author, conversation_id=conversation_id)


def scheduled_create(
    *,
    author: User,
    conversation_id: int,
    body: str,
    send_at: datetime,
    client_id: uuid.UUID | None = None,
) -> tuple[ScheduledMessage, bool]:
    """Schedule ``body`` for ``send_at``. Idempotent on ``client_id`` (the message's, when sent):
    the same one again returns the first row (created False)."""
    text = v.validate_body(body)
    when = validate_send_at(send_at)
    cid = client_id or uuid.uuid4()
    existing = ScheduledMessage.objects.filter(author=author, client_id=cid).first()
    if existing is not None:
        if existing.conversation_id != conversation_id:
            raise ApplicationError(
                "client_id_reused", "This client_id was used for another message.", status=409
            )
        return existing, False
    _check_author(author, conversation_id)
    if Message.objects.filter(sender=author, client_id=cid).exists():
        raise ApplicationError("client_id_reused", "This client_id was used for another message.", status=409)
    limit = int(settings.SCHEDULED_MESSAGE_MAX_PENDING)
    try:
        with transaction.atomic():
            # One author's creates in turn: the pending count cannot be overtaken.
            User.objects.select_for_update().filter(pk=author.pk).values_list("pk").first()
            if ScheduledMessage.objects.filter(author=author, state=State.PENDING).count() >= limit:
                raise ApplicationError(
                    "too_many_scheduled", f"At most {limit} messages may wait to be sent.", status=409
                )
            row = ScheduledMessage.objects.create(
                author=author,
                conversation_id=conversation_id,
                client_id=cid,
                body=text,
                send_at=when,
                # What it is written in (the consultation open now): refused at send_at if over.
                bindings=send_registry.deferred_bindings(sender=author, conversation_id=conversation_id),
            )
            announce(row)
            _queue_on_commit(row)
    except IntegrityError:  # the same client_id, concurrently
        existing = ScheduledMessage.objects.filter(author=author, client_id=cid).first()
        if existing is None or existing.conversation_id != conversation_id:
            raise ApplicationError(
                "client_id_reused", "This client_id was used for another message.", status=409
            ) from None
        return existing, False
    return row, True


def _pending_for_update(author: User, scheduled_id: int) -> ScheduledMessage:
    row = ScheduledMessage.objects.select_for_update().filter(pk=scheduled_id, author=author).first()
    if row is None:
        raise NotFound("No such scheduled message.", code="scheduled_message_not_found")
    if row.state != State.PENDING:
        raise ApplicationError(
            "scheduled_message_not_pending", f"This scheduled message is {row.state} already.", status=409
        )
    return row


def scheduled_update(
    *, author: User, scheduled_id: int, body: str | None = None, send_at: datetime | None = None
) -> ScheduledMessage:
    """Change the text and/or the time while it is pending (waits for a send in flight)."""
    text = v.validate_body(body) if body is not None else None
    when = validate_send_at(send_at) if send_at is not None else None
    with transaction.atomic():
        row = _pending_for_update(author, scheduled_id)
        if text is not None:
            row.body = text
        if when is not None:
            row.send_at = when
        row.save(update_fields=["body", "send_at", "updated_at"])
        announce(row)
        if when is not None:
            _queue_on_commit(row)
    return row


def scheduled_cancel(*, author: User, scheduled_id: int) -> ScheduledMessage:
    with transaction.atomic():
        row = _pending_for_update(author, scheduled_id)
        row.state, row.body, row.finished_at = State.CANCELLED, "", timezone.now()
        row.save(update_fields=["state", "body", "finished_at", "updated_at"])
        announce(row)
    return row


# --- The account holder's rights -----------------------------------------------------------
def export_user_scheduled(user: User) -> list[dict[str, Any]]:
    return [
        selectors.scheduled_data(row) for row in ScheduledMessage.objects.filter(author=user).order_by("id")
    ]


def erase_user_scheduled(user: User) -> None:
    """Account deletion: nothing of theirs is sent later, and their texts go."""
    ScheduledMessage.objects.filter(author=user).delete()
