"""Sending scheduled messages (Celery's side: ``tasks.py``): a due one exactly once, through
messaging's one send path, and the sweep that finds due ones whose task was lost.

``scheduled_dispatch`` claims the row (``SELECT ... FOR UPDATE SKIP LOCKED``, pending and due),
sends it with ``messaging.services.send`` (every send check and reach rule, as of now; idempotent
on the row's ``client_id``) and marks it ``sent``, in ONE transaction: two dispatchers never hold
the same row (the second skips it), and a dispatcher that dies before its COMMIT leaves no message
and a row still pending, taken by the next sweep. Before the send, messaging's deferred rules
judge what it was written in (``bindings``: the consultation, over → ``consultation_closed``). A
refusal marks it ``failed`` with the refusal's code and tells the author's devices (the
``scheduled_message.updated`` event) and phones (a push without the text).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ApplicationError
from messaging.send_rules import registry as send_registry
from messaging.services import SendRequest, send
from notifications.services import push_scheduled_failed

from .models import ScheduledMessage
from .services import announce

logger = logging.getLogger("healthchat.scheduled")
State = ScheduledMessage.State


def scheduled_dispatch(*, scheduled_id: int, now: datetime | None = None) -> str:
    """Send one due pending row, exactly once. Returns what happened: ``sent``, ``failed`` or
    ``skipped`` (not due, not pending, or another dispatcher holds it)."""
    now = now or timezone.now()
    with transaction.atomic():
        row = (
            ScheduledMessage.objects.select_for_update(skip_locked=True)
            .select_related("author")
            .filter(pk=scheduled_id, state=State.PENDING, send_at__lte=now)
            .first()
        )
        if row is None:
            return "skipped"
        refusal: ApplicationError | None = None
        if not row.author.is_active or row.author.is_deleted:
            refusal = ApplicationError("author_inactive", "The author's account is not active.")
        elif (bound := send_registry.deferred_refusal(row.bindings, now=now)) is not None:
            refusal = bound  # what it was written in is over (the consultation closed)
        else:
            try:
                # A savepoint inside this transaction: a refusal undoes only the send.
                result = send(
                    SendRequest(
                        sender=row.author,
                        conversation_id=row.conversation_id,
                        client_id=row.client_id,
                        body=row.body,
                    )
                )
            except ApplicationError as exc:
                refusal = exc
        row.finished_at = timezone.now()
        if refusal is not None:
            row.state, row.failure_code = State.FAILED, refusal.code[:64]
            row.save(update_fields=["state", "failure_code", "finished_at", "updated_at"])
            logger.info("scheduled message refused at send time", extra={"code": refusal.code})
            # The author's phones too (no text: the id and the code), once per row and device.
            push_scheduled_failed(scheduled_id=row.pk, user_id=row.author_id, code=row.failure_code)
        else:
            row.state, row.body, row.message_id = State.SENT, "", result.message.pk
            row.save(update_fields=["state", "body", "message", "finished_at", "updated_at"])
        announce(row)
        return str(row.state)


def scheduled_due_ids(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or timezone.now()
    return list(
        ScheduledMessage.objects.filter(state=State.PENDING, send_at__lte=now)
        .order_by("send_at", "id")
        .values_list("pk", flat=True)[:limit]
    )


def scheduled_dispatch_due(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """The beat sweep: every due pending row (those whose task was lost, or whose worker died)."""
    counts: dict[str, int] = {"sent": 0, "failed": 0, "skipped": 0}
    for scheduled_id in scheduled_due_ids(now=now, limit=limit):
        outcome = scheduled_dispatch(scheduled_id=scheduled_id, now=now)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def scheduled_purge_finished(*, now: datetime | None = None) -> int:
    """Finished rows (sent, failed, cancelled) go after ``SCHEDULED_MESSAGE_KEEP_DAYS``."""
    cutoff = (now or timezone.now()) - timedelta(days=int(settings.SCHEDULED_MESSAGE_KEEP_DAYS))
    deleted, _ = ScheduledMessage.objects.exclude(state=State.PENDING).filter(finished_at__lt=cutoff).delete()
    return deleted
