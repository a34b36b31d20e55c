"""Celery tasks for messaging: take ids, idempotent, call a service."""

from celery import shared_task

from . import services


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def make_thumbnail(attachment_id: int) -> None:
    services.attachment_make_thumbnail(attachment_id=attachment_id)


@shared_task(acks_late=True)
def purge_orphan_attachments() -> int:
    return services.attachments_purge_orphans()


@shared_task(acks_late=True)
def retention_purge() -> dict[str, int]:
    counts = services.retention_purge()
    return {"messages": counts.messages, "attachments": counts.attachments}
