"""Celery tasks for scheduled messages: take ids, idempotent, call a service."""

from celery import shared_task

from . import dispatch


@shared_task(acks_late=True)
def dispatch_scheduled(scheduled_id: int) -> str:
    """At ``send_at`` (an early or repeated delivery is a no-op: the row decides)."""
    return dispatch.scheduled_dispatch(scheduled_id=scheduled_id)


@shared_task(acks_late=True)
def dispatch_due() -> dict[str, int]:
    """Beat: every due pending row (lost tasks, dead workers, restarts)."""
    return dispatch.scheduled_dispatch_due()


@shared_task(acks_late=True)
def purge_finished() -> int:
    return dispatch.scheduled_purge_finished()
